//! One DNS exchange with one name server, over glommio's UDP or TCP.
//!
//! The resolver runs on the per-core glommio executors, so the sockets are glommio's: a
//! `glommio::net::UdpSocket` per query and a `glommio::net::TcpStream` when an answer comes back
//! truncated. Messages are encoded and decoded with hickory-proto.
//!
//! Defences against forged answers (RFC 5452) live here:
//! - every query gets a random 16-bit id and a fresh socket on a random source port (chosen with
//!   the thread's ChaCha-based CSPRNG, not the kernel's sequential ephemeral range);
//! - the UDP socket is connected to the name server, so the kernel drops datagrams from anyone
//!   else;
//! - a reply is accepted only if its id, its QR/opcode, and its single question (name, type,
//!   class) match what was asked; anything else is discarded and the wait goes on until the
//!   deadline.
//!
//! The socket is made with `std` and handed to glommio, instead of `glommio::net::UdpSocket::bind`,
//! because glommio's `bind` sets `SO_REUSEPORT`, which would let two sockets of this process share
//! a port and steal each other's replies.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::timer::Timer;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use rand::RngExt;

/// The EDNS(0) UDP payload size we advertise: the 2020 DNS flag day value, small enough not to
/// fragment on any path.
pub const EDNS_PAYLOAD: u16 = 1232;
/// Receive buffer for UDP answers; larger than advertised so a server that ignores EDNS and
/// sends a bigger datagram is still read whole (and then checked).
const UDP_RECV_BUF: usize = 4096;
/// How many random source ports to try before letting the kernel choose.
const PORT_TRIES: usize = 8;

/// What was asked: the name (fully qualified) and the type. Class is always IN.
#[derive(Clone, Debug)]
pub struct Question {
    pub name: Name,
    pub rtype: RecordType,
    /// Set the EDNS DO bit (RFC 3225): the resolver is asked for DNSSEC data, and a validating
    /// resolver then sets AD on answers it authenticated.
    pub dnssec: bool,
}

/// Why one exchange produced no usable answer.
#[derive(Debug)]
pub enum TransportError {
    /// Nothing acceptable arrived before the deadline.
    Timeout,
    /// A socket error (for example ICMP port unreachable: nothing listens there).
    Network(io::Error),
    /// The server answered with our id but the message did not decode, or (over TCP) the answer
    /// did not match the question.
    Malformed(String),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Timeout => f.write_str("timed out"),
            TransportError::Network(e) => write!(f, "network error: {e}"),
            TransportError::Malformed(why) => write!(f, "malformed reply: {why}"),
        }
    }
}

/// Encodes a recursive query for `q` with id `id` and an EDNS(0) OPT record.
pub fn encode_query(id: u16, q: &Question) -> Result<Vec<u8>, TransportError> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    let mut query = Query::query(q.name.clone(), q.rtype);
    query.set_query_class(DNSClass::IN);
    msg.add_query(query);
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    edns.set_dnssec_ok(q.dnssec);
    msg.set_edns(edns);
    msg.to_vec()
        .map_err(|e| TransportError::Malformed(format!("cannot encode query: {e}")))
}

/// The verdict on one received message.
#[derive(Debug)]
pub enum Verdict {
    /// Our answer.
    Accept(Message),
    /// Not ours (wrong id, not a response, another question): ignore it and keep waiting.
    Discard,
    /// Our id, but undecodable.
    Malformed(String),
}

/// Checks a received message against the question: id, QR = response, opcode QUERY, exactly one
/// question with the same name (case-insensitively), type and class.
pub fn check_response(bytes: &[u8], id: u16, q: &Question) -> Verdict {
    // Look at the id before decoding the rest, so that garbage with another id is "not ours"
    // rather than "our server is broken".
    let Some(head) = bytes.get(0..2) else {
        return Verdict::Discard;
    };
    if u16::from_be_bytes([head[0], head[1]]) != id {
        return Verdict::Discard;
    }
    let msg = match Message::from_vec(bytes) {
        Ok(msg) => msg,
        Err(e) => return Verdict::Malformed(e.to_string()),
    };
    if msg.metadata.message_type != MessageType::Response || msg.metadata.op_code != OpCode::Query {
        return Verdict::Discard;
    }
    let [asked] = msg.queries.as_slice() else {
        return Verdict::Discard;
    };
    if asked.query_type() != q.rtype
        || asked.query_class() != DNSClass::IN
        || !asked.name().eq_ignore_root(&q.name)
    {
        return Verdict::Discard;
    }
    Verdict::Accept(msg)
}

fn random_id() -> u16 {
    rand::rng().random()
}

