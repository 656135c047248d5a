//! Test support: a small authoritative DNS server on loopback.
//!
//! The resolver's tests, its benchmark and (later) smtpd's and the smtp client's tests need name
//! servers whose answers they control — and must never ask the machine's real resolver. This
//! server answers from a table of records and can be told, per name or for everything, to drop
//! queries, delay them, truncate the UDP answer (forcing TCP), answer SERVFAIL or REFUSED, or
//! send forged replies (wrong id, wrong question) ahead of the real one.
//!
//! It runs on its own threads with `std::net` sockets — deliberately not on glommio, so it is
//! independent of the code under test and deterministic. UDP and TCP listen on the same port of a
//! loopback address.
//!
//! Zone semantics are those of an authoritative server for every name in the table:
//! - records of the asked type at the name → NOERROR with them;
//! - a CNAME at the name → the CNAME, followed inside the table (unless
//!   [`TestServer::set_follow_cname`] turned that off), the rcode describing the chain's end;
//! - a name that owns records of other types only → NODATA (NOERROR, no answers, SOA);
//! - a name that owns no records → NXDOMAIN with an SOA.
//!
//! DNSSEC is simulated the way a validating resolver presents it to a stub: names marked with
//! [`TestServer::set_secure`] (or everything, [`TestServer::set_default_secure`]) count as
//! signed and validated, and an answer gets the AD bit when the query set DO (or AD) and every
//! name it involves (the question, each record's owner) is secure. No signatures are served.
//!
//! The SOA's TTL and MINIMUM are the negative TTL ([`TestServer::set_negative_ttl`], default 60).
//! A UDP answer larger than the query's EDNS payload (512 without EDNS) is truncated, as a real
//! server would.
//!
//! Input is untrusted even here: a query that does not decode gets FORMERR (or nothing if it has
//! no id), never a panic.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SOA, TLSA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// What the server does with a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer from the table.
    Answer,
    /// Never answer.
    Drop,
    /// Answer from the table after this long.
    Delay(Duration),
    /// Over UDP, answer with the TC bit and no records; over TCP, answer normally.
    Truncate,
    /// Answer SERVFAIL.
    ServFail,
    /// Answer REFUSED.
    Refused,
    /// Over UDP, first send a reply with another id and a reply for another question, then the
    /// real answer (a resolver must discard the first two).
    Forge,
}

/// How a query arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    Udp,
    Tcp,
}

struct State {
    /// Records by owner name (lower case, no trailing dot), so a table of tens of thousands
    /// of names (the many-destinations benchmark) answers as fast as a small one.
    records: HashMap<String, Vec<Record>>,
    behaviours: HashMap<String, Behaviour>,
    default_behaviour: Behaviour,
    follow_cname: bool,
    negative_ttl: u32,
    /// Names whose answers are "validated" (AD); see the module doc.
    secure: std::collections::HashSet<String>,
    default_secure: bool,
    counts: HashMap<(String, RecordType, Via), u64>,
    /// (query id, client address) of UDP queries, oldest first, at most `MAX_OBSERVED`.
    observed: Vec<(u16, SocketAddr)>,
}

const MAX_OBSERVED: usize = 10_000;

/// A running test server. Stops (and joins its threads) on drop.
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn key(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    lower.strip_suffix('.').unwrap_or(&lower).to_string()
}

fn name_key(name: &Name) -> String {
    key(&name.to_ascii())
}

fn parse_name(name: &str) -> Name {
    let mut n = Name::from_utf8(name.strip_suffix('.').unwrap_or(name))
        .unwrap_or_else(|e| panic!("test server: bad name {name:?}: {e}"));
    n.set_fqdn(true);
    n
}

