//! The control socket: how `corepost queue`, `mailq`, `sendmail -q` and
//! `corepost status` talk to the running daemon.
//!
//! The daemon listens on `corepost_control_socket` (by default
//! `$queue_directory/control`), a Unix socket with mode 0600 owned by the
//! account the daemon runs as: only that account and root can steer the
//! queue. The protocol is one request line per connection — words
//! separated by spaces, e.g. `hold 1A2B... 1A2C...` or `flush example.com`
//! — answered by `ok` or `error <why>` on the first line, the command's
//! output after it, and the end of the connection.
//!
//! A plain thread in the daemon accepts connections and forwards each
//! request to every core over a channel ([`core::CoreRequest`]); the cores
//! act on their own spools and queue managers and answer; the thread
//! merges the answers.

pub mod core;
pub mod format;
mod idle;
pub mod public;

use self::core::{CoreAnswer, CoreCommand, CoreRequest, CoreStatus};
use corepost_spool::{AdminAction, QueueId};
use format::{QueueItem, QueueName};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Longest request line.
const MAX_REQUEST: usize = 1 << 20;

/// Build the listing entry of one message.
pub fn item(
    id: QueueId,
    envelope: &corepost_spool::Envelope,
    size: usize,
    entry: &corepost_spool::IndexEntry,
    active: bool,
    reasons: &corepost_spool::snapshot::Reasons,
) -> QueueItem {
    let reasons_of = |i: u32| reasons.get(&(id, i)).cloned();
    let queue = if entry.held {
        QueueName::Hold
    } else if active {
        QueueName::Active
    } else if entry.next_attempt != 0 || entry.pending.iter().any(|i| reasons_of(i).is_some()) {
        QueueName::Deferred
    } else {
        QueueName::Incoming
    };
    QueueItem {
        id: id.to_string(),
        queue,
        arrival: envelope.arrival,
        size: size as u64,
        sender: envelope.sender.clone(),
        recipients: entry
            .pending
            .iter()
            .filter_map(|i| {
                let r = envelope.recipients.get(i as usize)?;
                Some((r.address.clone(), reasons_of(i)))
            })
            .collect(),
    }
}

/// What `corepost status` shows besides the cores' numbers.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    pub started: Instant,
    pub cores: u16,
    /// The listening addresses (a reload changes them).
    pub listeners: Arc<std::sync::Mutex<Vec<String>>>,
    /// master.cf's pickup service as last loaded (a reload changes it).
    pub pickup: crate::pickup::CurrentSettings,
    /// `$queue_directory`, whose maildrop the listing includes; `None` in
    /// tests.
    pub queue_dir: Option<PathBuf>,
    /// The configuration directory, whose main.cf names the users the
    /// public socket serves; `None` in tests.
    pub config_dir: Option<PathBuf>,
    /// Where `reload` requests go (the daemon's signal loop); `None` in
    /// tests.
    pub reload: Option<flume::Sender<ReloadReply>>,
    /// What `logrotate` reopens; `None` in tests.
    pub logs: Option<LogReopen>,
}

/// The daemon's log and where its settings are, for `logrotate`.
#[derive(Debug, Clone)]
pub struct LogReopen {
    pub log: crate::log::Log,
    pub config_dir: std::path::PathBuf,
}

impl LogReopen {
    /// `corepost logrotate` renamed maillog_file: open it again (with
    /// main.cf's current log settings, else the running ones), and the
    /// event file.
    fn reopen(&self) -> Result<String, String> {
        let settings = corepost_config::Config::load(&self.config_dir)
            .map_err(|e| e.to_string())
            .and_then(|c| crate::log::LogSettings::from_config(&c));
        match &settings {
            Ok(s) => self.log.reopen(Some(s))?,
            Err(_) => self.log.reopen(None)?,
        }
        crate::events::reopen();
        crate::events::admin("corepost/master", None, "logrotate");
        Ok(String::new())
    }
}

/// The channel a reload's verdict comes back on: the new configuration's
/// warnings, or why it was refused (the old one keeps running).
pub type ReloadReply = flume::Sender<Result<Vec<String>, String>>;

