//! The pickup service: moves local submissions from the maildrop
//! (`sendmail` writes them there, see [`maildrop`]) into the spool.
//!
//! It runs on core 0 when master.cf has a `pickup` service. Every pass
//! reads up to [`BATCH`] files, turns each into a queued message — the
//! sender and recipients qualified with `@$myorigin` (and `.$mydomain`
//! under `append_dot_mydomain`), each recipient classified and routed by
//! the same [`Router`] smtpd uses, a `Received:` line prepended, `From:`,
//! `Date:` and `Message-Id:` added when missing, `Bcc:` removed — appends
//! them all to core 0's spool, waits for one group commit to make them
//! durable, and only then removes the files. A crash in between at worst
//! queues a submission twice, never loses one. A file that is not a valid
//! submission is moved to `$queue_directory/corrupt` with a warning, never
//! deleted.
//!
//! Files are opened with `O_NOFOLLOW` and must be plain files with one
//! link, so a local user cannot make pickup read a file they could not.

pub mod headers;
pub mod maildrop;
mod watch;

use crate::context::CoreContext;
use crate::routing::Router;
use corepost_config::Config;
use corepost_spool::{BodyType, ClientInfo, Envelope, MailParams, QueueId, Recipient};
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most files ingested per pass (one group commit).
pub const BATCH: usize = 256;
/// How often the maildrop is scanned when idle without a trigger (no
/// inotify) or with files waiting to be tried again.
const POLL: Duration = Duration::from_millis(200);
/// How often it is scanned anyway with the trigger: Postfix's pickup
/// wakeup (master.cf's `60`), a backstop.
const WAKEUP: Duration = Duration::from_secs(60);
/// How long a file that hit a temporary error is left alone.
const RETRY: Duration = Duration::from_secs(30);

/// master.cf's pickup service as last loaded, shared by the daemon's main
/// thread (which a reload updates), core 0's pickup loop and `status`;
/// `None` when master.cf has no pickup service.
pub type CurrentSettings = Arc<std::sync::Mutex<Option<Arc<PickupSettings>>>>;

/// The pickup service's effective settings.
#[derive(Debug, Clone)]
pub struct PickupSettings {
    pub program: String,
    pub queue_dir: PathBuf,
    pub myhostname: String,
    pub mail_name: String,
    pub myorigin: String,
    pub mydomain: String,
    pub append_at_myorigin: bool,
    pub append_dot_mydomain: bool,
    pub message_size_limit: u64,
    pub router: Router,
    /// canonical and virtual alias rewriting (cleanup's address mapping).
    pub rewriter: crate::rewrite::Rewriter,
    /// `content_filter` (often `-o content_filter=` on the pickup service,
    /// so a filter that re-injects with sendmail is not filtered again).
    pub content_filter: Option<crate::smtpd::filter::ContentFilter>,
    pub default_filter_nexthop: String,
    /// Where mail to the null address goes (Postfix's cleanup replaces an
    /// empty recipient with it before qualifying).
    pub empty_address_recipient: String,
    /// DKIM signing of local submissions (`corepost_dkim_signing_table`).
    pub dkim: Option<Arc<crate::dkim::DkimSigner>>,
    /// Who may submit (`authorized_submit_users`), checked against the
    /// owner of each maildrop file: the maildrop is open to every user, so
    /// this, not sendmail's own check, is what enforces the list.
    pub authorized_submit_users: String,
    /// The envelope senders each user may use (`local_login_sender_maps`),
    /// checked against the file's owner for the same reason.
    pub sender_logins: corepost_config::users::SenderLogins,
    /// `non_smtpd_milters` (see `crate::milter::local`).
    pub milters: Option<Arc<crate::milter::MilterSettings>>,
}

