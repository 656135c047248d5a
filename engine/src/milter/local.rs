//! `non_smtpd_milters`: local submissions (sendmail, pickup) go through
//! milters as Postfix's cleanup sends them — connect, EHLO, MAIL, RCPT and
//! DATA emulated from `localhost[127.0.0.1]`, then the content. A
//! rejection cannot be answered to anyone, so (as cleanup does for
//! pickup) a 5xx bounces the message to its sender — every recipient goes
//! to the `error` transport with the milter's text — and a 4xx leaves the
//! submission in the maildrop for a later try. A milter may not reject a
//! recipient here: that is a configuration error and defers the message.

use super::edit::Message;
use super::{MilterSettings, Verdict};
use corepost_spool::Envelope;
use std::sync::Arc;

/// What pickup does with the submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Queue,
    Discard,
    /// Keep the file and try again later.
    Retry(String),
}

/// Run the milters on a prepared submission; `log` is cleanup's log.
pub async fn filter(
    settings: &Arc<MilterSettings>,
    envelope: &mut Envelope,
    content: &mut Vec<u8>,
    router: &crate::routing::Router,
    log: &dyn Fn(&str),
) -> Outcome {
    let Some(mut set) = settings.session("127.0.0.1", log) else {
        return Outcome::Queue;
    };
    let id = envelope.queue_id;
    set.ctx = super::macros::MacroContext {
        client_name: "localhost".into(),
        reverse_name: "localhost".into(),
        client_addr: "127.0.0.1".into(),
        client_port: "0".into(),
        queue_id: Some(id.to_string()),
        ..Default::default()
    };
    let last = envelope
        .recipients
        .last()
        .map(|r| r.address.clone())
        .unwrap_or_default();
    let sender = envelope.sender.clone();
    let line = |stage: &str, action: &str, text: &str| {
        format!(
            "{id}: {action}: {stage} from localhost[127.0.0.1]: {text}; from=<{sender}> to=<{last}>"
        )
    };
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut verdict = set
        .connect(log, "localhost", Some(local))
        .await
        .map(|v| ("CONNECT", v));
    if verdict.is_none() {
        verdict = set.helo(log, "localhost").await.map(|v| ("EHLO", v));
    }
    if verdict.is_none() {
        set.ctx.mail_addr = Some(envelope.sender.clone());
        verdict = set
            .mail(log, std::slice::from_ref(&envelope.sender))
            .await
            .map(|v| ("MAIL", v));
    }
    if verdict.is_none() {
        for r in envelope.recipients.clone() {
            set.ctx.rcpt_addr = Some(r.address.clone());
            match set.rcpt(log, std::slice::from_ref(&r.address)).await {
                Some(Verdict::Reply(_) | Verdict::Shutdown) => {
                    log(&format!(
                        "warning: {id}: milter configuration error: can't reject recipient in non-smtpd(8) submission"
                    ));
                    log(&format!(
                        "warning: {id}: deferring delivery of this message"
                    ));
                    set.quit().await;
                    return Outcome::Retry("4.3.5 Server configuration error".into());
                }
                Some(v) => {
                    verdict = Some(("RCPT", v));
                    break;
                }
                None => {}
            }
        }
    }
    if verdict.is_none() {
        verdict = set.data(log).await.map(|v| ("DATA", v));
    }
    let mut message = Message::parse(content);
    if verdict.is_none() {
        verdict = set
            .message(log, &mut message)
            .await
            .map(|v| ("END-OF-MESSAGE", v));
    }
    set.quit().await;
    if message.changed {
        *content = message.assemble();
    }
    if let Err(e) = super::apply_envelope(&message.envelope, envelope, router, log) {
        log(&format!("warning: {id}: milter edit: {e}"));
        return Outcome::Retry(e);
    }
    let Some((stage, v)) = verdict else {
        return Outcome::Queue;
    };
    match v {
        Verdict::Hold => {
            log(&line(stage, "milter-hold", "milter triggers HOLD action"));
            envelope.held = true;
            Outcome::Queue
        }
        Verdict::Discard => {
            log(&line(
                stage,
                "milter-discard",
                "milter triggers DISCARD action",
            ));
            Outcome::Discard
        }
        Verdict::Shutdown => {
            log(&line(stage, "milter-reject", "message content rejected"));
            bounce(envelope, "5.7.1 message content rejected");
            Outcome::Queue
        }
        Verdict::Reply(text) => {
            let status = text.get(4..).unwrap_or("").replace("\r\n", " ");
            log(&line(stage, "milter-reject", &status));
            if text.starts_with('4') {
                return Outcome::Retry(status);
            }
            bounce(envelope, &status);
            Outcome::Queue
        }
    }
}

/// Every recipient to the `error` transport: the queue manager returns
/// the message to its sender with `status` (`5.7.1 text`).
fn bounce(envelope: &mut Envelope, status: &str) {
    for r in &mut envelope.recipients {
        r.transport = "error".into();
        r.nexthop = status.to_string();
    }
}