/// Ask the daemon's signal loop to reload and wait for its verdict.
fn reload(info: &DaemonInfo) -> Result<String, String> {
    let requests = info
        .reload
        .as_ref()
        .ok_or("this daemon cannot reload on request")?;
    let (reply, verdict) = flume::bounded(1);
    requests
        .send(reply)
        .map_err(|_| "the mail system is shutting down".to_string())?;
    // Wake the signal loop (it waits for signals); a SIGHUP merged with
    // another one still serves this request.
    // SAFETY: signalling our own process has no memory-safety preconditions.
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    let warnings = verdict
        .recv_timeout(Duration::from_secs(600))
        .map_err(|_| "no verdict from the mail system".to_string())??;
    Ok(warnings.iter().map(|w| format!("warning: {w}\n")).collect())
}

/// The socket's path from the configuration.
pub fn socket_path(config: &corepost_config::Config) -> Result<PathBuf, String> {
    config
        .get("corepost_control_socket")
        .map(PathBuf::from)
        .map_err(|e| e.to_string())
}

/// The listening control sockets (owner-only and public), served by one
/// thread.
pub struct ControlServer {
    paths: [PathBuf; 2],
    stop: Arc<AtomicBool>,
    /// Interrupts the thread's wait, to see `stop`.
    waker: Arc<idle::Waker>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Bind a Unix socket at `path` (replacing a stale socket) with `mode`,
/// created with that mode so there is no moment with a wider one.
fn bind_socket(path: &Path, mode: u32) -> Result<UnixListener, String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        let _ = std::fs::remove_file(path);
    }
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(!mode & 0o777) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| format!("control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("control socket {}: {e}", path.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("control socket: {e}"))?;
    Ok(listener)
}

