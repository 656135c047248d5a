//! smtpd's structured events (see `engine/src/events/`).

use super::{Reply, Session};
use corepost_spool::QueueId;

impl Session {
    /// The event beside a `reject:` log line.
    pub(super) fn reject_event(&self, command: &str, reply: &Reply, recipient: Option<&str>) {
        let client = self.client();
        let (dsn, text) = status_and_text(reply);
        crate::events::rejection(&crate::events::Rejection {
            program: &self.settings.program,
            id: self.tx.as_ref().and_then(|t| t.queue_id),
            stage: command,
            client: &client,
            sender: self.tx.as_ref().map(|t| t.sender_given.as_str()),
            recipient,
            code: reply.code,
            dsn,
            response: &text,
        });
    }

    /// The event beside a `<queue id>: reject:` line of a message refused
    /// at its end (too big, or by header_checks/body_checks).
    pub(super) fn message_reject_event(
        &self,
        program: &str,
        id: QueueId,
        stage: &str,
        sender: &str,
        reply: &Reply,
    ) {
        if !crate::events::enabled() {
            return;
        }
        let client = self.client();
        let (dsn, text) = status_and_text(reply);
        crate::events::rejection(&crate::events::Rejection {
            program,
            id: Some(id),
            stage,
            client: &client,
            sender: Some(sender),
            recipient: None,
            code: reply.code,
            dsn,
            response: &text,
        });
    }
}

/// A reply's enhanced status code and text: a reply made from an access
/// table or a check action carries its code in the text (`5.7.1 text`).
fn status_and_text(reply: &Reply) -> (&str, String) {
    let text = reply.text.replace('\n', " ");
    if !reply.status.is_empty() {
        return (reply.status, text);
    }
    let code = reply.text.split(' ').next().unwrap_or("");
    let is_status = code.split('.').count() == 3
        && code
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if is_status {
        let rest = text[code.len()..].trim_start().to_string();
        (code, rest)
    } else {
        ("", text)
    }
}
