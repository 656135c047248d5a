//! Taking a connection off one core's listening socket with as few system
//! calls as the kernel allows.
//!
//! glommio's own `TcpListener::accept` first tries a plain `accept` wrapped
//! in three `fcntl`s (read the flags, set `O_NONBLOCK`, restore them), and
//! its stream then needs `getpeername` and `getsockname` for the addresses
//! and `setsockopt` for `TCP_NODELAY`: seven calls for a connection that
//! was already waiting. Here the listening socket is non-blocking from the
//! start ([`super::listen`]), so a waiting connection costs one `accept4`,
//! which also returns the client's address and marks the descriptor
//! close-on-exec; the local address is the listener's own when it is bound
//! to one address (a wildcard listener still asks `getsockname`), and
//! `TCP_NODELAY` (with Postfix's `SO_KEEPALIVE`) is inherited from the
//! listener. Only when nothing is waiting does glommio's accept run, for
//! its io_uring wait.

use glommio::net::{TcpListener, TcpStream};
use socket2::Socket;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

/// A client connection and its two ends.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Where the client connected to; `None` if the kernel would not say.
    pub local: Option<SocketAddr>,
}

/// One core's listening socket.
pub struct Acceptor {
    /// glommio's listener, for waiting (an io_uring accept) when no
    /// connection is queued.
    waiting: TcpListener,
    /// A second descriptor of the same socket (sharing its non-blocking
    /// flag and accept queue) for `accept4` without glommio's `fcntl`s;
    /// `None` if it could not be duplicated (glommio then does it all).
    direct: Option<Socket>,
    /// The address every connection on this listener arrives at, when it
    /// is bound to one address and port.
    local: Option<SocketAddr>,
}

impl Acceptor {
    /// `socket` is a listening, non-blocking TCP socket bound to `address`.
    pub fn new(socket: Socket, address: SocketAddr) -> Acceptor {
        let direct = socket.try_clone().ok();
        let fd = socket.into_raw_fd();
        // SAFETY: `fd` is a listening TCP socket we own (just released from
        // `socket2::Socket` without closing it); ownership passes to the
        // glommio listener, which closes it when dropped. `direct` is a
        // separate descriptor (dup) with its own lifetime.
        let waiting = unsafe { TcpListener::from_raw_fd(fd) };
        Acceptor {
            waiting,
            direct,
            local: known_local(address),
        }
    }

    /// The next connection, waiting for one if none is queued.
    pub async fn accept(&self) -> io::Result<Accepted> {
        if let Some(direct) = &self.direct {
            match direct.accept() {
                Ok((socket, addr)) => {
                    let peer = addr.as_socket();
                    let stream = into_glommio(socket);
                    return self.accepted(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        loop {
            match self.waiting.accept().await.map_err(io::Error::from) {
                Ok(stream) => return self.accepted(stream, None),
                // The io_uring accept of a non-blocking socket can report
                // EAGAIN when its wake-up was spurious: wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    futures_lite::future::yield_now().await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn accepted(&self, stream: TcpStream, peer: Option<SocketAddr>) -> io::Result<Accepted> {
        let peer = match peer {
            Some(p) => p,
            None => stream.peer_addr()?,
        };
        let local = self.local.or_else(|| stream.local_addr().ok());
        Ok(Accepted {
            stream,
            peer,
            local,
        })
    }
}

/// The local address of every connection a listener bound to `address`
/// accepts, when that is fixed: a specific address and port. A wildcard
/// (`0.0.0.0`, `::`) listener's connections each have their own.
fn known_local(address: SocketAddr) -> Option<SocketAddr> {
    (!address.ip().is_unspecified() && address.port() != 0).then_some(address)
}

/// Hand an accepted socket to the current core's executor.
fn into_glommio(socket: Socket) -> TcpStream {
    let fd = socket.into_raw_fd();
    // SAFETY: `fd` is a connected TCP socket returned by accept4 and owned by
    // `socket` until `into_raw_fd` released it without closing it; ownership
    // passes to the glommio stream, which closes it when dropped. (glommio
    // takes a socket2 0.4 socket, not the 0.5 one we have, so the
    // descriptor is the common currency.)
    unsafe { TcpStream::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_specific_listener_address_is_every_connections_local_address() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(known_local(at("127.0.0.1:25")), Some(at("127.0.0.1:25")));
        assert_eq!(known_local(at("[::1]:587")), Some(at("[::1]:587")));
        assert_eq!(known_local(at("0.0.0.0:25")), None);
        assert_eq!(known_local(at("[::]:25")), None);
        assert_eq!(known_local(at("127.0.0.1:0")), None);
    }

    /// A listener as the runtime binds it, on a free port of `ip`; `None`
    /// when the host lacks that address (IPv6 loopback on some hosts).
    fn listener(ip: &str) -> Option<(Socket, SocketAddr)> {
        let socket = super::super::listen::bind(SocketAddr::new(ip.parse().ok()?, 0)).ok()?;
        let address = socket.local_addr().ok()?.as_socket()?;
        Some((socket, address))
    }

    /// Accept twice on `ip`: a connection already queued (accept4), then
    /// one made while the acceptor waits (glommio's io_uring accept).
    fn accept_both_ways(ip: &str) {
        let Some((socket, address)) = listener(ip) else {
            eprintln!("skipped: cannot listen on {ip}");
            return;
        };
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let acceptor = Acceptor::new(socket, address);
                let queued = std::net::TcpStream::connect(address).unwrap();
                let a = acceptor.accept().await.unwrap();
                assert_eq!(a.peer, queued.local_addr().unwrap());
                assert_eq!(a.local, Some(address));
                let late = std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    std::net::TcpStream::connect(address).unwrap()
                });
                let b = acceptor.accept().await.unwrap();
                let late = late.join().unwrap();
                assert_eq!(b.peer, late.local_addr().unwrap());
                assert_eq!(b.local, Some(address));
                for s in [&a.stream, &b.stream] {
                    // Inherited from the listener, not set per connection.
                    assert!(s.nodelay().unwrap());
                    let fd = std::os::fd::AsRawFd::as_raw_fd(s);
                    // SAFETY: borrows a descriptor the stream keeps open for
                    // the duration of the borrow.
                    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                    assert!(socket2::SockRef::from(&borrowed).keepalive().unwrap());
                    // SAFETY: fcntl(F_GETFD) on an open descriptor.
                    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
                    assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn accepted_connections_know_both_ends_on_ipv4() {
        accept_both_ways("127.0.0.1");
    }

    #[test]
    fn accepted_connections_know_both_ends_on_ipv6() {
        accept_both_ways("::1");
    }
}