impl ControlServer {
    /// Bind `path` owner-only and its public twin (see [`public`]), and
    /// serve both.
    pub fn start(
        path: &Path,
        cores: Vec<flume::Sender<CoreRequest>>,
        info: DaemonInfo,
    ) -> Result<ControlServer, String> {
        let public_path = public::socket_path(path);
        let owner = bind_socket(path, 0o600)?;
        let anyone = bind_socket(&public_path, 0o666)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let waker = Arc::new(idle::Waker::new().map_err(|e| format!("control thread: {e}"))?);
        let woken = Arc::clone(&waker);
        let acceptor = Acceptor {
            cores: Arc::new(cores),
            info: Arc::new(info),
            public_busy: Arc::new(AtomicUsize::new(0)),
        };
        let fds = [owner.as_raw_fd(), anyone.as_raw_fd()];
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    let ready = idle::wait(fds, &woken);
                    for ((listener, is_public), ready) in
                        [(&owner, false), (&anyone, true)].into_iter().zip(ready)
                    {
                        if ready && !acceptor.accept(listener, is_public) {
                            // EMFILE and the like, or readiness without a
                            // connection: the socket may stay readable;
                            // wait rather than spin.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            })
            .map_err(|e| format!("control thread: {e}"))?;
        Ok(ControlServer {
            paths: [path.to_path_buf(), public_path],
            stop,
            waker,
            thread: Some(thread),
        })
    }
}

/// What the control thread hands each request's thread.
struct Acceptor {
    cores: Arc<Vec<flume::Sender<CoreRequest>>>,
    info: Arc<DaemonInfo>,
    public_busy: Arc<AtomicUsize>,
}

impl Acceptor {
    /// Take one connection from `listener` and serve it on a thread of its
    /// own, so a client that never sends its line cannot hold up the
    /// others; false when there was none to take.
    fn accept(&self, listener: &UnixListener, is_public: bool) -> bool {
        let Ok((stream, _)) = listener.accept() else {
            return false;
        };
        // Any local user reaches the public socket: a bounded number of
        // its requests at once.
        let slot = match is_public {
            true => match PublicSlot::take(&self.public_busy) {
                Some(slot) => Some(slot),
                None => {
                    busy(&stream);
                    return true;
                }
            },
            false => None,
        };
        let (cores, info) = (Arc::clone(&self.cores), Arc::clone(&self.info));
        let _ = std::thread::Builder::new()
            .name("control-request".into())
            .spawn(move || {
                serve(stream, &cores, &info, is_public);
                drop(slot);
            });
        true
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Most requests on the public socket served at once.
const PUBLIC_REQUEST_LIMIT: usize = 16;

/// One of the [`PUBLIC_REQUEST_LIMIT`] places, given back on drop.
struct PublicSlot(Arc<AtomicUsize>);

impl PublicSlot {
    fn take(busy: &Arc<AtomicUsize>) -> Option<PublicSlot> {
        busy.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < PUBLIC_REQUEST_LIMIT).then_some(n + 1)
        })
        .ok()
        .map(|_| PublicSlot(Arc::clone(busy)))
    }
}

impl Drop for PublicSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Turn a public request away without a thread.
fn busy(stream: &UnixStream) {
    let _ = stream.set_nonblocking(true);
    let mut w = stream;
    let _ = w.write_all(b"error too many queue requests at once; try again\n");
}

/// A request on the public socket: only what [`public::Access`] allows,
/// for whom the lists allow it.
fn execute_public(
    stream: &UnixStream,
    request: &str,
    cores: &[flume::Sender<CoreRequest>],
    info: &DaemonInfo,
) -> Result<String, String> {
    let access = public::Access::of(request)
        .ok_or("only list and flush are served on this socket; use corepost_control_socket")?;
    let uid = public::peer_uid(stream).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let dir = info
        .config_dir
        .as_deref()
        .unwrap_or(Path::new("/nonexistent"));
    public::authorize(access, uid, dir)?;
    execute(request, cores, info)
}

fn serve(
    stream: UnixStream,
    cores: &[flume::Sender<CoreRequest>],
    info: &DaemonInfo,
    is_public: bool,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut line = Vec::new();
    let mut reader = BufReader::new(&stream).take(MAX_REQUEST as u64);
    if reader.read_until(b'\n', &mut line).is_err() {
        return;
    }
    let request = String::from_utf8_lossy(&line).trim().to_string();
    let result = if is_public {
        execute_public(&stream, &request, cores, info)
    } else {
        execute(&request, cores, info)
    };
    let answer = match result {
        Ok(body) => format!("ok\n{body}"),
        Err(e) => format!("error {e}\n"),
    };
    let mut w = &stream;
    let _ = w.write_all(answer.as_bytes());
}

/// Ask every core and collect the answers.
fn ask_all(
    cores: &[flume::Sender<CoreRequest>],
    command: CoreCommand,
) -> Result<Vec<CoreAnswer>, String> {
    let mut waiting = Vec::new();
    for core in cores {
        let (tx, rx) = flume::bounded(1);
        core.send(CoreRequest {
            command: command.clone(),
            reply: tx,
        })
        .map_err(|_| "the mail system is shutting down".to_string())?;
        waiting.push(rx);
    }
    waiting
        .into_iter()
        .map(|rx| {
            rx.recv_timeout(Duration::from_secs(60))
                .map_err(|_| "a core did not answer".to_string())
        })
        .collect()
}

fn parse_ids(words: &[&str]) -> Result<(Option<Vec<QueueId>>, bool), String> {
    let mut deferred_only = false;
    let mut all = false;
    let mut ids = Vec::new();
    for w in words {
        match *w {
            "ALL" => all = true,
            "deferred" => deferred_only = true,
            id => ids.push(
                id.parse::<QueueId>()
                    .map_err(|_| format!("bad queue id: {id}"))?,
            ),
        }
    }
    if !all && ids.is_empty() {
        return Err("no queue ids given (or ALL)".into());
    }
    Ok((if all { None } else { Some(ids) }, deferred_only))
}

/// Sorted listing of the maildrop and of every core's messages.
fn list(cores: &[flume::Sender<CoreRequest>], info: &DaemonInfo) -> Result<Vec<QueueItem>, String> {
    let mut items = match &info.queue_dir {
        Some(q) => maildrop_items(q),
        None => Vec::new(),
    };
    for a in ask_all(cores, CoreCommand::List)? {
        if let CoreAnswer::List(mut l) = a {
            items.append(&mut l);
        }
    }
    format::sort(&mut items);
    Ok(items)
}

fn execute(
    request: &str,
    cores: &[flume::Sender<CoreRequest>],
    info: &DaemonInfo,
) -> Result<String, String> {
    let words: Vec<&str> = request.split_whitespace().collect();
    let Some((&verb, args)) = words.split_first() else {
        return Err("empty request".into());
    };
    match verb {
        "list" => match args {
            [] => Ok(format::mailq(&list(cores, info)?)),
            ["json"] => Ok(format::json(&list(cores, info)?)),
            _ => Err("usage: list [json]".into()),
        },
        "shape" => Ok(format::shape(
            &list(cores, info)?,
            corepost_spool::queue_id::now_micros(),
        )),
        "show" => {
            let id: QueueId = args
                .first()
                .ok_or("usage: show ID")?
                .parse()
                .map_err(|_| "bad queue id".to_string())?;
            for a in ask_all(cores, CoreCommand::Show(id))? {
                if let CoreAnswer::Show(Some(text)) = a {
                    return Ok(text);
                }
            }
            Err(format!("{id}: no such message in the queue"))
        }
        "hold" | "release" | "delete" | "requeue" => {
            let action = match verb {
                "hold" => AdminAction::Hold,
                "release" => AdminAction::Release,
                "delete" => AdminAction::Delete,
                _ => AdminAction::Requeue,
            };
            let (ids, deferred_only) = parse_ids(args)?;
            let mut done = 0;
            for a in ask_all(
                cores,
                CoreCommand::Admin {
                    action,
                    ids,
                    deferred_only,
                },
            )? {
                match a {
                    CoreAnswer::Done(d) => done += d.len(),
                    CoreAnswer::Error(e) => return Err(e),
                    _ => {}
                }
            }
            let what = match action {
                AdminAction::Hold => "Placed on hold",
                AdminAction::Release => "Released from hold",
                AdminAction::Delete => "Deleted",
                AdminAction::Requeue => "Requeued",
                AdminAction::DelayWarned => "Marked as warned",
            };
            Ok(format!(
                "corepost: {what}: {done} message{}\n",
                if done == 1 { "" } else { "s" }
            ))
        }
        "flush" => {
            let mut n = 0;
            for a in ask_all(
                cores,
                CoreCommand::Flush(args.first().map(|d| d.to_string())),
            )? {
                if let CoreAnswer::Done(d) = a {
                    n += d.len();
                }
            }
            Ok(format!(
                "corepost: flushed {n} deferred message{}\n",
                if n == 1 { "" } else { "s" }
            ))
        }
        "status" => {
            let mut total = CoreStatus::default();
            for a in ask_all(cores, CoreCommand::Status)? {
                if let CoreAnswer::Status(s) = a {
                    total.queued += s.queued;
                    total.active += s.active;
                    total.held += s.held;
                    total.deferred += s.deferred;
                    total.spool_bytes += s.spool_bytes;
                    total.segments += s.segments;
                    total.sessions += s.sessions;
                    total.damage.extend(s.damage);
                }
            }
            let up = info.started.elapsed().as_secs();
            let helper = crate::delivery::helper::status_line()
                .map(|h| format!("delivery helper: {h}\n"))
                .unwrap_or_default();
            let damage: String = total
                .damage
                .iter()
                .map(|d| format!("damage: {d}\n"))
                .collect();
            Ok(format!(
                "uptime: {}d {:02}h {:02}m {:02}s\ncores: {}\nqueue: {} messages ({} active, {} deferred, {} held)\nspool: {} bytes in {} segments\nsessions: {}\nlisteners: {}\npickup: {}\n",
                up / 86400,
                up / 3600 % 24,
                up / 60 % 60,
                up % 60,
                info.cores,
                total.queued,
                total.active,
                total.deferred,
                total.held,
                total.spool_bytes,
                total.segments,
                total.sessions,
                info.listeners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .join(" "),
                if info
                    .pickup
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_some()
                {
                    "on"
                } else {
                    "off"
                },
            ) + &helper
                + &damage
                // Shaping groups (corepost_shaping_files): connections, limits, actions.
                + &crate::shaping::status_lines())
        }
        "reload" => reload(info),
        "logrotate" => info
            .logs
            .as_ref()
            .ok_or_else(|| "this daemon cannot reopen its log on request".to_string())?
            .reopen(),
        _ => Err(format!("unknown request: {verb}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_requests_are_bounded() {
        let busy = Arc::new(AtomicUsize::new(0));
        let mut slots: Vec<PublicSlot> = (0..PUBLIC_REQUEST_LIMIT)
            .map(|_| PublicSlot::take(&busy).expect("a place"))
            .collect();
        assert!(PublicSlot::take(&busy).is_none());
        slots.pop();
        assert!(PublicSlot::take(&busy).is_some());
        drop(slots);
        assert_eq!(busy.load(Ordering::Acquire), 0);
    }

    #[test]
    fn request_words() {
        let id = QueueId::from_parts(1_700_000_000_000_000, 1, 2);
        let text = id.to_string();
        assert_eq!(
            parse_ids(&[text.as_str()]).unwrap(),
            (Some(vec![id]), false)
        );
        assert_eq!(parse_ids(&["ALL", "deferred"]).unwrap(), (None, true));
        assert!(parse_ids(&[]).is_err());
        assert!(parse_ids(&["deferred"]).is_err());
        assert!(parse_ids(&["nonsense"]).is_err());
        let info = DaemonInfo {
            started: Instant::now(),
            cores: 1,
            listeners: Default::default(),
            pickup: Default::default(),
            queue_dir: None,
            config_dir: None,
            reload: None,
            logs: None,
        };
        assert!(execute("", &[], &info).is_err());
        assert!(execute("frobnicate", &[], &info).is_err());
        assert!(execute("show", &[], &info).is_err());
        // Without the signal loop's channel a reload cannot be answered.
        assert_eq!(
            execute("reload", &[], &info),
            Err("this daemon cannot reload on request".into())
        );
        assert_eq!(
            execute("list", &[], &info).unwrap(),
            "Mail queue is empty\n"
        );
    }
}

/// Why the client could not get an answer.
#[derive(Debug)]
pub enum ClientError {
    /// Nobody listens: the daemon is not running.
    NotRunning,
    /// The daemon answered with an error.
    Refused(String),
    /// This user may not connect to the socket (the owner-only one).
    Denied(String),
    Io(String),
}

/// Send one request to the daemon and return its output.
pub fn request(path: &Path, line: &str) -> Result<String, ClientError> {
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning);
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ClientError::Denied(format!("{}: {e}", path.display())));
        }
        Err(e) => return Err(ClientError::Io(format!("{}: {e}", path.display()))),
    };
    let io = |e: std::io::Error| ClientError::Io(format!("{}: {e}", path.display()));
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(io)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(io)?;
    match answer.split_once('\n') {
        Some(("ok", body)) => Ok(body.to_string()),
        // A refusal's explanation may go on over more lines (a reload's
        // configuration errors).
        Some((first, rest)) if first.starts_with("error ") => {
            let mut why = first["error ".len()..].to_string();
            if !rest.trim().is_empty() {
                why.push('\n');
                why.push_str(rest.trim_end());
            }
            Err(ClientError::Refused(why))
        }
        _ => Err(ClientError::Io("malformed answer from the daemon".into())),
    }
}

