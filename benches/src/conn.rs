//! Buffered SMTP streams: bounded line reading, DATA and BDAT content reading, and batched
//! writes, over plain TCP or TLS (after STARTTLS).
//!
//! Replies and commands are queued in a write buffer and sent by [`SmtpStream::flush`]; a server
//! that flushes only when no more input is buffered answers a pipelined group with one write,
//! which is what makes PIPELINING pay off. Every read and write is bounded by the stream's
//! timeout.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::smtp::{self, MAX_LINE, MAX_REPLY_LINES};

/// Size of the read buffer; also the longest DATA line piece handed out at once.
const READ_BUF: usize = 64 * 1024;

/// A TCP connection, possibly upgraded to TLS.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// Client side after STARTTLS.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Server side after STARTTLS.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    /// Whether TLS is active.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Conn::Plain(_))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "SMTP peer timed out")
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// An SMTP connection with a bounded read buffer and a write queue.
pub struct SmtpStream<S> {
    io: S,
    rbuf: Box<[u8]>,
    start: usize,
    end: usize,
    wbuf: Vec<u8>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpStream<S> {
    /// Wraps `io`; every single read or write waits at most `timeout`.
    pub fn new(io: S, timeout: Duration) -> Self {
        Self {
            io,
            rbuf: vec![0; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            wbuf: Vec::with_capacity(8192),
            timeout,
        }
    }

    /// The underlying stream (for STARTTLS). Buffered input, if any, is dropped: after STARTTLS
    /// nothing sent in the clear may be used (RFC 3207 section 4.2).
    pub fn into_inner(self) -> S {
        self.io
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Whether input the peer sent is already waiting in the buffer.
    pub fn has_buffered_input(&self) -> bool {
        self.start < self.end
    }

    /// Queues bytes for the next [`flush`](Self::flush).
    pub fn queue(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// The write queue, to format into directly.
    pub fn wbuf(&mut self) -> &mut Vec<u8> {
        &mut self.wbuf
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let r = tokio::time::timeout(self.timeout, self.io.write_all(&self.wbuf)).await;
        self.wbuf.clear();
        r.map_err(|_| timed_out())?
    }

    /// Reads more input; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.rbuf.len() {
            self.rbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = tokio::time::timeout(self.timeout, self.io.read(&mut self.rbuf[self.end..]))
            .await
            .map_err(|_| timed_out())??;
        self.end += n;
        Ok(n)
    }

    /// Reads one line up to and including its LF. `Ok(None)` at a clean end of stream (no partial
    /// line); an error for a line longer than [`MAX_LINE`] or a stream that ends mid-line.
    pub async fn read_line(&mut self) -> io::Result<Option<&[u8]>> {
        let mut scanned = 0;
        loop {
            let avail = &self.rbuf[self.start + scanned..self.end];
            if let Some(i) = memchr::memchr(b'\n', avail) {
                let line_end = self.start + scanned + i + 1;
                if line_end - self.start > MAX_LINE {
                    return Err(invalid("line too long"));
                }
                let line = &self.rbuf[self.start..line_end];
                self.start = line_end;
                return Ok(Some(line));
            }
            scanned = self.end - self.start;
            if scanned > MAX_LINE {
                return Err(invalid("line too long"));
            }
            if self.fill().await? == 0 {
                return if self.start == self.end {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed mid-line",
                    ))
                };
            }
        }
    }

    /// Reads a line, failing on end of stream.
    pub async fn expect_line(&mut self) -> io::Result<&[u8]> {
        match self.read_line().await? {
            Some(l) => Ok(l),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            )),
        }
    }

    /// Reads the next piece of DATA content: a whole line including its LF, or, for a line
    /// longer than the read buffer, a piece of it.
    pub async fn read_data_piece(&mut self) -> io::Result<&[u8]> {
        let mut scanned = 0;
        loop {
            let avail = &self.rbuf[self.start + scanned..self.end];
            if let Some(i) = memchr::memchr(b'\n', avail) {
                let line_end = self.start + scanned + i + 1;
                let piece = &self.rbuf[self.start..line_end];
                self.start = line_end;
                return Ok(piece);
            }
            if self.start == 0 && self.end == self.rbuf.len() {
                let piece = &self.rbuf[..self.end];
                self.start = self.end;
                return Ok(piece);
            }
            scanned = self.end - self.start;
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in DATA",
                ));
            }
        }
    }

    /// Reads up to `max` (> 0) bytes of raw input (BDAT chunks).
    pub async fn read_raw(&mut self, max: usize) -> io::Result<&[u8]> {
        if self.start == self.end && self.fill().await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in BDAT",
            ));
        }
        let n = max.min(self.end - self.start);
        let piece = &self.rbuf[self.start..self.start + n];
        self.start += n;
        Ok(piece)
    }

    /// Reads one complete (possibly multi-line) reply and returns its code; `on_line` sees the
    /// text of every line. Lines of one reply must agree on the code.
    pub async fn read_reply(&mut self, mut on_line: impl FnMut(&[u8])) -> io::Result<u16> {
        let mut code = None;
        for _ in 0..MAX_REPLY_LINES {
            let line = self.expect_line().await?;
            let r = smtp::parse_reply_line(line).map_err(|e| invalid(e.0))?;
            if code.is_some_and(|c| c != r.code) {
                return Err(invalid("reply lines with different codes"));
            }
            code = Some(r.code);
            on_line(r.text);
            if r.last {
                return Ok(r.code);
            }
        }
        Err(invalid("reply has too many lines"))
    }

    /// Closes the write side.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        tokio::time::timeout(self.timeout, self.io.shutdown())
            .await
            .map_err(|_| timed_out())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn lines_replies_and_pieces() {
        rt().block_on(async {
            let (a, mut b) = tokio::io::duplex(1 << 20);
            let mut s = SmtpStream::new(a, Duration::from_secs(5));
            let long = vec![b'x'; READ_BUF + 10];
            let mut input = b"250-first\r\n250 second\r\nLINE\n".to_vec();
            input.extend_from_slice(&long);
            input.extend_from_slice(b"\r\nRAW!");
            b.write_all(&input).await.unwrap();
            drop(b);
            let mut texts = Vec::new();
            assert_eq!(s.read_reply(|t| texts.push(t.to_vec())).await.unwrap(), 250);
            assert_eq!(texts, vec![b"first".to_vec(), b"second".to_vec()]);
            assert_eq!(s.read_line().await.unwrap(), Some(&b"LINE\n"[..]));
            let p1 = s.read_data_piece().await.unwrap().len();
            let p2 = s.read_data_piece().await.unwrap().len();
            assert_eq!(p1 + p2, READ_BUF + 12);
            assert_eq!(s.read_raw(3).await.unwrap(), b"RAW");
            assert_eq!(s.read_raw(10).await.unwrap(), b"!");
            assert!(s.read_raw(1).await.is_err());
            assert_eq!(s.read_line().await.unwrap(), None);
        });
    }

    #[test]
    fn bounds() {
        rt().block_on(async {
            let (a, mut b) = tokio::io::duplex(1 << 20);
            let mut s = SmtpStream::new(a, Duration::from_secs(5));
            b.write_all(&vec![b'2'; MAX_LINE + 100]).await.unwrap();
            assert!(s.read_line().await.is_err());

            let (a, mut b) = tokio::io::duplex(1 << 20);
            let mut s = SmtpStream::new(a, Duration::from_secs(5));
            b.write_all(b"250-a\r\n251 b\r\n").await.unwrap();
            assert!(s.read_reply(|_| {}).await.is_err());

            let (a, _b) = tokio::io::duplex(64);
            let mut s = SmtpStream::new(a, Duration::from_millis(20));
            assert_eq!(
                s.read_line().await.unwrap_err().kind(),
                io::ErrorKind::TimedOut
            );
        });
    }
}
