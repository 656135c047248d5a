//! The HTTP endpoint: one std thread (never a core's executor) answering `GET /metrics`
//! with HTTP/1.1 and `Connection: close`, one connection at a time. Reads and writes have a
//! 5-second timeout, so a client that stalls holds the endpoint that long at most; a
//! request head is at most 8 KiB.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 8192;

/// Bind `address` (before the daemon gives up root, so any port works). The serving
/// thread starts with [`Endpoint::serve`], once the cores have their slots.
pub fn start(address: SocketAddr) -> Result<Endpoint, String> {
    let listener = TcpListener::bind(address)
        .map_err(|e| format!("corepost_metrics_address = {address}: {e}"))?;
    Ok(Endpoint { listener })
}

/// A bound metrics listener.
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
}

impl Endpoint {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serve scrapes on a thread of its own until the process ends.
    pub fn serve(self) -> Result<(), String> {
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for stream in self.listener.incoming() {
                    match stream {
                        Ok(s) => answer(s),
                        // EMFILE and the like: wait rather than spin.
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            })
            .map(drop)
            .map_err(|e| format!("starting the metrics thread: {e}"))
    }
}

fn answer(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let (status, body) = respond(&head, super::render);
    let content_type = if status.starts_with("200") {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
    if !head.starts_with("HEAD ") {
        let _ = stream.write_all(body.as_bytes());
    }
    let _ = stream.flush();
}

/// The request line and headers, up to the blank line.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_HEAD {
            let _ = stream.write_all(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return None;
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The status line and body for a request head; `render` makes the exposition text.
fn respond(head: &str, render: impl FnOnce() -> String) -> (&'static str, String) {
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", render()),
        ("GET" | "HEAD", _) => ("404 Not Found", "corepost serves /metrics only\n".into()),
        _ => ("405 Method Not Allowed", "only GET and HEAD\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        let render = || "x 1\n".to_string();
        assert_eq!(
            respond("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", render),
            ("200 OK", "x 1\n".to_string())
        );
        assert_eq!(
            respond("GET /metrics?x=1 HTTP/1.0\r\n\r\n", render).0,
            "200 OK"
        );
        assert_eq!(respond("GET / HTTP/1.1\r\n\r\n", render).0, "404 Not Found");
        assert_eq!(
            respond("POST /metrics HTTP/1.1\r\n\r\n", render).0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond("", render).0, "405 Method Not Allowed");
    }

    #[test]
    fn a_scrape_over_tcp_gets_the_exposition() {
        let endpoint = start("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        endpoint.serve().unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(
            reply.contains("Content-Type: text/plain; version=0.0.4"),
            "{reply}"
        );
        assert!(reply.contains("Connection: close"), "{reply}");
    }
}