impl PickupSettings {
    /// Settings of master.cf's `pickup` service (with its `-o`
    /// overrides); `None` when there is no such service.
    pub fn from_config(config: &Config) -> Result<Option<PickupSettings>, String> {
        let Some(s) = config.services().find(|s| s.service.command == "pickup") else {
            return Ok(None);
        };
        let text = |n: &str| s.get(n).map_err(|e| e.to_string());
        let boolean = |n: &str| s.get_bool(n).map_err(|e| e.to_string());
        let size = text("message_size_limit")?;
        let message_size_limit = match size.trim().parse::<u64>() {
            Ok(0) => u64::MAX,
            Ok(n) => n,
            Err(_) => return Err(format!("parameter message_size_limit: bad size \"{size}\"")),
        };
        Ok(Some(PickupSettings {
            program: format!("{}/pickup", text("syslog_name")?),
            queue_dir: PathBuf::from(text("queue_directory")?),
            myhostname: text("myhostname")?,
            mail_name: text("mail_name")?,
            myorigin: crate::rewrite::myorigin(&text("myorigin")?)?,
            mydomain: text("mydomain")?.to_ascii_lowercase(),
            append_at_myorigin: boolean("append_at_myorigin")?,
            append_dot_mydomain: boolean("append_dot_mydomain")?,
            message_size_limit,
            router: Router::from_params(&|n| s.get(n))?,
            rewriter: crate::rewrite::Rewriter::from_params(&|n| s.get(n))?,
            content_filter: crate::smtpd::filter::ContentFilter::parse(&text("content_filter")?)
                .map_err(|e| format!("parameter content_filter: {e}"))?,
            default_filter_nexthop: text("default_filter_nexthop")?,
            empty_address_recipient: text("empty_address_recipient")?,
            dkim: crate::dkim::DkimSigner::from_params(&|n| s.get(n))?,
            authorized_submit_users: text("authorized_submit_users")?,
            sender_logins: corepost_config::users::SenderLogins::from_params(&|n| s.get(n))?,
            milters: crate::milter::MilterSettings::non_smtpd(&|n| s.get(n))?,
        }))
    }

    /// Postfix's local address rewriting: `user` → `user@$myorigin`,
    /// `user@host` → `user@host.$mydomain` (append_dot_mydomain).
    pub fn qualify(&self, address: &str) -> String {
        let a = address.trim();
        let a = a
            .strip_prefix('<')
            .and_then(|x| x.strip_suffix('>'))
            .unwrap_or(a);
        crate::routing::qualify::Qualify {
            myorigin: self.myorigin.clone(),
            mydomain: self.mydomain.clone(),
            append_at_myorigin: self.append_at_myorigin,
            append_dot_mydomain: self.append_dot_mydomain,
        }
        .qualify(a)
    }
}

/// Why a submission could not be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The file is not a usable submission: set it aside.
    Malformed(String),
    /// Try again later (a lookup table failed).
    Temporary(String),
}

/// A submission ready to append.
#[derive(Debug)]
pub struct Prepared {
    pub envelope: Envelope,
    pub content: Vec<u8>,
    pub message_id: String,
    /// The DKIM signature added, for the log.
    pub dkim: Option<crate::dkim::Signed>,
}

