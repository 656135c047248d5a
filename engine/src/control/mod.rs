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

use self::core::{CoreAnswer, CoreCommand, CoreRequest, CoreStatus};
use corepost_spool::{AdminAction, QueueId};
use format::QueueItem;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    QueueItem {
        id,
        arrival: envelope.arrival,
        size: size as u64,
        sender: envelope.sender.clone(),
        held: entry.held,
        active,
        recipients: entry
            .pending
            .iter()
            .filter_map(|i| {
                let r = envelope.recipients.get(i as usize)?;
                Some((r.address.clone(), reasons.get(&(id, i)).cloned()))
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
    pub pickup: bool,
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

/// The listening control socket, running on its own thread.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlServer {
    /// Bind `path` (replacing a stale socket), owner-only, and serve.
    pub fn start(
        path: &Path,
        cores: Vec<flume::Sender<CoreRequest>>,
        info: DaemonInfo,
    ) -> Result<ControlServer, String> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && meta.file_type().is_socket()
        {
            let _ = std::fs::remove_file(path);
        }
        // Created owner-only from the start: no window where others could
        // connect.
        // SAFETY: umask only changes this process's file creation mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener = bound.map_err(|e| format!("control socket {}: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("control socket {}: {e}", path.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("control socket: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let cores = Arc::new(cores);
        let info = Arc::new(info);
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    match listener.accept() {
                        // One thread per request, so a client that never
                        // sends its line cannot hold up the others.
                        Ok((stream, _)) => {
                            let (cores, info) = (Arc::clone(&cores), Arc::clone(&info));
                            let _ = std::thread::Builder::new()
                                .name("control-request".into())
                                .spawn(move || serve(stream, &cores, &info));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
            .map_err(|e| format!("control thread: {e}"))?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(stream: UnixStream, cores: &[flume::Sender<CoreRequest>], info: &DaemonInfo) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut line = Vec::new();
    let mut reader = BufReader::new(&stream).take(MAX_REQUEST as u64);
    if reader.read_until(b'\n', &mut line).is_err() {
        return;
    }
    let request = String::from_utf8_lossy(&line).trim().to_string();
    let answer = match execute(&request, cores, info) {
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

/// Sorted listing of every core's messages.
fn list(cores: &[flume::Sender<CoreRequest>]) -> Result<Vec<QueueItem>, String> {
    let mut items = Vec::new();
    for a in ask_all(cores, CoreCommand::List)? {
        if let CoreAnswer::List(mut l) = a {
            items.append(&mut l);
        }
    }
    items.sort_by_key(|i| i.id);
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
        "list" => Ok(format::mailq(&list(cores)?)),
        "shape" => Ok(format::shape(
            &list(cores)?,
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
                if info.pickup { "on" } else { "off" },
            ) + &helper
                + &damage)
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
            pickup: false,
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
    let mut items = Vec::new();
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
    items.sort_by_key(|i| i.id);
    Ok(items)
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
