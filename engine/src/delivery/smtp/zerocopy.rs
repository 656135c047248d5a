//! The message body on the wire without copying it: the stored content goes to the socket
//! straight from the spool's mapping with one `sendmsg(2)` of several slices, instead of being
//! copied (and dot-stuffed) into the output buffer first.
//!
//! This applies to content that needs no repair ([`encode::is_canonical`]: CR and LF only as
//! CRLF, no line over the length limit), which is what smtpd and pickup store. Such content
//! changes on the way out only by dot-stuffing, so the DATA body is the content cut before each
//! line that starts with a dot, a `.` between the pieces, and the end (`CRLF` if the last line
//! has none, then `.CRLF`) — [`stuffed_slices`], byte for byte what [`encode::BodyEncoder`]
//! makes of it (property-tested below). Anything else still goes through the encoder.
//!
//! TLS streams keep the copying path: rustls copies every byte into its records anyway.
//!
//! [`encode::is_canonical`]: super::encode::is_canonical
//! [`encode::BodyEncoder`]: super::encode::BodyEncoder

use futures_lite::AsyncWriteExt;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::time::Duration;

/// The most slices one `sendmsg` takes (Linux's `UIO_MAXIOV`).
const MAX_SLICES: usize = 1024;

/// The DATA body of canonical `content` as slices to write in order: the content in pieces, a
/// `.` before each line that starts with one, a CRLF if the last line has none, and `.` CRLF.
/// Only for content that [`super::encode::is_canonical`] accepts with the session's line limit
/// (the encoder would otherwise also repair or fold lines).
pub fn stuffed_slices(content: &[u8]) -> Vec<IoSlice<'_>> {
    let mut slices = Vec::with_capacity(4);
    let mut start = 0;
    if content.first() == Some(&b'.') {
        slices.push(IoSlice::new(b"."));
    }
    for nl in memchr::memmem::find_iter(content, b"\n.") {
        let dot = nl + 1;
        slices.push(IoSlice::new(&content[start..dot]));
        slices.push(IoSlice::new(b"."));
        start = dot;
    }
    if start < content.len() {
        slices.push(IoSlice::new(&content[start..]));
    }
    if !content.is_empty() && !content.ends_with(b"\n") {
        slices.push(IoSlice::new(b"\r\n"));
    }
    slices.push(IoSlice::new(b".\r\n"));
    slices
}