impl TestServer {
    /// Starts a server on 127.0.0.1 (an ephemeral port, UDP and TCP).
    pub fn start() -> io::Result<TestServer> {
        TestServer::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Starts a server on a loopback address (`127.0.0.1` or `::1`).
    pub fn start_on(ip: IpAddr) -> io::Result<TestServer> {
        only_loopback(ip)?;
        TestServer::serve(bind_pair(ip)?)
    }

    /// Starts a server on a given loopback address and port (the benchmarks' name server on
    /// port 53, where the C library's resolver looks).
    pub fn start_at(addr: SocketAddr) -> io::Result<TestServer> {
        only_loopback(addr.ip())?;
        let udp = UdpSocket::bind(addr)?;
        let tcp = TcpListener::bind(udp.local_addr()?)?;
        TestServer::serve((udp, tcp))
    }

    fn serve((udp, tcp): (UdpSocket, TcpListener)) -> io::Result<TestServer> {
        let addr = udp.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            records: HashMap::new(),
            behaviours: HashMap::new(),
            default_behaviour: Behaviour::Answer,
            follow_cname: true,
            negative_ttl: 60,
            secure: std::collections::HashSet::new(),
            default_secure: false,
            counts: HashMap::new(),
            observed: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = vec![
            {
                let (state, stop) = (state.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("dns-test-udp".into())
                    .spawn(move || udp_loop(udp, state, stop))?
            },
            {
                let (state, stop) = (state.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("dns-test-tcp".into())
                    .spawn(move || tcp_loop(tcp, state, stop))?
            },
        ];
        Ok(TestServer {
            addr,
            state,
            stop,
            threads,
        })
    }

    /// The address (UDP and TCP) to point the resolver at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Adds a record. Panics on a malformed name (test input).
    pub fn add(&self, name: &str, ttl: u32, data: RData) {
        let record = Record::from_rdata(parse_name(name), ttl, data);
        self.push(record);
    }

    pub fn add_a(&self, name: &str, ttl: u32, ip: Ipv4Addr) {
        self.add(name, ttl, RData::A(A(ip)));
    }

    pub fn add_aaaa(&self, name: &str, ttl: u32, ip: std::net::Ipv6Addr) {
        self.add(name, ttl, RData::AAAA(AAAA(ip)));
    }

    /// An MX record; `exchange` `"."` makes a null MX.
    pub fn add_mx(&self, name: &str, ttl: u32, preference: u16, exchange: &str) {
        let exchange = if exchange == "." {
            Name::root()
        } else {
            parse_name(exchange)
        };
        self.add(name, ttl, RData::MX(MX::new(preference, exchange)));
    }

    pub fn add_cname(&self, name: &str, ttl: u32, target: &str) {
        self.add(name, ttl, RData::CNAME(CNAME(parse_name(target))));
    }

    /// A PTR record for `ip` (its reverse name).
    pub fn add_ptr(&self, ip: IpAddr, ttl: u32, host: &str) {
        let record = Record::from_rdata(Name::from(ip), ttl, RData::PTR(PTR(parse_name(host))));
        self.push(record);
    }

    fn push(&self, record: Record) {
        let owner = name_key(&record.name);
        self.state().records.entry(owner).or_default().push(record);
    }

    pub fn add_txt(&self, name: &str, ttl: u32, text: &[&str]) {
        let strings = text.iter().map(|s| s.to_string()).collect();
        self.add(name, ttl, RData::TXT(TXT::new(strings)));
    }

    /// A TLSA record (`_25._tcp.mx.example.com`): usage, selector, matching type, data.
    pub fn add_tlsa(&self, name: &str, ttl: u32, usage: u8, selector: u8, mtype: u8, data: &[u8]) {
        let tlsa = TLSA::new(usage.into(), selector.into(), mtype.into(), data.to_vec());
        self.add(name, ttl, RData::TLSA(tlsa));
    }

    /// Whether answers involving `name` count as DNSSEC-validated (the AD bit).
    pub fn set_secure(&self, name: &str, secure: bool) {
        let mut st = self.state();
        if secure {
            st.secure.insert(key(name));
        } else {
            st.secure.remove(&key(name));
        }
    }

    /// Whether every name counts as validated (default no); [`TestServer::set_secure`] adds
    /// names when this is off.
    pub fn set_default_secure(&self, secure: bool) {
        self.state().default_secure = secure;
    }

    /// Removes every record owned by `name`.
    pub fn remove(&self, name: &str) {
        let k = key(name);
        self.state().records.remove(&k);
    }

    /// What to do with queries for `name` (any type).
    pub fn set_behaviour(&self, name: &str, behaviour: Behaviour) {
        self.state().behaviours.insert(key(name), behaviour);
    }

    /// What to do with queries for names without their own behaviour.
    pub fn set_default_behaviour(&self, behaviour: Behaviour) {
        self.state().default_behaviour = behaviour;
    }

    /// Whether CNAME chains are followed inside the table (default yes).
    pub fn set_follow_cname(&self, follow: bool) {
        self.state().follow_cname = follow;
    }

    /// The negative TTL (SOA TTL and MINIMUM) in NXDOMAIN/NODATA answers.
    pub fn set_negative_ttl(&self, ttl: u32) {
        self.state().negative_ttl = ttl;
    }

    /// Queries received for `name`/`rtype` over `via`.
    pub fn count(&self, name: &str, rtype: RecordType, via: Via) -> u64 {
        self.state()
            .counts
            .get(&(key(name), rtype, via))
            .copied()
            .unwrap_or(0)
    }

    /// Queries received for `name`/`rtype`, UDP and TCP.
    pub fn count_all(&self, name: &str, rtype: RecordType) -> u64 {
        self.count(name, rtype, Via::Udp) + self.count(name, rtype, Via::Tcp)
    }

    /// All queries received.
    pub fn total(&self) -> u64 {
        self.state().counts.values().sum()
    }

    /// Forgets the query counts and observed sources.
    pub fn reset_counts(&self) {
        let mut st = self.state();
        st.counts.clear();
        st.observed.clear();
    }

    /// The (query id, client address) of every UDP query received (at most the last 10,000),
    /// to check that ids and source ports vary.
    pub fn observed_udp(&self) -> Vec<(u16, SocketAddr)> {
        self.state().observed.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread must not wedge the server for the others.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn only_loopback(ip: IpAddr) -> io::Result<()> {
    if ip.is_loopback() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the test DNS server listens on loopback only",
        ))
    }
}

/// UDP and TCP sockets on the same port.
fn bind_pair(ip: IpAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = io::Error::other("no port");
    for _ in 0..20 {
        let udp = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        match TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// What to send back for one query.
struct Reply {
    datagrams: Vec<Vec<u8>>,
    delay: Duration,
}

fn udp_loop(socket: UdpSocket, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    let mut delayed: Vec<(Instant, Vec<u8>, SocketAddr)> = Vec::new();
    let mut buf = vec![0u8; 65_535];
    const TICK: Duration = Duration::from_millis(5);
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        delayed.retain(|(due, bytes, peer)| {
            if *due <= now {
                let _ = socket.send_to(bytes, peer);
                false
            } else {
                true
            }
        });
        let wait = delayed
            .iter()
            .map(|(due, _, _)| due.saturating_duration_since(now))
            .min()
            .unwrap_or(TICK)
            .clamp(Duration::from_micros(100), TICK);
        if socket.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let Some(query) = buf.get(..n) else { continue };
        if let Some(h) = query.get(0..2) {
            let mut st = lock(&state);
            if st.observed.len() >= MAX_OBSERVED {
                st.observed.remove(0);
            }
            st.observed.push((u16::from_be_bytes([h[0], h[1]]), peer));
        }
        let Some(reply) = handle(&state, query, Via::Udp) else {
            continue;
        };
        if reply.delay.is_zero() {
            for d in &reply.datagrams {
                let _ = socket.send_to(d, peer);
            }
        } else {
            let due = Instant::now() + reply.delay;
            for d in reply.datagrams {
                delayed.push((due, d, peer));
            }
        }
    }
}

fn tcp_loop(listener: TcpListener, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (state, stop) = (state.clone(), stop.clone());
                if let Ok(h) = std::thread::Builder::new()
                    .name("dns-test-tcp-conn".into())
                    .spawn(move || tcp_conn(stream, state, stop))
                {
                    conns.push(h);
                }
                conns.retain(|h| !h.is_finished());
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    for h in conns {
        let _ = h.join();
    }
}

fn tcp_conn(mut stream: TcpStream, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .is_err()
    {
        return;
    }
    let idle_limit = Instant::now() + Duration::from_secs(5);
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) && Instant::now() < idle_limit {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(chunk.get(..n).unwrap_or(&[])),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(_) => return,
        }
        // Serve every complete length-prefixed message received so far.
        while let Some(len) = pending
            .get(0..2)
            .map(|h| usize::from(u16::from_be_bytes([h[0], h[1]])))
        {
            let Some(query) = pending.get(2..2 + len) else {
                break;
            };
            let reply = handle(&state, query, Via::Tcp);
            pending.drain(..2 + len);
            let Some(reply) = reply else { continue };
            if !reply.delay.is_zero() {
                std::thread::sleep(reply.delay);
            }
            for d in reply.datagrams {
                let Ok(len) = u16::try_from(d.len()) else {
                    continue;
                };
                let mut framed = len.to_be_bytes().to_vec();
                framed.extend_from_slice(&d);
                if stream.write_all(&framed).is_err() {
                    return;
                }
            }
        }
    }
}

/// Decides the reply to one query; `None` means silence.
fn handle(state: &Mutex<State>, bytes: &[u8], via: Via) -> Option<Reply> {
    let query = match Message::from_vec(bytes) {
        Ok(q) => q,
        Err(_) => {
            let id = bytes.get(0..2).map(|h| u16::from_be_bytes([h[0], h[1]]))?;
            let msg = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
            return Some(Reply {
                datagrams: vec![msg.to_vec().ok()?],
                delay: Duration::ZERO,
            });
        }
    };
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let id = query.metadata.id;
    let Some(question) = query.queries.first().cloned() else {
        let msg = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
        return Some(Reply {
            datagrams: vec![msg.to_vec().ok()?],
            delay: Duration::ZERO,
        });
    };
    let qkey = name_key(question.name());
    let mut st = lock(state);
    *st.counts
        .entry((qkey.clone(), question.query_type(), via))
        .or_insert(0) += 1;
    let behaviour = st
        .behaviours
        .get(&qkey)
        .cloned()
        .unwrap_or_else(|| st.default_behaviour.clone());

    let mut response = Message::response(id, OpCode::Query);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.add_query(question.clone());

    let mut delay = Duration::ZERO;
    match behaviour {
        Behaviour::Drop => return None,
        Behaviour::ServFail => {
            response.metadata.response_code = ResponseCode::ServFail;
            return Some(Reply {
                datagrams: vec![response.to_vec().ok()?],
                delay,
            });
        }
        Behaviour::Refused => {
            response.metadata.response_code = ResponseCode::Refused;
            return Some(Reply {
                datagrams: vec![response.to_vec().ok()?],
                delay,
            });
        }
        Behaviour::Truncate if via == Via::Udp => {
            response.metadata.truncation = true;
            return Some(Reply {
                datagrams: vec![response.to_vec().ok()?],
                delay,
            });
        }
        Behaviour::Delay(d) => delay = d,
        Behaviour::Answer | Behaviour::Truncate | Behaviour::Forge => {}
    }

    answer_from_table(
        &st,
        &question.name().clone(),
        question.query_type(),
        &mut response,
    );
    let wants_dnssec =
        query.metadata.authentic_data || query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
    let is_secure = |k: &str| st.default_secure || st.secure.contains(k);
    response.metadata.authentic_data = wants_dnssec
        && is_secure(&qkey)
        && response
            .answers
            .iter()
            .all(|r| is_secure(&name_key(&r.name)));
    drop(st);
    let mut bytes = response.to_vec().ok()?;
    if via == Via::Udp {
        let limit = query
            .edns
            .as_ref()
            .map(|e| usize::from(e.max_payload().max(512)))
            .unwrap_or(512);
        if bytes.len() > limit {
            bytes = response.truncate().to_vec().ok()?;
            // `truncate` keeps the header (with our id) and the question; set the flag it sets.
        }
    }
    let mut datagrams = Vec::new();
    if behaviour == Behaviour::Forge && via == Via::Udp {
        let mut wrong_id = response.clone();
        wrong_id.metadata.id = id.wrapping_add(1);
        datagrams.push(wrong_id.to_vec().ok()?);
        let mut wrong_q = response.clone();
        wrong_q.queries.clear();
        wrong_q.add_query(hickory_proto::op::Query::query(
            parse_name("forged.invalid"),
            question.query_type(),
        ));
        datagrams.push(wrong_q.to_vec().ok()?);
    }
    datagrams.push(bytes);
    Some(Reply { datagrams, delay })
}

fn soa(ttl: u32) -> Record {
    Record::from_rdata(
        Name::root(),
        ttl,
        RData::SOA(SOA::new(
            parse_name("ns.test"),
            parse_name("hostmaster.test"),
            1,
            3600,
            600,
            86_400,
            ttl,
        )),
    )
}

/// Fills `response` from the table: records, CNAME chain, NODATA or NXDOMAIN.
fn answer_from_table(st: &State, qname: &Name, qtype: RecordType, response: &mut Message) {
    let mut owner = qname.clone();
    for _ in 0..16 {
        let okey = name_key(&owner);
        let at_owner: Vec<&Record> = st
            .records
            .get(&okey)
            .into_iter()
            .flatten()
            .filter(|r| r.dns_class == DNSClass::IN)
            .collect();
        if at_owner.is_empty() {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(soa(st.negative_ttl));
            return;
        }
        let matching: Vec<Record> = at_owner
            .iter()
            .filter(|r| r.record_type() == qtype)
            .map(|r| (*r).clone())
            .collect();
        if !matching.is_empty() {
            response.add_answers(matching);
            return;
        }
        let cname = at_owner.iter().find_map(|r| match &r.data {
            RData::CNAME(c) => Some(((*r).clone(), c.0.clone())),
            _ => None,
        });
        match cname {
            Some((record, target)) => {
                response.add_answer(record);
                if !st.follow_cname {
                    return;
                }
                owner = target;
            }
            None => {
                response.add_authority(soa(st.negative_ttl));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Query};

    fn ask(server: &TestServer, name: &str, rtype: RecordType, edns: bool) -> Message {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut q = Message::new(4242, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(parse_name(name), rtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            q.set_edns(e);
        }
        socket.send_to(&q.to_vec().unwrap(), server.addr()).unwrap();
        let mut buf = [0u8; 65_535];
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    fn ask_tcp(server: &TestServer, name: &str, rtype: RecordType) -> Message {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut q = Message::new(77, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(parse_name(name), rtype));
        let bytes = q.to_vec().unwrap();
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).unwrap();
        Message::from_vec(&body).unwrap()
    }

    #[test]
    fn answers_nodata_nxdomain() {
        let s = TestServer::start().unwrap();
        s.add_a("host.test", 300, Ipv4Addr::new(192, 0, 2, 1));
        let m = ask(&s, "HOST.test", RecordType::A, true);
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1);
        let m = ask(&s, "host.test", RecordType::MX, true);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1, "NODATA carries an SOA");
        let m = ask(&s, "nope.test", RecordType::A, true);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(s.count("host.test", RecordType::A, Via::Udp), 1);
        assert_eq!(s.total(), 3);
    }

    #[test]
    fn follows_cname_inside_the_table() {
        let s = TestServer::start().unwrap();
        s.add_cname("alias.test", 300, "real.test");
        s.add_a("real.test", 300, Ipv4Addr::new(192, 0, 2, 2));
        let m = ask(&s, "alias.test", RecordType::A, true);
        assert_eq!(m.answers.len(), 2);
        s.set_follow_cname(false);
        let m = ask(&s, "alias.test", RecordType::A, true);
        assert_eq!(m.answers.len(), 1);
    }

    #[test]
    fn behaviours() {
        let s = TestServer::start().unwrap();
        s.add_a("host.test", 300, Ipv4Addr::new(192, 0, 2, 1));
        s.set_behaviour("host.test", Behaviour::ServFail);
        assert_eq!(
            ask(&s, "host.test", RecordType::A, true)
                .metadata
                .response_code,
            ResponseCode::ServFail
        );
        s.set_behaviour("host.test", Behaviour::Truncate);
        let m = ask(&s, "host.test", RecordType::A, true);
        assert!(m.metadata.truncation && m.answers.is_empty());
        let m = ask_tcp(&s, "host.test", RecordType::A);
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(s.count("host.test", RecordType::A, Via::Tcp), 1);
        s.set_behaviour("host.test", Behaviour::Delay(Duration::from_millis(100)));
        let t0 = Instant::now();
        let m = ask(&s, "host.test", RecordType::A, true);
        assert!(t0.elapsed() >= Duration::from_millis(100));
        assert_eq!(m.answers.len(), 1);
    }

    #[test]
    fn big_answers_truncate_by_payload_size() {
        let s = TestServer::start().unwrap();
        for i in 0..60u8 {
            s.add_a("many.test", 300, Ipv4Addr::new(198, 51, 100, i));
        }
        // 60 A records ≈ 1 KB: over 512 without EDNS, under 1232 with it.
        assert!(
            ask(&s, "many.test", RecordType::A, false)
                .metadata
                .truncation
        );
        assert!(
            !ask(&s, "many.test", RecordType::A, true)
                .metadata
                .truncation
        );
    }

    #[test]
    fn garbage_gets_formerr_or_silence() {
        let s = TestServer::start().unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        socket.send_to(&[0x12, 0x34, 0xff], s.addr()).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // A one-byte datagram has no id: silence, and the server keeps serving.
        socket.send_to(&[1], s.addr()).unwrap();
        s.add_a("ok.test", 1, Ipv4Addr::LOCALHOST);
        assert_eq!(ask(&s, "ok.test", RecordType::A, true).answers.len(), 1);
    }

    #[test]
    fn refuses_non_loopback() {
        assert!(TestServer::start_on("192.0.2.1".parse().unwrap()).is_err());
    }
}
