//! Event hooks: each target has its own thread and a bounded buffer, so a
//! slow or dead hook never holds up the writer, the other hooks or a core.
//! While a hook cannot take events it keeps up to its buffer's worth and
//! retries (1 s, doubling to 30 s); newer events are dropped and counted,
//! and the count is logged (at most every 10 s and when the hook is back).

use super::writer::WARN_INTERVAL;
use crate::log::Log;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Events sent in one write or POST.
const HOOK_BATCH: usize = 1000;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HookTarget {
    Unix(String),
    Tcp(String),
    /// Host and port, path.
    Http(String, String),
}

impl HookTarget {
    pub(super) fn parse(text: &str) -> Result<HookTarget, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.starts_with('/') {
                return Ok(HookTarget::Unix(path.to_string()));
            }
        } else if let Some(address) = text.strip_prefix("tcp:") {
            if address
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            {
                return Ok(HookTarget::Tcp(address.to_string()));
            }
        } else if let Some(rest) = text.strip_prefix("http://") {
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            if !host.is_empty() {
                let host = if host.contains(':') && !host.ends_with(']') {
                    host.to_string()
                } else {
                    format!("{host}:80")
                };
                return Ok(HookTarget::Http(host, format!("/{path}")));
            }
        }
        Err(format!(
            "{text}: expected unix:/path, tcp:host:port or http://host[:port]/path"
        ))
    }

    fn name(&self) -> String {
        match self {
            HookTarget::Unix(p) => format!("unix:{p}"),
            HookTarget::Tcp(a) => format!("tcp:{a}"),
            HookTarget::Http(h, p) => format!("http://{h}{p}"),
        }
    }
}

struct Queue {
    events: VecDeque<String>,
    dropped: u64,
    closing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    capacity: usize,
}

pub(super) struct Hook {
    shared: Arc<Shared>,
    thread: std::thread::JoinHandle<()>,
}

impl Hook {
    pub(super) fn start(target: HookTarget, capacity: usize, log: Log) -> Hook {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                dropped: 0,
                closing: false,
            }),
            wake: Condvar::new(),
            capacity,
        });
        let mine = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            Sender {
                target,
                connection: None,
                log,
            }
            .run(&mine)
        });
        Hook { shared, thread }
    }

    /// Take what fits; count the rest.
    pub(super) fn push(&self, batch: &[String]) {
        let mut q = lock(&self.shared.queue);
        let room = self.shared.capacity.saturating_sub(q.events.len());
        q.events.extend(batch.iter().take(room).cloned());
        q.dropped += batch.len().saturating_sub(room) as u64;
        drop(q);
        self.shared.wake.notify_one();
    }

    /// Stop after one more try at what is buffered (bounded by `limit`).
    pub(super) fn finish(self, limit: Duration) {
        lock(&self.shared.queue).closing = true;
        self.shared.wake.notify_one();
        let deadline = Instant::now() + limit;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

enum Connection {
    Unix(UnixStream),
    Tcp(TcpStream),
}

struct Sender {
    target: HookTarget,
    /// The kept stream of a unix: or tcp: hook.
    connection: Option<Connection>,
    log: Log,
}

impl Sender {
    fn run(&mut self, shared: &Shared) {
        let mut backoff = Duration::from_secs(1);
        let mut warned: Option<Instant> = None;
        let mut down_since: Option<Instant> = None;
        loop {
            let (batch, dropped, closing) = {
                let mut q = lock(&shared.queue);
                while q.events.is_empty() && !q.closing {
                    q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                let n = q.events.len().min(HOOK_BATCH);
                let batch: Vec<String> = q.events.iter().take(n).cloned().collect();
                let dropped = if warned.is_none_or(|w| w.elapsed() >= WARN_INTERVAL) {
                    std::mem::take(&mut q.dropped)
                } else {
                    0
                };
                (batch, dropped, q.closing)
            };
            if dropped > 0 {
                warned = Some(Instant::now());
                self.log.line(
                    "corepost/events",
                    &format!(
                        "warning: event hook {}: {dropped} events dropped: its buffer of {} events was full",
                        self.target.name(),
                        shared.capacity
                    ),
                );
            }
            if batch.is_empty() {
                return;
            }
            match self.deliver(&batch) {
                Ok(()) => {
                    lock(&shared.queue).events.drain(..batch.len());
                    backoff = Duration::from_secs(1);
                    down_since = None;
                }
                Err(e) => {
                    self.connection = None;
                    if down_since.is_none() {
                        down_since = Some(Instant::now());
                        self.log.line(
                            "corepost/events",
                            &format!(
                                "warning: event hook {}: {e}; keeping up to {} events and retrying",
                                self.target.name(),
                                shared.capacity
                            ),
                        );
                    }
                    if closing {
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn deliver(&mut self, batch: &[String]) -> Result<(), String> {
        let mut body = String::with_capacity(batch.iter().map(|e| e.len() + 1).sum());
        for e in batch {
            body.push_str(e);
            body.push('\n');
        }
        match &self.target {
            HookTarget::Http(host, path) => post(host, path, body.as_bytes()),
            _ => self.stream_write(body.as_bytes()),
        }
    }

    /// JSON lines over a kept connection.
    fn stream_write(&mut self, data: &[u8]) -> Result<(), String> {
        if self.connection.is_none() {
            self.connection = Some(match &self.target {
                HookTarget::Unix(path) => {
                    let s = UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
                    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
                    Connection::Unix(s)
                }
                HookTarget::Tcp(address) => Connection::Tcp(connect_tcp(address)?),
                HookTarget::Http(..) => return Err("not a stream hook".into()),
            });
        }
        let written = match self.connection.as_mut() {
            Some(Connection::Unix(s)) => s.write_all(data),
            Some(Connection::Tcp(s)) => s.write_all(data),
            None => Ok(()),
        };
        written.map_err(|e| format!("write: {e}"))
    }
}

fn connect_tcp(address: &str) -> Result<TcpStream, String> {
    let mut last = format!("{address}: no address");
    for a in address
        .to_socket_addrs()
        .map_err(|e| format!("{address}: {e}"))?
    {
        match TcpStream::connect_timeout(&a, IO_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_write_timeout(Some(IO_TIMEOUT));
                let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                return Ok(s);
            }
            Err(e) => last = format!("connect to {a}: {e}"),
        }
    }
    Err(last)
}

/// One POST; any 2xx reply accepts the batch.
fn post(host: &str, path: &str, body: &[u8]) -> Result<(), String> {
    let mut s = connect_tcp(host)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut reply[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let status = String::from_utf8_lossy(&reply[..got]);
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') && code.len() == 3 {
        Ok(())
    } else {
        Err(format!(
            "HTTP reply {}",
            status.lines().next().unwrap_or("(none)")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_targets() {
        assert_eq!(
            HookTarget::parse("unix:/run/x.sock"),
            Ok(HookTarget::Unix("/run/x.sock".into()))
        );
        assert_eq!(
            HookTarget::parse("tcp:[::1]:514"),
            Ok(HookTarget::Tcp("[::1]:514".into()))
        );
        assert_eq!(
            HookTarget::parse("http://logs.example:8080/in"),
            Ok(HookTarget::Http("logs.example:8080".into(), "/in".into()))
        );
        assert_eq!(
            HookTarget::parse("http://logs.example"),
            Ok(HookTarget::Http("logs.example:80".into(), "/".into()))
        );
        assert!(HookTarget::parse("unix:relative").is_err());
        assert!(HookTarget::parse("tcp:host").is_err());
        assert!(HookTarget::parse("ftp://x").is_err());
    }
}
