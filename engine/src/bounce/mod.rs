//! Delivery status notifications: bounces and delay warnings.
//!
//! When a recipient fails for good, or a message has waited in the queue
//! longer than `delay_warning_time`, the sender is told so by a message of
//! our own: an RFC 3464 / RFC 6522 `multipart/report` with a human-readable
//! part, a machine-readable `message/delivery-status` part and the original
//! message (or its header section). This module builds those messages; it
//! does no I/O. The queue manager decides *when* a notice is due, calls
//! [`build_report`], and queues the resulting [`Notice`] through the spool
//! like any other message, which gives notices the same durability and
//! retry behaviour as ordinary mail.
//!
//! The rules follow Postfix's `bounce` daemon and RFC 3461:
//!
//! * A notice goes to the envelope sender, from the null sender `<>`, so a
//!   notice that cannot be delivered is never itself bounced.
//! * A message with the null sender is already a notice. It is never
//!   bounced again: its failure goes to `2bounce_notice_recipient` when
//!   `notify_classes` has `2bounce`, and is otherwise dropped.
//! * Mail from `double_bounce_sender` (postmaster notices) is never
//!   reported at all — that is what breaks notice loops. For the same
//!   reason the notices this module addresses to the postmaster
//!   (`2bounce` and the `bounce`/`delay` copies) are sent *from*
//!   `double_bounce_sender`, as Postfix does: if the postmaster's mailbox
//!   fails, the resulting failure is discarded instead of producing another
//!   postmaster notice, forever.
//! * NOTIFY=NEVER recipients are never reported; with NOTIFY given, only
//!   the listed conditions are; without it, failures and delays are.
//! * RET=HDRS, delay warnings, postmaster copies, and originals larger than
//!   `bounce_size_limit` return the header section only
//!   (`text/rfc822-headers`); otherwise the whole original comes back as
//!   `message/rfc822`. Originals with UTF-8 headers use the RFC 6532
//!   `message/global` / `message/global-headers` types, and reports about
//!   UTF-8 addresses use RFC 6533's `message/global-delivery-status`.
//!
//! Everything quoted from the outside — diagnostics, host names, addresses,
//! ENVID/ORCPT — is cleaned of control characters and folded ([`text`]),
//! and the MIME boundary is chosen so that it occurs nowhere in the
//! content, so no input can change the structure of a notice.

mod text;

#[cfg(test)]
mod tests;

use corepost_spool::record::notify;
use corepost_spool::{Envelope, QueueId, Recipient, Ret};

/// The parameters that shape notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BounceSettings {
    /// `myhostname`: the Reporting-MTA and the From: domain.
    pub myhostname: String,
    /// `mail_name`: the name of the mail system in the text part.
    pub mail_name: String,
    /// `bounce_size_limit`: the largest original returned in full, bytes.
    pub bounce_size_limit: usize,
    /// `double_bounce_sender`: mail from it is never reported.
    pub double_bounce_sender: String,
    /// `notify_classes`, lower-cased.
    pub notify_classes: Vec<String>,
    /// `bounce_notice_recipient`: postmaster copies of bounces.
    pub bounce_notice_recipient: String,
    /// `2bounce_notice_recipient`: undeliverable notices.
    pub twobounce_notice_recipient: String,
    /// `delay_notice_recipient`: postmaster copies of delay warnings.
    pub delay_notice_recipient: String,
}