/// A UDP socket bound to a random port of the wildcard address of `server`'s family, connected
/// to `server`, handed to glommio. It is made non-blocking (and close-on-exec) by `socket(2)`
/// itself, so a lookup costs no `ioctl`/`fcntl` on top of socket, bind, connect, send, receive
/// and close; a failed bind is retried on the same socket.
fn udp_socket_for(server: SocketAddr) -> io::Result<glommio::net::UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let any: IpAddr = match server {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = Socket::new(Domain::for_address(server), Type::DGRAM.nonblocking(), None)?;
    let mut rng = rand::rng();
    let bound = (0..PORT_TRIES).any(|_| {
        let port: u16 = rng.random_range(1024..=65535);
        socket.bind(&SocketAddr::new(any, port).into()).is_ok()
    });
    if !bound {
        socket.bind(&SocketAddr::new(any, 0).into())?;
    }
    socket.connect(&server.into())?;
    let fd = socket.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd` from a socket we own; nothing else holds
    // it, so glommio's socket becomes its only owner and closes it on drop.
    Ok(unsafe { glommio::net::UdpSocket::from_raw_fd(fd) })
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// Runs `fut` until `deadline`; `Err(Timeout)` if it is not done by then.
async fn until<T>(
    deadline: Instant,
    fut: impl Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    let Some(left) = remaining(deadline) else {
        return Err(TransportError::Timeout);
    };
    futures_lite::future::or(fut, async move {
        Timer::new(left).await;
        Err(TransportError::Timeout)
    })
    .await
}

fn glommio_err(e: glommio::GlommioError<()>) -> TransportError {
    TransportError::Network(io::Error::other(e.to_string()))
}

/// Sends `q` to `server` over UDP and waits up to `timeout` for a matching answer. Replies that
/// do not match are discarded (and counted in `discarded`) while the wait goes on.
pub async fn udp_exchange(
    server: SocketAddr,
    q: &Question,
    timeout: Duration,
    discarded: &std::cell::Cell<u64>,
) -> Result<Message, TransportError> {
    let deadline = Instant::now() + timeout;
    let id = random_id();
    let query = encode_query(id, q)?;
    let socket = udp_socket_for(server).map_err(TransportError::Network)?;
    until(deadline, async {
        socket.send(&query).await.map_err(glommio_err)?;
        Ok(())
    })
    .await?;
    let mut buf = vec![0u8; UDP_RECV_BUF];
    loop {
        // `recv_from` rather than glommio's `recv`, which asks the kernel for the peer's
        // address (getpeername) on every call; the socket is connected, so only the server's
        // datagrams arrive, and the sender is checked all the same.
        let (n, from) = until(deadline, async {
            socket.recv_from(&mut buf).await.map_err(glommio_err)
        })
        .await?;
        if (from.ip(), from.port()) != (server.ip(), server.port()) {
            discarded.set(discarded.get() + 1);
            continue;
        }
        let Some(datagram) = buf.get(..n) else {
            return Err(TransportError::Malformed("datagram length".into()));
        };
        match check_response(datagram, id, q) {
            Verdict::Accept(msg) => return Ok(msg),
            Verdict::Discard => discarded.set(discarded.get() + 1),
            Verdict::Malformed(why) => return Err(TransportError::Malformed(why)),
        }
    }
}

/// Sends `q` to `server` over TCP (RFC 1035 §4.2.2 two-byte length framing; used after a
/// truncated UDP answer) and reads one answer, all within `timeout`.
pub async fn tcp_exchange(
    server: SocketAddr,
    q: &Question,
    timeout: Duration,
) -> Result<Message, TransportError> {
    let deadline = Instant::now() + timeout;
    let id = random_id();
    let query = encode_query(id, q)?;
    let len = u16::try_from(query.len())
        .map_err(|_| TransportError::Malformed("query longer than 65535 bytes".into()))?;
    until(deadline, async {
        let mut stream = glommio::net::TcpStream::connect(server)
            .await
            .map_err(glommio_err)?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&query);
        stream
            .write_all(&framed)
            .await
            .map_err(TransportError::Network)?;
        let mut len_buf = [0u8; 2];
        stream
            .read_exact(&mut len_buf)
            .await
            .map_err(TransportError::Network)?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len_buf))];
        stream
            .read_exact(&mut answer)
            .await
            .map_err(TransportError::Network)?;
        match check_response(&answer, id, q) {
            Verdict::Accept(msg) => Ok(msg),
            Verdict::Discard => Err(TransportError::Malformed(
                "TCP answer does not match the question".into(),
            )),
            Verdict::Malformed(why) => Err(TransportError::Malformed(why)),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::{RData, Record, rdata::A};

    fn question() -> Question {
        Question {
            name: Name::from_ascii("example.com.").unwrap(),
            rtype: RecordType::A,
            dnssec: false,
        }
    }

    fn answer_for(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
        let mut msg = Message::response(id, OpCode::Query);
        msg.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        msg.metadata.response_code = ResponseCode::NoError;
        msg.add_answer(Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        msg.to_vec().unwrap()
    }

    #[test]
    fn query_encodes_and_decodes() {
        let bytes = encode_query(0x1234, &question()).unwrap();
        let msg = Message::from_vec(&bytes).unwrap();
        assert_eq!(msg.metadata.id, 0x1234);
        assert!(msg.metadata.recursion_desired);
        assert_eq!(msg.queries.len(), 1);
        assert_eq!(
            msg.edns.as_ref().map(|e| e.max_payload()),
            Some(EDNS_PAYLOAD)
        );
        assert!(!msg.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok));
        let q = Question {
            dnssec: true,
            ..question()
        };
        let msg = Message::from_vec(&encode_query(1, &q).unwrap()).unwrap();
        assert!(msg.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok));
    }

    #[test]
    fn matching_answer_is_accepted_case_insensitively() {
        let bytes = answer_for(7, "EXAMPLE.com.", RecordType::A);
        assert!(matches!(
            check_response(&bytes, 7, &question()),
            Verdict::Accept(_)
        ));
    }

    #[test]
    fn mismatches_are_discarded() {
        let q = question();
        let wrong_id = answer_for(8, "example.com.", RecordType::A);
        assert!(matches!(check_response(&wrong_id, 7, &q), Verdict::Discard));
        let wrong_name = answer_for(7, "example.net.", RecordType::A);
        assert!(matches!(
            check_response(&wrong_name, 7, &q),
            Verdict::Discard
        ));
        let wrong_type = answer_for(7, "example.com.", RecordType::AAAA);
        assert!(matches!(
            check_response(&wrong_type, 7, &q),
            Verdict::Discard
        ));
        // A query (QR = 0) echoed back is not an answer.
        let echoed = encode_query(7, &q).unwrap();
        assert!(matches!(check_response(&echoed, 7, &q), Verdict::Discard));
        assert!(matches!(check_response(&[], 7, &q), Verdict::Discard));
        assert!(matches!(check_response(&[0], 7, &q), Verdict::Discard));
    }

    #[test]
    fn garbage_with_our_id_is_malformed() {
        let mut bytes = answer_for(7, "example.com.", RecordType::A);
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(
            check_response(&bytes, 7, &question()),
            Verdict::Malformed(_)
        ));
    }

    /// A lookup's socket: non-blocking and close-on-exec from its creation, bound to a port
    /// of the wide random range, connected to the server (so the kernel drops datagrams from
    /// anyone else), and an answer from the server comes through.
    #[test]
    fn query_socket_is_nonblocking_connected_and_answers_arrive() {
        use std::os::fd::{AsRawFd, BorrowedFd};
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let server_addr = server.local_addr().unwrap();
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            assert!(n > 12);
            server
                .send_to(&answer_for(id, "example.com.", RecordType::A), from)
                .unwrap();
            from
        });
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let socket = udp_socket_for(server_addr).unwrap();
                let fd = socket.as_raw_fd();
                // SAFETY: `fd` is `socket`'s, open for the whole of this borrow.
                let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
                let sock = socket2::SockRef::from(&borrowed);
                let peer = sock.peer_addr().unwrap().as_socket().unwrap();
                assert_eq!(peer, server_addr);
                let local = sock.local_addr().unwrap().as_socket().unwrap();
                assert!(local.port() >= 1024, "{local}");
                // SAFETY: plain fcntl queries on an open descriptor.
                let (fl, fd_fl) = unsafe {
                    (
                        libc::fcntl(fd, libc::F_GETFL),
                        libc::fcntl(fd, libc::F_GETFD),
                    )
                };
                assert_ne!(fl & libc::O_NONBLOCK, 0);
                assert_ne!(fd_fl & libc::FD_CLOEXEC, 0);
                drop(socket);
                let discarded = std::cell::Cell::new(0);
                let msg =
                    udp_exchange(server_addr, &question(), Duration::from_secs(5), &discarded)
                        .await
                        .unwrap();
                assert_eq!(msg.answers.len(), 1);
                assert_eq!(discarded.get(), 0);
            })
            .unwrap()
            .join()
            .unwrap();
        responder.join().unwrap();
    }

    proptest::proptest! {
        #[test]
        fn check_response_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), id: u16) {
            let _ = check_response(&bytes, id, &question());
        }
    }
}