/// Write all of `slices`, in order. On a plain TCP socket (`fd`) each step is one non-blocking
/// `sendmsg` of as many slices as the socket takes; when it is full, the stream's own write
/// waits for room (and writes part of the first slice). Other streams get the slices one by one.
///
/// `timeout` bounds each wait for progress, as Postfix's `smtp_data_xfer_timeout` ("when the
/// connection makes no progress for more than ..."); a write that completes at once sets no
/// timer at all. A timeout is an error of kind `TimedOut`.
pub async fn write_all<S>(
    stream: &mut S,
    fd: Option<RawFd>,
    slices: &mut [IoSlice<'_>],
    timeout: Duration,
) -> io::Result<()>
where
    S: futures_lite::AsyncWrite + Unpin,
{
    let timeout = timeout.max(Duration::from_millis(1));
    let mut slices = slices;
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let sent = match fd.map(|fd| send_now(fd, slices)) {
            Some(Ok(n)) => n,
            Some(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {
                let first: &[u8] = &slices[0];
                glommio::timer::timeout(timeout, async { Ok(stream.write(first).await?) })
                    .await
                    .map_err(io::Error::from)?
            }
        };
        if sent == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        IoSlice::advance_slices(&mut slices, sent);
    }
    if fd.is_some() {
        return Ok(()); // a TCP stream has nothing of its own to flush
    }
    glommio::timer::timeout(timeout, async { Ok(stream.flush().await?) })
        .await
        .map_err(io::Error::from)
}

/// One `sendmsg(2)` that does not wait; `WouldBlock` when the socket buffer is full.
fn send_now(fd: RawFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let count = slices.len().min(MAX_SLICES);
    // SAFETY: an all-zero msghdr is valid (no name, no control data); IoSlice is documented to
    // be ABI-compatible with `struct iovec` on Unix, and `slices` outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = slices.as_ptr().cast_mut().cast();
    msg.msg_iovlen = count as _;
    loop {
        // SAFETY: `fd` is the caller's open socket for the duration of the call, and `msg`
        // points at `count` valid slices that the kernel only reads.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::smtp::encode::{BodyEncoder, is_canonical};
    use proptest::prelude::*;

    fn joined(content: &[u8]) -> Vec<u8> {
        stuffed_slices(content)
            .iter()
            .flat_map(|s| s.to_vec())
            .collect()
    }

    fn encoded(content: &[u8], limit: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = BodyEncoder::new(limit);
        enc.push(&mut out, content);
        enc.finish(&mut out);
        out
    }

    #[test]
    fn dots_are_stuffed_without_copying_the_lines() {
        assert_eq!(joined(b""), b".\r\n");
        assert_eq!(joined(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(joined(b"a"), b"a\r\n.\r\n");
        assert_eq!(joined(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(
            joined(b"a\r\n.b\r\n..c\r\n."),
            b"a\r\n..b\r\n...c\r\n..\r\n.\r\n"
        );
        assert_eq!(joined(b"x.y\r\n"), b"x.y\r\n.\r\n");
        // The lines themselves are slices of the content, not copies.
        let content = b"one\r\n.two\r\nthree\r\n";
        let slices = stuffed_slices(content);
        assert_eq!(slices.len(), 4);
        assert_eq!(slices[0].as_ptr(), content.as_ptr());
        assert_eq!(slices[2].as_ptr(), content[5..].as_ptr());
    }

    #[test]
    fn writes_every_slice_through_a_socket_in_order() {
        // Larger than the socket buffer: sendmsg must stop part-way and wait for the reader.
        let mut content = Vec::new();
        for i in 0..40_000 {
            content.extend_from_slice(if i % 3 == 0 {
                b".dot line\r\n"
            } else {
                b"a line\r\n"
            });
        }
        let expected = encoded(&content, 0);
        let got = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                use futures_lite::AsyncReadExt;
                use std::os::fd::AsRawFd;
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let reading = glommio::spawn_local(async move {
                    let mut reader = listener.accept().await.unwrap();
                    let mut got = Vec::new();
                    reader.read_to_end(&mut got).await.unwrap();
                    got
                });
                let mut writer = glommio::net::TcpStream::connect(addr).await.unwrap();
                let fd = writer.as_raw_fd();
                let mut slices = stuffed_slices(&content);
                assert!(slices.len() > 20_000);
                write_all(&mut writer, Some(fd), &mut slices, Duration::from_secs(10))
                    .await
                    .unwrap();
                writer.close().await.unwrap();
                drop(writer);
                reading.await
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected);
    }

    proptest! {
        /// For every body the sender takes this path for, the wire bytes are exactly the
        /// encoder's.
        #[test]
        fn slices_are_the_encoders_bytes(content in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), Just(b' ')], 0..300),
            limit in 0usize..12)
        {
            // Make most cases canonical (bare CR/LF repaired) so the property is exercised.
            let mut canonical = Vec::new();
            for &b in &content {
                match b {
                    b'\n' => canonical.extend_from_slice(b"\r\n"),
                    b'\r' => {}
                    b => canonical.push(b),
                }
            }
            for body in [&content, &canonical] {
                if is_canonical(body, limit) {
                    prop_assert_eq!(joined(body), encoded(body, limit));
                }
            }
        }

        #[test]
        fn arbitrary_lines_match_the_encoder(lines in proptest::collection::vec("[.a-z]{0,5}", 0..10), end in any::<bool>()) {
            let mut body = lines.join("\r\n");
            if end {
                body.push_str("\r\n");
            }
            prop_assert_eq!(joined(body.as_bytes()), encoded(body.as_bytes(), 0));
        }
    }
}