impl BounceSettings {
    /// Read the settings from a parameter source (a service's effective
    /// values), e.g. `&|n| config.get(n)`.
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, corepost_config::ConfigError>,
    ) -> Result<BounceSettings, String> {
        let s = |n: &str| get(n).map_err(|e| e.to_string());
        let size = s("bounce_size_limit")?;
        let bounce_size_limit = corepost_config::value::parse_size(&size)
            .map_err(|e| format!("bounce_size_limit: {e}"))?;
        let classes = s("notify_classes")?;
        let notify_classes = corepost_config::list::split_list(&classes)
            .map_err(|e| format!("notify_classes: {e}"))?
            .into_iter()
            .map(|c| c.to_ascii_lowercase())
            .collect();
        Ok(BounceSettings {
            myhostname: s("myhostname")?.trim().to_string(),
            mail_name: s("mail_name")?.trim().to_string(),
            bounce_size_limit: usize::try_from(bounce_size_limit).unwrap_or(usize::MAX),
            double_bounce_sender: s("double_bounce_sender")?.trim().to_string(),
            notify_classes,
            bounce_notice_recipient: s("bounce_notice_recipient")?.trim().to_string(),
            twobounce_notice_recipient: s("2bounce_notice_recipient")?.trim().to_string(),
            delay_notice_recipient: s("delay_notice_recipient")?.trim().to_string(),
        })
    }

    fn has_class(&self, class: &str) -> bool {
        self.notify_classes
            .iter()
            .any(|c| c.eq_ignore_ascii_case(class))
    }

    /// The envelope sender of postmaster notices: `double_bounce_sender`,
    /// qualified with `myhostname` when it has no domain.
    pub fn double_bounce_address(&self) -> String {
        if self.double_bounce_sender.contains('@') {
            self.double_bounce_sender.clone()
        } else {
            format!("{}@{}", self.double_bounce_sender, self.myhostname)
        }
    }

    /// Whether `sender` is the double-bounce address, with or without a
    /// domain.
    fn is_double_bounce_sender(&self, sender: &str) -> bool {
        let local = |a: &str| a.rsplit_once('@').map_or(a, |(l, _)| l).to_string();
        let configured = local(&self.double_bounce_sender);
        !configured.is_empty() && local(sender).eq_ignore_ascii_case(&configured)
    }
}

/// Which notice to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// Non-delivery: the recipients failed for good.
    Failure,
    /// Delay warning: the recipients are still being retried.
    Delay,
    /// Success notice (NOTIFY=SUCCESS): delivered, relayed or expanded.
    Success,
}

/// One recipient to report, with what happened to it.
#[derive(Debug, Clone)]
pub struct FailedRecipient<'a> {
    pub recipient: &'a Recipient,
    /// Enhanced status code, `5.1.1`.
    pub status: String,
    /// The reason: a remote reply (`550 5.1.1 <x@y>: User unknown`,
    /// reported as `Diagnostic-Code: smtp; ...`) or a local explanation
    /// (reported as `Diagnostic-Code: X-Corepost; ...`).
    pub diagnostic: String,
    /// The remote host that gave the reply (`Remote-MTA: dns; ...`).
    pub remote_mta: Option<String>,
    /// The `Action:`; `failed` for Failure, `delayed` for Delay by default.
    pub action: Option<&'static str>,
    /// Delay reports: when retrying stops, µs since the epoch.
    pub will_retry_until: Option<u64>,
}

/// A notice ready to be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Envelope sender: `""` for notices to the sender; the double-bounce
    /// address for notices to the postmaster (see the module doc).
    pub sender: String,
    /// Envelope recipient.
    pub recipient: String,
    /// The whole RFC 5322 message, CRLF line ends.
    pub content: Vec<u8>,
}

/// What [`build_report`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BounceOutcome {
    Notice(Notice),
    /// Nothing to send, and why (for the log).
    Nothing {
        reason: &'static str,
    },
}

/// Who a notice is for, which decides its wording and what it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// The envelope sender.
    Sender,
    /// The postmaster, about a notice that could not be delivered.
    DoubleBounce,
    /// The postmaster, a copy of a notice sent to the sender.
    PostmasterCopy,
}

