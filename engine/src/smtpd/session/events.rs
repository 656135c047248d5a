//! smtpd's structured events (see `engine/src/events/`).

use super::{Reply, Session};

impl Session {
    /// The event beside a `reject:` log line.
    pub(super) fn reject_event(&self, command: &str, reply: &Reply, recipient: Option<&str>) {
        let client = self.client();
        crate::events::rejection(&crate::events::Rejection {
            program: &self.settings.program,
            id: self.tx.as_ref().and_then(|t| t.queue_id),
            stage: command,
            client: &client,
            sender: self.tx.as_ref().map(|t| t.sender_given.as_str()),
            recipient,
            code: reply.code,
            dsn: reply.status,
            response: &reply.text.replace('\n', " "),
        });
    }
}