/// Turn a submission from user `uid` into the envelope and content to
/// queue as `queue_id`.
pub fn prepare(
    s: &PickupSettings,
    sub: &maildrop::Submission,
    uid: u32,
    queue_id: QueueId,
    now_micros: u64,
) -> Result<Prepared, Refusal> {
    let malformed = |why: String| Refusal::Malformed(why);
    let sender = if sub.sender.is_empty() || sub.sender == "<>" {
        String::new()
    } else {
        let q = s.qualify(&sub.sender);
        crate::smtpd::address::parse_mailbox(&q, true)
            .map_err(|r| malformed(format!("sender <{q}>: {}", r.summary())))?
            .address()
    };
    let mut recipients = Vec::new();
    for r in &sub.recipients {
        let r = match r.trim() {
            "" | "<>" => &s.empty_address_recipient,
            _ => r,
        };
        let q = s.qualify(r);
        let mailbox = crate::smtpd::address::parse_mailbox(&q, true)
            .map_err(|e| malformed(format!("recipient <{q}>: {}", e.summary())))?;
        let address = mailbox.address();
        let lookup = |e: corepost_config::tables::TableError| {
            Refusal::Temporary(format!("<{address}>: lookup failure: {e}"))
        };
        let class = s.router.classify(&mailbox.domain).map_err(lookup)?;
        let route = s.router.route(&sender, &address, class).map_err(lookup)?;
        // As given to sendmail: Postfix logs `to=<root@origin>,
        // orig_to=<root>` for a qualified recipient.
        let given = r.trim();
        let given = given
            .strip_prefix('<')
            .and_then(|g| g.strip_suffix('>'))
            .unwrap_or(given);
        let original =
            (given != address && given != s.empty_address_recipient).then(|| given.to_string());
        recipients.push(Recipient {
            address,
            orcpt: None,
            notify: sub.notify,
            transport: route.transport,
            nexthop: route.nexthop,
            state: corepost_spool::RecipientState::Pending,
            original,
        });
    }
    if recipients.is_empty() {
        return Err(malformed("no recipients".into()));
    }
    let (sender, recipients) = if s.rewriter.is_active() {
        rewrite(s, sender, recipients)?
    } else {
        (sender, recipients)
    };
    let mut parsed = headers::parse(&sub.content);
    parsed.remove("bcc");
    rewrite_headers(s, &mut parsed)?;
    let mut extra = Vec::new();
    if !parsed.has("from") {
        let from = if sender.is_empty() {
            "MAILER-DAEMON".to_string()
        } else {
            match sub.fullname.as_deref().filter(|f| !f.trim().is_empty()) {
                Some(name) => format!("{} <{sender}>", display_name(name)),
                None => sender.clone(),
            }
        };
        extra.push(format!("From: {from}\r\n"));
    }
    if !parsed.has("date") {
        extra.push(format!("Date: {}\r\n", crate::time::rfc5322_now()));
    }
    let message_id = match parsed
        .fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case("message-id"))
    {
        Some(f) => f.value().trim().to_string(),
        None => {
            let id = format!("<{now_micros}.{queue_id}@{}>", s.myhostname);
            extra.push(format!("Message-Id: {id}\r\n"));
            id
        }
    };
    let mut content = format!(
        "Received: by {} ({}, from userid {uid})\r\n\tid {queue_id}; {}\r\n",
        s.myhostname,
        s.mail_name,
        crate::time::rfc5322_now()
    )
    .into_bytes();
    content.extend_from_slice(&parsed.assemble(&extra));
    if content.len() as u64 > s.message_size_limit {
        return Err(malformed(format!(
            "message of {} bytes exceeds message_size_limit",
            content.len()
        )));
    }
    // Signed once, here, like OpenDKIM on Postfix's non_smtpd_milters.
    let dkim = match &s.dkim {
        Some(signer) => signer
            .sign(&mut content, now_micros / 1_000_000)
            .map_err(|e| Refusal::Temporary(format!("DKIM signing: {e}")))?,
        None => None,
    };
    let eight_bit = !content.is_ascii();
    let smtputf8 = !sender.is_ascii() || recipients.iter().any(|r| !r.address.is_ascii());
    let mut envelope = Envelope {
        queue_id,
        arrival: now_micros,
        sender,
        params: MailParams {
            size: Some(content.len() as u64),
            body: if eight_bit {
                BodyType::EightBitMime
            } else {
                BodyType::SevenBit
            },
            smtputf8,
            ret: sub.ret,
            envid: sub.envid.clone(),
        },
        client: ClientInfo::local(),
        recipients,
        next_attempt: 0,
        held: false,
    };
    // As Postfix's cleanup does for pickup: the filter replaces every route.
    if let Some(filter) = &s.content_filter {
        filter.apply(&mut envelope.recipients, &s.default_filter_nexthop);
    }
    Ok(Prepared {
        envelope,
        content,
        message_id,
        dkim,
    })
}

/// cleanup's address mapping (canonical maps, virtual aliases). A limit
/// or a failed lookup leaves the file for a later pass, as Postfix's
/// pickup does when cleanup defers.
fn rewrite(
    s: &PickupSettings,
    sender: String,
    recipients: Vec<Recipient>,
) -> Result<(String, Vec<Recipient>), Refusal> {
    let sender = s
        .rewriter
        .envelope_sender(&s.router, &sender)
        .map_err(|e| Refusal::Temporary(format!("address rewriting: {e}")))?;
    let recipients = s
        .rewriter
        .recipients(&s.router, &sender, recipients)
        .map_err(|e| match e {
            crate::rewrite::RewriteError::Limit(w) => Refusal::Temporary(w),
            crate::rewrite::RewriteError::Lookup(e) => {
                Refusal::Temporary(format!("address rewriting: {e}"))
            }
        })?;
    Ok((sender, recipients))
}