/// The queue of a stopped daemon, read from the spool without writing.
pub fn offline_items(queue_dir: &Path) -> Result<Vec<QueueItem>, String> {
    let mut items = maildrop_items(queue_dir);
    for view in offline_views(queue_dir)? {
        for (id, entry) in view.index().iter() {
            if let Some((envelope, content)) = view.read(id) {
                items.push(item(
                    *id,
                    &envelope,
                    content.len(),
                    entry,
                    false,
                    view.reasons(),
                ));
            }
        }
    }
    format::sort(&mut items);
    Ok(items)
}

/// The submissions waiting in the maildrop (Postfix's mailq lists its
/// "maildrop queue" too), as far as this process may read them: the
/// daemon's account can, other users cannot even list the directory.
/// Files being written (`.name.tmp`), unreadable or not valid
/// submissions are left out.
pub fn maildrop_items(queue_dir: &Path) -> Vec<QueueItem> {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(entries) = std::fs::read_dir(crate::pickup::maildrop::dir(queue_dir)) else {
        return Vec::new();
    };
    let mut items = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(entry.path())
        else {
            continue;
        };
        let Ok(meta) = file.metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let mut reader = BufReader::new(file);
        let Ok((submission, size)) =
            crate::pickup::maildrop::Submission::decode_envelope(&mut reader)
        else {
            continue;
        };
        let arrival = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_micros() as u64);
        items.push(QueueItem {
            id: name,
            queue: QueueName::Maildrop,
            arrival,
            size: size as u64,
            sender: submission.sender,
            recipients: submission
                .recipients
                .into_iter()
                .map(|r| (r, None))
                .collect(),
        });
    }
    items
}

/// `show` on a stopped daemon's spool.
pub fn offline_show(queue_dir: &Path, id: QueueId) -> Result<Option<String>, String> {
    for view in offline_views(queue_dir)? {
        if let (Some(entry), Some((envelope, content))) = (view.index().get(&id), view.read(&id)) {
            let pending: Vec<u32> = entry.pending.iter().collect();
            return Ok(Some(format::show(&envelope, &pending, entry.held, content)));
        }
    }
    Ok(None)
}

fn offline_views(queue_dir: &Path) -> Result<Vec<corepost_spool::snapshot::ReadOnlySpool>, String> {
    let entries = match std::fs::read_dir(queue_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", queue_dir.display())),
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("core-"))
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs.iter()
        .map(|d| corepost_spool::snapshot::ReadOnlySpool::open(d))
        .collect()
}