/// Build the notice for `failed` recipients of the message `envelope` /
/// `original` (its content as spooled).
///
/// `queue_id` names the notice itself in its Message-Id (the id it will be
/// queued under if the caller has one, else the original's). `now_micros`
/// is the current time, µs since the epoch.
pub fn build_report(
    settings: &BounceSettings,
    kind: ReportKind,
    envelope: &Envelope,
    original: &[u8],
    failed: &[FailedRecipient<'_>],
    now_micros: u64,
    queue_id: QueueId,
) -> BounceOutcome {
    if settings.is_double_bounce_sender(&envelope.sender) {
        return BounceOutcome::Nothing {
            reason: "sender is the double-bounce address",
        };
    }
    if envelope.sender.is_empty() && kind == ReportKind::Success {
        return BounceOutcome::Nothing {
            reason: "no success notice for the null sender",
        };
    }
    if envelope.sender.is_empty() {
        // The original is itself a notice: never bounce it again.
        if !settings.has_class("2bounce") {
            return BounceOutcome::Nothing {
                reason: "double bounce discarded",
            };
        }
        if failed.is_empty() {
            return BounceOutcome::Nothing {
                reason: "no recipients to report",
            };
        }
        let reported: Vec<&FailedRecipient<'_>> = failed.iter().collect();
        return compose(&Compose {
            settings,
            kind,
            audience: Audience::DoubleBounce,
            to: &settings.twobounce_notice_recipient,
            envelope,
            original,
            reported: &reported,
            now_micros,
            queue_id,
        });
    }
    let reported: Vec<&FailedRecipient<'_>> = failed
        .iter()
        .filter(|f| wants_report(f.recipient.notify, kind))
        .collect();
    if reported.is_empty() {
        return BounceOutcome::Nothing {
            reason: "no recipient asked for this notification",
        };
    }
    compose(&Compose {
        settings,
        kind,
        audience: Audience::Sender,
        to: &envelope.sender,
        envelope,
        original,
        reported: &reported,
        now_micros,
        queue_id,
    })
}

/// The postmaster's copy of a notice (`notify_classes` `bounce` for
/// failures, to `bounce_notice_recipient`; `delay` for delays, to
/// `delay_notice_recipient`), with the original's header section only.
/// It covers every failed recipient regardless of NOTIFY (that is the
/// sender's preference, not the postmaster's). Mail from the null sender
/// or the double-bounce address gets no copy: the former is handled by
/// [`build_report`]'s `2bounce` notice.
pub fn postmaster_copy(
    settings: &BounceSettings,
    kind: ReportKind,
    envelope: &Envelope,
    original: &[u8],
    failed: &[FailedRecipient<'_>],
    now_micros: u64,
    queue_id: QueueId,
) -> BounceOutcome {
    let (class, to) = match kind {
        ReportKind::Failure => ("bounce", &settings.bounce_notice_recipient),
        ReportKind::Delay => ("delay", &settings.delay_notice_recipient),
        ReportKind::Success => {
            return BounceOutcome::Nothing {
                reason: "no postmaster copy of success notices",
            };
        }
    };
    if !settings.has_class(class) {
        return BounceOutcome::Nothing {
            reason: "notify_classes does not ask for a postmaster copy",
        };
    }
    if envelope.sender.is_empty() || settings.is_double_bounce_sender(&envelope.sender) {
        return BounceOutcome::Nothing {
            reason: "no postmaster copy for notices",
        };
    }
    if failed.is_empty() {
        return BounceOutcome::Nothing {
            reason: "no recipients to report",
        };
    }
    let reported: Vec<&FailedRecipient<'_>> = failed.iter().collect();
    compose(&Compose {
        settings,
        kind,
        audience: Audience::PostmasterCopy,
        to,
        envelope,
        original,
        reported: &reported,
        now_micros,
        queue_id,
    })
}

/// RFC 3461 §4.1: whether a recipient with these NOTIFY bits gets a
/// notice of this kind. No NOTIFY (0) means failures and delays.
pub fn wants_report(notify_bits: u8, kind: ReportKind) -> bool {
    if notify_bits & notify::NEVER != 0 {
        return false;
    }
    match kind {
        ReportKind::Success => notify_bits & notify::SUCCESS != 0,
        _ if notify_bits == 0 => true,
        ReportKind::Failure => notify_bits & notify::FAILURE != 0,
        ReportKind::Delay => notify_bits & notify::DELAY != 0,
    }
}

/// Longest diagnostic text quoted, bytes (a remote server may send a lot).
const MAX_DIAGNOSTIC: usize = 4000;
/// Longest address or other short value quoted, bytes.
const MAX_SHORT: usize = 1000;

struct Compose<'s, 'e, 'r, 'f> {
    settings: &'s BounceSettings,
    kind: ReportKind,
    audience: Audience,
    to: &'s str,
    envelope: &'e Envelope,
    original: &'e [u8],
    reported: &'r [&'r FailedRecipient<'f>],
    now_micros: u64,
    queue_id: QueueId,
}

/// A MIME part: its header lines (with CRLFs) and body (ending in CRLF).
struct Part {
    headers: String,
    body: Vec<u8>,
}

fn compose(c: &Compose<'_, '_, '_, '_>) -> BounceOutcome {
    let settings = c.settings;
    let host = text::clean_ascii(&settings.myhostname, 255);
    let to = text::clean(c.to, MAX_SHORT);
    if to.is_empty() {
        return BounceOutcome::Nothing {
            reason: "no notice recipient",
        };
    }
    let sender = match c.audience {
        Audience::Sender => String::new(),
        Audience::DoubleBounce | Audience::PostmasterCopy => settings.double_bounce_address(),
    };

    let parts = [
        human_part(c, &host),
        status_part(c, &host),
        original_part(c),
    ];
    let eight_bit = parts
        .iter()
        .any(|p| text::has_8bit(p.headers.as_bytes()) || text::has_8bit(&p.body));
    let boundary = choose_boundary(c, &host, &parts);

    let subject = match (c.audience, c.kind) {
        (Audience::Sender, ReportKind::Failure) => "Undelivered Mail Returned to Sender",
        (Audience::Sender, ReportKind::Delay) => "Delayed Mail (still being retried)",
        (_, ReportKind::Success) => "Successful Mail Delivery Report",
        (_, ReportKind::Failure) => "Postmaster Copy: Undelivered Mail",
        (_, ReportKind::Delay) => "Postmaster Warning: Delayed Mail",
    };
    let now_secs = seconds(c.now_micros);
    let mut head = String::new();
    head.push_str(&text::field(
        "From",
        &format!("MAILER-DAEMON@{host} (Mail Delivery System)"),
    ));
    head.push_str(&text::field("To", &format!("<{to}>")));
    head.push_str(&text::field("Subject", subject));
    head.push_str(&text::field("Date", &crate::time::rfc5322(now_secs)));
    head.push_str(&text::field(
        "Message-Id",
        &format!(
            "<{}.{:06}.{}.{}@{host}>",
            utc_stamp(now_secs),
            c.now_micros % 1_000_000,
            c.queue_id,
            match (c.audience, c.kind) {
                (Audience::Sender, ReportKind::Failure) => "bounce",
                (Audience::Sender, ReportKind::Delay) => "delay",
                (_, ReportKind::Success) => "success",
                (Audience::DoubleBounce, ReportKind::Failure) => "2bounce",
                (Audience::DoubleBounce, ReportKind::Delay) => "2bounce-delay",
                (Audience::PostmasterCopy, ReportKind::Failure) => "bounce-copy",
                (Audience::PostmasterCopy, ReportKind::Delay) => "delay-copy",
            }
        ),
    ));
    head.push_str("Auto-Submitted: auto-replied\r\n");
    head.push_str("MIME-Version: 1.0\r\n");
    head.push_str(&text::field(
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    ));
    if eight_bit {
        head.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }

    let mut content = Vec::with_capacity(
        head.len()
            + parts
                .iter()
                .map(|p| p.headers.len() + p.body.len() + 80)
                .sum::<usize>(),
    );
    content.extend_from_slice(head.as_bytes());
    content.extend_from_slice(b"\r\nThis is a MIME-encapsulated message.\r\n");
    for part in &parts {
        content.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        content.extend_from_slice(part.headers.as_bytes());
        content.extend_from_slice(b"\r\n");
        content.extend_from_slice(&part.body);
    }
    content.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    BounceOutcome::Notice(Notice {
        sender,
        recipient: to,
        content,
    })
}

/// Part 1: the explanation for people.
fn human_part(c: &Compose<'_, '_, '_, '_>, host: &str) -> Part {
    let name = text::clean(&c.settings.mail_name, 100);
    let mut body = String::new();
    let para = |body: &mut String, t: &str| {
        body.push_str(&text::paragraph(t, "", 72));
        body.push_str("\r\n");
    };
    if c.kind == ReportKind::Delay && c.audience == Audience::Sender {
        body.push_str("####################################################################\r\n");
        body.push_str("# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n");
        body.push_str(
            "####################################################################\r\n\r\n",
        );
    }
    para(
        &mut body,
        &format!("This is the {name} mail system at host {host}."),
    );
    let queued_for =
        describe_duration(seconds(c.now_micros).saturating_sub(seconds(c.envelope.arrival)));
    let sender = text::clean(&c.envelope.sender, MAX_SHORT);
    match (c.audience, c.kind) {
        (Audience::Sender, ReportKind::Failure) => {
            para(
                &mut body,
                "Your message could not be delivered to one or more of its \
                 recipients, for the reasons listed below. The message is \
                 returned with this report (in full, or its header section \
                 when it is large or you asked for headers only).",
            );
            para(
                &mut body,
                "If you need help, write to the postmaster of this system and \
                 include this report. You may remove your own text from the \
                 returned message first.",
            );
        }
        (Audience::Sender, ReportKind::Delay) => {
            para(
                &mut body,
                &format!(
                    "Your message has been waiting in the queue for {queued_for} \
                     because it could not be delivered yet to the recipients \
                     listed below. Delivery is still being tried; you will hear \
                     from us again only if it finally fails. The header section \
                     of the message is attached."
                ),
            );
        }
        (_, ReportKind::Success) => {
            para(
                &mut body,
                "Your message was successfully delivered to the destination(s) \
                 listed below. If the message was delivered to mailbox you will \
                 receive no further notifications. Otherwise you may still \
                 receive notifications of mail delivery errors from other \
                 systems.",
            );
        }
        (Audience::DoubleBounce, ReportKind::Failure) => {
            para(
                &mut body,
                "A delivery status notification (a message with the null \
                 sender) could not be delivered. Notifications are never \
                 returned, so this copy goes to the postmaster. The \
                 undeliverable notification is attached.",
            );
        }
        (Audience::DoubleBounce, ReportKind::Delay) => {
            para(
                &mut body,
                &format!(
                    "A delivery status notification (a message with the null \
                     sender) has been waiting in the queue for {queued_for}. \
                     Notifications are never returned, so this warning goes \
                     to the postmaster. The header section of the \
                     notification is attached."
                ),
            );
        }
        (Audience::PostmasterCopy, ReportKind::Failure) => {
            para(
                &mut body,
                &format!(
                    "This is the postmaster copy of a non-delivery notice sent to \
                     <{sender}>. The header section of the message is attached."
                ),
            );
        }
        (Audience::PostmasterCopy, ReportKind::Delay) => {
            para(
                &mut body,
                &format!(
                    "This is the postmaster copy of a delay warning sent to \
                     <{sender}>, for a message queued {queued_for} ago. The \
                     header section of the message is attached."
                ),
            );
        }
    }
    body.push_str(&format!(
        "                   The {name} mail system\r\n\r\n"
    ));
    for f in c.reported {
        let address = text::clean(&f.recipient.address, MAX_SHORT);
        let diagnostic = text::clean(&f.diagnostic, MAX_DIAGNOSTIC);
        // The diagnostic already names the host that said it
        // ("host mx[addr] said: 550 ..."), as in Postfix's text.
        let mut line = format!("<{address}>: {diagnostic}");
        if let Some(until) = f.will_retry_until.filter(|_| c.kind == ReportKind::Delay) {
            line.push_str(&format!(
                " (will be retried until {})",
                crate::time::rfc5322(seconds(until))
            ));
        }
        body.push_str(&text::paragraph(&line, "    ", 76));
        body.push_str("\r\n");
    }
    let charset = if body.is_ascii() { "us-ascii" } else { "utf-8" };
    let mut headers = String::from("Content-Description: Notification\r\n");
    headers.push_str(&format!("Content-Type: text/plain; charset={charset}\r\n"));
    if !body.is_ascii() {
        headers.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    Part {
        headers,
        body: body.into_bytes(),
    }
}

/// Part 2: the RFC 3464 delivery-status fields.
fn status_part(c: &Compose<'_, '_, '_, '_>, host: &str) -> Part {
    // Addresses in UTF-8 need RFC 6533's global type; all other free text
    // is forced to ASCII so that the plain type stays valid.
    let global = !c.envelope.sender.is_ascii()
        || c.reported.iter().any(|f| {
            !f.recipient.address.is_ascii()
                || f.recipient
                    .orcpt
                    .as_deref()
                    .is_some_and(|o| !original_recipient(o).is_ascii())
        });
    let address = |a: &str| {
        let a = text::clean(a, MAX_SHORT);
        if a.is_ascii() {
            format!("rfc822; {a}")
        } else {
            format!("utf-8; {a}")
        }
    };
    let mut body = String::new();
    body.push_str(&text::field("Reporting-MTA", &format!("dns; {host}")));
    body.push_str(&text::field(
        "X-Corepost-Queue-ID",
        &c.envelope.queue_id.to_string(),
    ));
    body.push_str(&text::field(
        "X-Corepost-Sender",
        &address(&c.envelope.sender),
    ));
    // ENVID arrives as xtext (RFC 3461 §4.4) and is reported decoded.
    let envid = c
        .envelope
        .params
        .envid
        .as_deref()
        .map(|envid| text::clean_ascii(&decode_xtext(envid), MAX_SHORT))
        .unwrap_or_default();
    if !envid.is_empty() {
        body.push_str(&text::field("Original-Envelope-Id", &envid));
    }
    body.push_str(&text::field(
        "Arrival-Date",
        &crate::time::rfc5322(seconds(c.envelope.arrival)),
    ));
    for f in c.reported {
        body.push_str("\r\n");
        body.push_str(&text::field(
            "Final-Recipient",
            &address(&f.recipient.address),
        ));
        // The client's ORCPT, else the address as received when it was
        // rewritten (Postfix's orig_rcpt).
        let original = f.recipient.original.as_ref().map(|o| format!("rfc822;{o}"));
        if let Some(orcpt) = f.recipient.orcpt.as_deref().or(original.as_deref()) {
            body.push_str(&text::field(
                "Original-Recipient",
                &original_recipient(orcpt),
            ));
        }
        let action = f.action.unwrap_or(match c.kind {
            ReportKind::Failure => "failed",
            ReportKind::Delay => "delayed",
            ReportKind::Success => "delivered",
        });
        body.push_str(&text::field("Action", &text::clean_ascii(action, 40)));
        body.push_str(&text::field("Status", &status_code(&f.status, c.kind)));
        let remote_mta = f
            .remote_mta
            .as_deref()
            .map(|mta| text::clean_ascii(mta, 255))
            .unwrap_or_default();
        if !remote_mta.is_empty() {
            body.push_str(&text::field("Remote-MTA", &format!("dns; {remote_mta}")));
        }
        let diagnostic = text::clean_ascii(smtp_reply_of(&f.diagnostic), MAX_DIAGNOSTIC);
        if !diagnostic.is_empty() {
            let looks_smtp =
                diagnostic.len() >= 3 && diagnostic.as_bytes()[..3].iter().all(u8::is_ascii_digit);
            let diagnostic_type = if looks_smtp { "smtp" } else { "X-Corepost" };
            body.push_str(&text::field(
                "Diagnostic-Code",
                &format!("{diagnostic_type}; {diagnostic}"),
            ));
        }
        if c.kind == ReportKind::Delay
            && let Some(until) = f.will_retry_until
        {
            body.push_str(&text::field(
                "Will-Retry-Until",
                &crate::time::rfc5322(seconds(until)),
            ));
        }
    }
    let content_type = if global {
        "message/global-delivery-status"
    } else {
        "message/delivery-status"
    };
    let mut headers = String::from("Content-Description: Delivery report\r\n");
    headers.push_str(&format!("Content-Type: {content_type}\r\n"));
    if !body.is_ascii() {
        headers.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    Part {
        headers,
        body: body.into_bytes(),
    }
}

/// Part 3: the original message, or its header section.
fn original_part(c: &Compose<'_, '_, '_, '_>) -> Part {
    let limit = c.settings.bounce_size_limit;
    let headers_only = c.kind == ReportKind::Delay
        || c.kind == ReportKind::Success && c.envelope.params.ret != Some(Ret::Full)
        || c.audience == Audience::PostmasterCopy
        || c.envelope.params.ret == Some(Ret::Headers) && c.audience == Audience::Sender
        || c.original.len() > limit;
    // Only the part that can be returned is normalised: for headers-only
    // returns, whole lines up to the first line end past the limit (so a
    // large original is not copied just to be cut down).
    let returnable = if headers_only {
        let from = limit.min(c.original.len());
        let cut =
            memchr::memchr(b'\n', &c.original[from..]).map_or(c.original.len(), |at| from + at + 1);
        &c.original[..cut]
    } else {
        c.original
    };
    let original = text::to_crlf(returnable);
    let header_section = text::header_section(&original);
    let utf8_headers = c.envelope.params.smtputf8 || text::has_8bit(header_section);
    let (description, content_type, mut body) = if headers_only {
        (
            "Undelivered Message Headers",
            if utf8_headers {
                "message/global-headers"
            } else {
                "text/rfc822-headers"
            },
            text::truncate_at_line(header_section, limit).to_vec(),
        )
    } else {
        (
            "Undelivered Message",
            if utf8_headers {
                "message/global"
            } else {
                "message/rfc822"
            },
            original,
        )
    };
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        body.extend_from_slice(b"\r\n");
    }
    let description = match c.kind {
        ReportKind::Failure => description.to_string(),
        ReportKind::Delay => description.replace("Undelivered", "Delayed"),
        ReportKind::Success => description.replace("Undelivered", "Delivered"),
    };
    let mut headers =
        format!("Content-Description: {description}\r\nContent-Type: {content_type}\r\n");
    if text::has_8bit(&body) {
        headers.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    Part { headers, body }
}

/// The `Original-Recipient:` value for an RFC 3461 ORCPT as received
/// (`addr-type;xtext`): `addr-type; address`, with the xtext `+HH`
/// escapes of `rfc822` addresses decoded (RFC 3464 §2.3.1) and the result
/// cleaned.
fn original_recipient(orcpt: &str) -> String {
    let (kind, address) = match orcpt.split_once(';') {
        Some((kind, address)) => (text::clean(kind, 40), address),
        None => ("rfc822".to_string(), orcpt),
    };
    let address = if kind.eq_ignore_ascii_case("rfc822") {
        decode_xtext(address)
    } else {
        address.to_string()
    };
    format!("{kind}; {}", text::clean(&address, MAX_SHORT))
}

/// RFC 3461 xtext: `+HH` is the byte HH. Malformed escapes are kept as
/// they are; bytes that do not form UTF-8 become U+FFFD.
pub(crate) fn decode_xtext(xtext: &str) -> String {
    let bytes = xtext.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'+')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The server's reply in a diagnostic of ours, `host mx[addr] said: 550
/// 5.1.1 text (in reply to RCPT TO command)`, for `Diagnostic-Code: smtp;`
/// (as Postfix reports it); any other text as it is.
fn smtp_reply_of(diagnostic: &str) -> &str {
    let said = diagnostic
        .strip_prefix("host ")
        .and_then(|r| r.split_once(" said: "));
    // Success notices: "delivery via mx[addr]:25: 250 2.0.0 Ok".
    let via = || {
        diagnostic
            .strip_prefix("delivery via ")
            .and_then(|r| r.split_once("]: ").or_else(|| r.split_once(": ")))
    };
    let Some(rest) = said.or_else(via).map(|(_, reply)| reply) else {
        return diagnostic;
    };
    let reply = match rest.rfind(" (in reply to ") {
        Some(at) if rest.ends_with(" command)") => &rest[..at],
        _ => rest,
    };
    if reply.len() >= 3 && reply.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
        reply
    } else {
        diagnostic
    }
}

/// `status` if it is a well-formed enhanced status code (RFC 3463,
/// `class.subject.detail`), else the generic one for the report kind.
fn status_code(status: &str, kind: ReportKind) -> String {
    let status = status.trim();
    let mut pieces = status.split('.');
    let class_ok = matches!(pieces.next(), Some("2" | "4" | "5"));
    let number_ok = |p: Option<&str>| {
        p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    if class_ok && number_ok(pieces.next()) && number_ok(pieces.next()) && pieces.next().is_none() {
        status.to_string()
    } else {
        match kind {
            ReportKind::Failure => "5.0.0".to_string(),
            ReportKind::Delay => "4.0.0".to_string(),
            ReportKind::Success => "2.0.0".to_string(),
        }
    }
}

/// A MIME boundary that occurs nowhere in the parts. It starts from the
/// original's queue id, the time and our host name (as Postfix's does) and
/// gets a counter appended until no part contains it.
fn choose_boundary(c: &Compose<'_, '_, '_, '_>, host: &str, parts: &[Part]) -> String {
    // RFC 2046 bchars minus space; at most 70 characters in all.
    let host: String = host
        .chars()
        .filter(|ch| ch.is_ascii_alphanumeric() || "'()+_,-./:=?".contains(*ch))
        .take(24)
        .collect();
    // 16 (queue id) + 1 + 20 (µs) + 1 + 24 = 62, leaving room for a
    // counter within RFC 2046's 70 characters.
    let base = format!("{}.{}/{host}", c.envelope.queue_id, c.now_micros);
    let occurs = |candidate: &str| {
        let finder = memchr::memmem::Finder::new(candidate.as_bytes());
        parts
            .iter()
            .any(|p| finder.find(p.headers.as_bytes()).is_some() || finder.find(&p.body).is_some())
    };
    let mut candidate = base.clone();
    let mut counter: u64 = 0;
    while occurs(&candidate) {
        counter += 1;
        candidate = format!("{base}.{counter}");
    }
    candidate
}

/// µs since the epoch to seconds, clamped to a range every date
/// formatter handles (up to the year 9999).
fn seconds(micros: u64) -> i64 {
    const YEAR_9999_END: u64 = 253_402_300_799;
    i64::try_from((micros / 1_000_000).min(YEAR_9999_END)).unwrap_or(0)
}

/// `YYYYMMDDhhmmss` in UTC.
fn utc_stamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// "3 hours", "2 days", "45 minutes": how long a message has waited.
fn describe_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (n, unit) = if secs >= 2 * 86_400 {
        (secs / 86_400, "days")
    } else if secs >= 2 * 3600 {
        (secs / 3600, "hours")
    } else if secs >= 120 {
        (secs / 60, "minutes")
    } else {
        (secs, "seconds")
    };
    format!("{n} {unit}")
}