/// Header addresses of local mail, as Postfix's cleanup in the local
/// rewriting context: qualified like envelope addresses (`To: auditu1` →
/// `auditu1@$myorigin`), then the header classes of the canonical maps.
fn rewrite_headers(s: &PickupSettings, parsed: &mut headers::Parsed) -> Result<(), Refusal> {
    for field in &mut parsed.fields {
        let Some(sender) = crate::rewrite::headers::address_header(&field.name) else {
            continue;
        };
        let Ok(raw) = std::str::from_utf8(&field.raw) else {
            continue;
        };
        let Some((name, value)) = raw.split_once(':') else {
            continue;
        };
        let new = crate::rewrite::headers::rewrite_value(value, |a| {
            let q = s.qualify(a);
            if s.rewriter.is_active() {
                s.rewriter.header_address(&s.router, &q, sender)
            } else {
                Ok(q)
            }
        })
        .map_err(|e| Refusal::Temporary(format!("address rewriting: {e}")))?;
        if let Some(value) = new {
            field.raw = format!("{name}:{value}").into_bytes();
        }
    }
    Ok(())
}

/// A display name, quoted when it has RFC 5322 specials.
fn display_name(name: &str) -> String {
    if name.chars().any(|c| "()<>[]:;@\\,.\"".contains(c)) {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        name.to_string()
    }
}

