//! The connection layer: a socket with a bounded input buffer and an output
//! buffer.
//!
//! Commands are taken line by line from what one read delivered; replies
//! are queued and written together when no complete command is left in the
//! input, so a pipelined group is answered in one write. Lines longer than
//! the limit are discarded as they arrive, never buffered whole.
//!
//! The stream is plain TCP until [`Connection::start_tls`] swaps it for TLS
//! over the same socket (STARTTLS, or at once for wrapper mode); input
//! buffered before the swap is dropped, never read as if it were encrypted.

use super::tls::Stream;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Initial input buffer; grows up to [`MAX_BUFFER`] for DATA.
const INITIAL_BUFFER: usize = 1024;
const MAX_BUFFER: usize = 64 * 1024;
/// Input buffer while message content streams in: a typical message then
/// arrives in one or two reads instead of one per kilobyte. A read that
/// fills it makes it grow (up to [`MAX_BUFFER`]): a large message then
/// takes a recv per 64 KiB, not per 16 KiB.
const BULK_BUFFER: usize = 16 * 1024;

/// A line, or why there is none yet.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line (without CR LF) — its bytes are in the buffer at the
    /// returned range until [`Connection::consume`].
    Complete { len: usize, consumed: usize },
    /// The line exceeded the limit; it has been discarded but for its
    /// first `max` bytes (Postfix truncates an over-long command and
    /// carries it out).
    TooLong(Vec<u8>),
    /// More input is needed.
    Incomplete,
}

