//! smtpd's cleanup step for content checks: run header/body checks on a
//! message about to be queued, log each action in Postfix's format, and
//! turn the verdict into what the session does (queue, hold, redirect,
//! filter, refuse, discard).

use crate::smtpd::checks::Verdict;
use crate::smtpd::filter::ContentFilter;
use crate::smtpd::reply::Reply;
use crate::smtpd::settings::SmtpdSettings;
use corepost_spool::{QueueId, Recipient};

/// Who handed the message over, for the log lines.
pub struct Origin<'a> {
    pub queue_id: QueueId,
    /// `name[addr]`.
    pub client: String,
    pub sender: &'a str,
    pub proto: &'a str,
    pub helo: &'a str,
}

/// What header_checks/body_checks decided for a message.
pub enum Checked {
    Queue {
        hold: bool,
        /// FILTER: overrides `content_filter`.
        filter: Option<ContentFilter>,
    },
    Refuse(Reply),
    /// DISCARD: answer 250, queue nothing.
    Discard,
}

/// Apply the service's checks to `content` (rewritten in place), log each
/// action the way Postfix's cleanup does (`<id>: reject: header Subject: x
/// from host[addr]; from=<s> to=<r> proto=ESMTP helo=<h>: 5.7.1 text`),
/// and apply REDIRECT to `recipients`.
pub fn cleanup(
    settings: &SmtpdSettings,
    origin: &Origin<'_>,
    recipients: &mut Vec<Recipient>,
    content: &mut Vec<u8>,
    log: &dyn Fn(&str),
) -> Checked {
    let verdict: Verdict = settings.content_checks.inspect(content);
    for w in &verdict.warnings {
        log(&format!("warning: {w}"));
    }
    let id = origin.queue_id;
    let first = recipients.first().map_or("", |r| r.address.as_str());
    for e in &verdict.events {
        let mut line = format!(
            "{id}: {}: {} {} from {}; from=<{}> to=<{first}> proto={} helo=<{}>",
            e.action, e.class, e.line, origin.client, origin.sender, origin.proto, origin.helo
        );
        if !e.text.is_empty() {
            line.push_str(": ");
            line.push_str(&e.text);
        }
        log(&line);
    }
    if let Some((code, reason)) = verdict.reject {
        return Checked::Refuse(Reply::new(code, "", reason));
    }
    if verdict.discard {
        return Checked::Discard;
    }
    if let Some(address) = verdict.redirect {
        let router = &settings.router;
        let (_, domain) = crate::routing::split_address(&address);
        match router
            .classify(domain)
            .and_then(|class| router.route(origin.sender, &address, class))
        {
            Ok(route) => {
                *recipients = vec![Recipient {
                    address,
                    transport: route.transport,
                    nexthop: route.nexthop,
                    ..Recipient::default()
                }];
            }
            Err(e) => {
                log(&format!(
                    "warning: {id}: cannot route REDIRECT target <{address}>: {e}"
                ));
                return Checked::Refuse(Reply::new(451, "4.3.0", "Temporary lookup failure"));
            }
        }
    }
    *content = verdict.content;
    Checked::Queue {
        hold: verdict.hold,
        filter: verdict.filter,
    }
}