/// The pickup loop on one core, until shutdown. `current` gives the
/// settings of the moment: each pass takes them afresh, so a reload applies
/// to the next file, and no pickup service means the maildrop waits — with
/// no timer, until `reloaded` says the settings may have changed.
pub async fn run(
    ctx: Rc<CoreContext>,
    current: Box<dyn Fn() -> Option<Arc<PickupSettings>>>,
    reloaded: crate::context::Signal,
) {
    let mut retry_after: HashMap<String, Instant> = HashMap::new();
    let mut trigger: Option<(PathBuf, Option<flume::Receiver<()>>)> = None;
    loop {
        if ctx.shutdown.is_triggered() {
            return;
        }
        let Some(settings) = current() else {
            futures_lite::future::or(ctx.shutdown.wait(), reloaded.wait()).await;
            continue;
        };
        let dir = maildrop::dir(&settings.queue_dir);
        if trigger.as_ref().is_none_or(|(d, _)| *d != dir) {
            // Before the pass, so nothing deposited during it is missed.
            trigger = Some((dir.clone(), watch::start(&dir)));
        }
        if pass(&ctx, &settings, &mut retry_after).await < BATCH {
            let changes = trigger.as_ref().and_then(|(_, t)| t.as_ref());
            let sleep = match changes {
                Some(_) if retry_after.is_empty() => WAKEUP,
                _ => POLL,
            };
            // False when the watching thread is gone: poll from then on.
            let deposited = async {
                match changes {
                    Some(c) => c.recv_async().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let other = async {
                let timer = glommio::timer::sleep(sleep);
                futures_lite::future::or(reloaded.wait(), timer).await;
                true
            };
            let stop = async {
                ctx.shutdown.wait().await;
                true
            };
            let watching =
                futures_lite::future::or(stop, futures_lite::future::or(deposited, other));
            if !watching.await {
                trigger = Some((dir, None));
            }
        }
    }
}

/// Read one maildrop file, refusing links and anything but a plain file.
fn read_file(path: &Path, limit: u64) -> Result<(Vec<u8>, u32), Refusal> {
    use std::io::Read;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Refusal::Malformed(format!("cannot open: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| Refusal::Malformed(format!("cannot stat: {e}")))?;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        return Err(Refusal::Malformed(
            "not a plain file with a single link".into(),
        ));
    }
    // Room for the submission's own header lines.
    let cap = limit.saturating_add(1 << 20);
    let mut bytes = Vec::new();
    file.take(cap)
        .read_to_end(&mut bytes)
        .map_err(|e| Refusal::Temporary(format!("read error: {e}")))?;
    if bytes.len() as u64 >= cap {
        return Err(Refusal::Malformed("file exceeds message_size_limit".into()));
    }
    Ok((bytes, meta.uid()))
}

/// Move a bad file out of the maildrop.
fn set_aside(ctx: &CoreContext, s: &PickupSettings, path: &Path, name: &str, why: &str) {
    set_aside_as(
        ctx,
        s,
        (path, name),
        &format!("malformed submission: {why}"),
    );
}

/// Move a maildrop file to the corrupt directory (kept for the operator,
/// never queued), logging `what` and where it went.
fn set_aside_as(ctx: &CoreContext, s: &PickupSettings, (path, name): (&Path, &str), what: &str) {
    let target = maildrop::corrupt_dir(&s.queue_dir).join(name);
    let outcome = match std::fs::rename(path, &target) {
        Ok(()) => format!("moved to {}", target.display()),
        Err(e) => format!("cannot move it to {}: {e}", target.display()),
    };
    ctx.log.line(
        &s.program,
        &format!("warning: maildrop/{name}: {what}; {outcome}"),
    );
}

/// One pass over the maildrop; returns how many files it looked at.
async fn pass(
    ctx: &Rc<CoreContext>,
    s: &PickupSettings,
    retry_after: &mut HashMap<String, Instant>,
) -> usize {
    let dir = maildrop::dir(&s.queue_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let now = Instant::now();
    retry_after.retain(|_, t| *t > now);
    let names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && !retry_after.contains_key(n))
        .take(BATCH)
        .collect();
    let mut queued: Vec<(PathBuf, QueueId)> = Vec::new();
    let mut last_lsn = None;
    for name in &names {
        let path = dir.join(name);
        let (bytes, uid) = match read_file(&path, s.message_size_limit) {
            Ok(x) => x,
            Err(Refusal::Malformed(why)) => {
                set_aside(ctx, s, &path, name, &why);
                continue;
            }
            Err(Refusal::Temporary(why)) => {
                ctx.log
                    .line(&s.program, &format!("warning: maildrop/{name}: {why}"));
                retry_after.insert(name.clone(), now + RETRY);
                continue;
            }
        };
        if let Err(why) = corepost_config::users::may_submit(&s.authorized_submit_users, uid) {
            set_aside_as(ctx, s, (&path, name), &format!("refused submission: {why}"));
            continue;
        }
        let sub = match maildrop::Submission::decode(&bytes) {
            Ok(sub) => sub,
            Err(why) => {
                set_aside(ctx, s, &path, name, &why);
                continue;
            }
        };
        if let Err(why) = s.sender_logins.check(uid, &sub.sender) {
            set_aside_as(ctx, s, (&path, name), &format!("refused submission: {why}"));
            continue;
        }
        let id = ctx.new_queue_id();
        let mut prepared = match prepare(s, &sub, uid, id, corepost_spool::queue_id::now_micros()) {
            Ok(p) => p,
            Err(Refusal::Malformed(why)) => {
                set_aside(ctx, s, &path, name, &why);
                continue;
            }
            Err(Refusal::Temporary(why)) => {
                ctx.log.line(
                    &s.program,
                    &format!("warning: maildrop/{name}: {why}; will try again"),
                );
                retry_after.insert(name.clone(), now + RETRY);
                continue;
            }
        };
        if let Some(milters) = &s.milters {
            use crate::milter::local::{Outcome, filter};
            let log = |l: &str| ctx.log.line("corepost/cleanup", l);
            let p = &mut prepared;
            match filter(milters, &mut p.envelope, &mut p.content, &s.router, &log).await {
                Outcome::Queue => {}
                Outcome::Discard => {
                    let line = format!("{id}: uid={uid} from=<{}>", sub.sender);
                    ctx.log.line(&s.program, &line);
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                Outcome::Retry(why) => {
                    let line = format!("warning: maildrop/{name}: {why}; will try again");
                    ctx.log.line(&s.program, &line);
                    retry_after.insert(name.clone(), now + RETRY);
                    continue;
                }
            }
        }
        let appended = ctx
            .spool
            .borrow_mut()
            .append_message(&prepared.envelope, &prepared.content);
        match appended {
            Ok(a) => {
                let (n, size) = (prepared.envelope.recipients.len(), prepared.content.len());
                crate::metrics::received(crate::metrics::Source::Pickup, n, size);
                ctx.log.line(
                    &s.program,
                    &format!("{id}: uid={uid} from=<{}>", sub.sender),
                );
                ctx.log.line(
                    "corepost/cleanup",
                    &format!("{id}: message-id={}", prepared.message_id),
                );
                crate::events::reception(&s.program, &prepared.envelope, prepared.content.len());
                if let Some(signed) = &prepared.dkim {
                    ctx.log
                        .line("corepost/cleanup", &format!("{id}: {}", signed.log_text()));
                }
                last_lsn = Some(a.lsn);
                queued.push((path, id));
            }
            Err(e) => {
                ctx.log.line(
                    &s.program,
                    &format!("warning: maildrop/{name}: queue file write error: {e}"),
                );
                retry_after.insert(name.clone(), now + RETRY);
            }
        }
    }
    if let Some(lsn) = last_lsn {
        let durable = ctx.spool.borrow().durable(lsn);
        if let Err(e) = durable.await {
            // Not durable: keep every file, so nothing is lost; the spool
            // refuses further appends after a failed flush anyway.
            ctx.log.line(
                &s.program,
                &format!("warning: queue file write error: {e}; submissions kept in the maildrop"),
            );
            return names.len();
        }
        for (path, id) in &queued {
            if let Err(e) = std::fs::remove_file(path) {
                ctx.log.line(
                    &s.program,
                    &format!("warning: {id}: remove {}: {e}", path.display()),
                );
            }
        }
        if !queued.is_empty() {
            let _ = std::fs::File::open(&dir).and_then(|d| d.sync_all());
            ctx.new_mail.notify();
        }
    }
    names.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> PickupSettings {
        let dir = tempfile::tempdir().unwrap();
        let main = format!(
            "myhostname = mx.example.com\nmydomain = example.com\nrelayhost = [127.0.0.1]:2526\n{extra}"
        );
        let config = Config::from_parts(
            dir.path(),
            Some(&main),
            Some("pickup unix n - n 60 1 pickup\n"),
        )
        .unwrap();
        PickupSettings::from_config(&config).unwrap().unwrap()
    }

    fn submission(content: &[u8]) -> maildrop::Submission {
        maildrop::Submission {
            sender: "alice".into(),
            fullname: Some("Alice Q. Example".into()),
            recipients: vec!["bob".into(), "carol@remote.example".into()],
            content: content.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn content_filter_routes_every_recipient_unless_overridden() {
        let id = QueueId::from_parts(1_700_000_000_000_000, 0, 1);
        let filtered = settings("content_filter = scan:[127.0.0.1]:10025\n");
        let p = prepare(
            &filtered,
            &submission(b"Subject: s\r\n\r\nbody\r\n"),
            1000,
            id,
            0,
        )
        .expect("prepared");
        let routes: Vec<(&str, &str)> = p
            .envelope
            .recipients
            .iter()
            .map(|r| (r.transport.as_str(), r.nexthop.as_str()))
            .collect();
        assert_eq!(routes, vec![("scan", "[127.0.0.1]:10025"); 2]);
        // `-o content_filter=` on the pickup service turns it off.
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_parts(
            dir.path(),
            Some("myhostname = mx.example.com\nmydomain = example.com\nrelayhost = [127.0.0.1]:2526\ncontent_filter = scan:[127.0.0.1]:10025\n"),
            Some("pickup unix n - n 60 1 pickup -o content_filter=\n"),
        )
        .unwrap();
        let plain = PickupSettings::from_config(&config).unwrap().unwrap();
        let p = prepare(
            &plain,
            &submission(b"Subject: s\r\n\r\nbody\r\n"),
            1000,
            id,
            0,
        )
        .expect("prepared");
        assert!(p.envelope.recipients.iter().all(|r| r.transport != "scan"));
    }

    #[test]
    fn qualifies_routes_and_adds_headers() {
        let s = settings("");
        let id = QueueId::from_parts(1_700_000_000_000_000, 0, 1);
        let p = prepare(
            &s,
            &submission(b"Subject: hi\r\nBcc: secret@x.example\r\n\r\nbody\r\n"),
            1000,
            id,
            5,
        )
        .unwrap();
        assert_eq!(p.envelope.sender, "alice@mx.example.com");
        let r: Vec<(&str, &str, &str)> = p
            .envelope
            .recipients
            .iter()
            .map(|r| (r.address.as_str(), r.transport.as_str(), r.nexthop.as_str()))
            .collect();
        assert_eq!(
            r,
            vec![
                ("bob@mx.example.com", "local", "mx.example.com"),
                ("carol@remote.example", "smtp", "[127.0.0.1]:2526")
            ]
        );
        let text = String::from_utf8(p.content).unwrap();
        assert!(
            text.starts_with(&format!(
                "Received: by mx.example.com (corepost, from userid 1000)\r\n\tid {id}; "
            )),
            "{text}"
        );
        assert!(!text.contains("Bcc"), "{text}");
        assert!(
            text.contains("\r\nFrom: \"Alice Q. Example\" <alice@mx.example.com>\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nDate: "), "{text}");
        assert!(
            text.contains(&format!(
                "\r\nMessage-Id: <5.{id}@mx.example.com>\r\n\r\nbody\r\n"
            )),
            "{text}"
        );
        assert_eq!(p.envelope.client.protocol, "local");
    }

    #[test]
    fn keeps_existing_headers_and_appends_dot_mydomain() {
        let s = settings("append_dot_mydomain = yes\nmyorigin = $mydomain\n");
        let id = QueueId::from_parts(1_700_000_000_000_000, 0, 2);
        let mut sub = submission(b"From: x@y.example\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <m@y>\r\n\r\nb");
        sub.recipients = vec!["dave@host".into()];
        let p = prepare(&s, &sub, 0, id, 5).unwrap();
        assert_eq!(p.envelope.sender, "alice@example.com");
        assert_eq!(p.envelope.recipients[0].address, "dave@host.example.com");
        assert_eq!(p.message_id, "<m@y>");
        let text = String::from_utf8(p.content).unwrap();
        assert_eq!(text.matches("From:").count(), 1);
        assert_eq!(text.matches("Date:").count(), 1);
        assert!(!text.contains("Message-Id"));
    }

    #[test]
    fn refuses_bad_addresses_and_empty_recipient_lists() {
        let s = settings("");
        let id = QueueId::from_parts(1_700_000_000_000_000, 0, 3);
        let mut sub = submission(b"x");
        sub.recipients = vec!["bad address@@x".into()];
        assert!(matches!(
            prepare(&s, &sub, 0, id, 1),
            Err(Refusal::Malformed(_))
        ));
        sub.recipients.clear();
        assert!(matches!(
            prepare(&s, &sub, 0, id, 1),
            Err(Refusal::Malformed(_))
        ));
        // The null address goes to empty_address_recipient, qualified, as
        // Postfix's cleanup does.
        sub.recipients = vec!["<>".into(), String::new()];
        let p = prepare(&s, &sub, 0, id, 1).unwrap();
        let to: Vec<&str> = p
            .envelope
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        assert_eq!(to, vec!["MAILER-DAEMON@mx.example.com"; 2]);
        let s2 = settings("empty_address_recipient = nullbox\n");
        let p = prepare(&s2, &sub, 0, id, 1).unwrap();
        assert_eq!(p.envelope.recipients[0].address, "nullbox@mx.example.com");
        sub.recipients = vec!["ok@x.example".into()];
        sub.sender = String::new();
        let p = prepare(&s, &sub, 0, id, 1).unwrap();
        assert_eq!(p.envelope.sender, "");
        assert!(
            String::from_utf8(p.content)
                .unwrap()
                .contains("From: MAILER-DAEMON\r\n")
        );
    }
}