/// One client connection.
pub struct Connection {
    stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    /// Discarding the rest of an over-long line.
    discarding: bool,
    /// The first bytes of the line being discarded.
    head: Vec<u8>,
    /// Message content is streaming in ([`Connection::expect_bulk`]).
    bulk: bool,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Connection {
        Connection {
            stream: Stream::Plain(stream),
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            out: Vec::with_capacity(512),
            discarding: false,
            head: Vec::new(),
            bulk: false,
        }
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drop everything buffered (e.g. plaintext pipelined before TLS).
    pub fn discard_input(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// The next line, if complete, limited to `max` bytes.
    pub fn next_line(&mut self, max: usize) -> Line {
        let data = &self.buf[self.start..self.end];
        match data.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                if self.discarding {
                    self.discarding = false;
                    self.consume(nl + 1);
                    return Line::TooLong(std::mem::take(&mut self.head));
                }
                let len = if nl > 0 && data[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                if len > max {
                    let head = data[..max].to_vec();
                    self.consume(nl + 1);
                    return Line::TooLong(head);
                }
                Line::Complete {
                    len,
                    consumed: nl + 1,
                }
            }
            None => {
                if !self.discarding && data.len() > max + 2 {
                    self.head = data[..max].to_vec();
                    self.discarding = true;
                }
                if self.discarding {
                    self.discard_input();
                }
                Line::Incomplete
            }
        }
    }

    /// Whether a complete line is buffered (a pipelined command waits).
    pub fn has_line(&self) -> bool {
        self.buffered().contains(&b'\n')
    }

    /// Read more input, waiting at most `timeout`. Returns 0 at EOF.
    pub async fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        if self.start > 0 && self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < MAX_BUFFER {
                let n = (self.buf.len() * 4).min(MAX_BUFFER);
                self.buf.resize(n, 0);
            } else {
                return Err(io::Error::other("input buffer full"));
            }
        }
        let stream = &mut self.stream;
        let buf = &mut self.buf[self.end..];
        let room = buf.len();
        let n = glommio::timer::timeout(timeout, async { Ok(stream.read(buf).await?) })
            .await
            .map_err(io::Error::from)?;
        self.end += n;
        if self.bulk && n == room && self.buf.len() < MAX_BUFFER {
            // More content was waiting than fitted: read more at a time.
            let grown = (self.buf.len() * 4).min(MAX_BUFFER);
            self.buf.resize(grown, 0);
        }
        Ok(n)
    }

    /// Queue raw reply bytes.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Write everything queued, waiting at most `timeout`.
    pub async fn flush(&mut self, timeout: Duration) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let stream = &mut self.stream;
        let out = &self.out;
        glommio::timer::timeout(timeout, async {
            stream.write_all(out).await?;
            Ok(())
        })
        .await
        .map_err(io::Error::from)?;
        if let Stream::Tls(s) = &mut self.stream {
            // rustls may hold the tail of a record until flushed.
            glommio::timer::timeout(timeout, async { Ok(s.flush().await?) })
                .await
                .map_err(io::Error::from)?;
        }
        self.out.clear();
        if self.out.capacity() > 64 * 1024 {
            self.out.shrink_to(512);
        }
        Ok(())
    }

    /// Message content is next: read it in large pieces. [`Self::shrink`]
    /// gives the memory back afterwards.
    pub fn expect_bulk(&mut self) {
        self.bulk = true;
        if self.buf.len() < BULK_BUFFER {
            self.buf.resize(BULK_BUFFER, 0);
        }
    }

    /// Give back a large DATA buffer once the message is done, so idle
    /// sessions stay small.
    pub fn shrink(&mut self) {
        self.bulk = false;
        if self.buf.len() > INITIAL_BUFFER && self.end - self.start <= INITIAL_BUFFER {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            self.buf.truncate(INITIAL_BUFFER);
            self.buf.shrink_to_fit();
        }
    }

    /// Switch to TLS (server side): everything buffered so far is dropped
    /// — after STARTTLS it is plaintext the client pipelined, which must
    /// never be taken as sent under TLS (CVE-2011-0411) — then the
    /// handshake runs, within `timeout`. After a failure the connection is
    /// unusable.
    pub async fn start_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
        timeout: Duration,
    ) -> io::Result<()> {
        self.discard_input();
        self.discarding = false;
        self.head.clear();
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(io::Error::other("TLS already active"));
        };
        let acceptor = futures_rustls::TlsAcceptor::from(config);
        let tls = glommio::timer::timeout(timeout, async { Ok(acceptor.accept(tcp).await?) })
            .await
            .map_err(io::Error::from)?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Whether input is waiting that has not been read yet (see
    /// [`Stream::input_waiting`]) or is buffered.
    pub fn input_waiting(&self) -> bool {
        !self.buffered().is_empty() || self.stream.input_waiting()
    }

    /// Our end of the connection.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.stream.local_addr()
    }

    /// The TLS session, once TLS is active.
    pub fn tls(&self) -> Option<&rustls::ServerConnection> {
        self.stream.tls()
    }

    /// End the session's side of the connection. On plain TCP there is
    /// nothing to do before the socket is dropped: closing the stream would
    /// only add a `shutdown(SHUT_WR)`, and the close that follows sends the
    /// same FIN — Postfix's smtpd, too, just closes after `221` or `421`.
    /// TLS sends its close_notify first.
    pub async fn close(&mut self) {
        if !matches!(self.stream, Stream::Plain(_)) {
            let _ = self.stream.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn content_reads_grow_while_more_is_waiting_and_shrink_after() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let writer = std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(&vec![b'x'; 200 * 1024]).unwrap();
                });
                let mut c = Connection::new(listener.accept().await.unwrap());
                writer.join().unwrap();
                c.expect_bulk();
                let (mut total, mut reads) = (0, 0);
                while total < 200 * 1024 {
                    let n = c.fill(Duration::from_secs(10)).await.unwrap();
                    assert!(n > 0);
                    total += n;
                    reads += 1;
                    let all = c.buffered().len();
                    c.consume(all);
                }
                assert_eq!(c.buf.len(), MAX_BUFFER, "grew to the limit");
                // 16 KiB, then 64 KiB at a time (not 13 reads of 16 KiB).
                assert!(reads <= 5, "{reads} reads");
                c.shrink();
                assert_eq!(c.buf.len(), INITIAL_BUFFER);
                c.expect_bulk();
                assert_eq!(c.buf.len(), BULK_BUFFER, "the next message starts small");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
