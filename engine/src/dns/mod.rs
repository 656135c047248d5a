//! DNS on the cores: an asynchronous stub resolver for mail lookups.
//!
//! smtpd needs PTR and A lookups (`reject_unknown_client_hostname`, `reject_rbl_client`) and the
//! smtp client needs MX, A and AAAA. The cores run glommio and must never block, so the C
//! library's resolver is out; this module sends its own queries — encoded and decoded with
//! hickory-proto — over glommio's UDP, and retries over TCP when an answer is truncated.
//!
//! # Shape
//!
//! One [`Resolver`] per core. It is deliberately not `Send`: it lives on its core's executor,
//! its cache is a `RefCell<HashMap>` and its counters are `Cell`s, so a lookup takes no lock and
//! a cache hit costs a hash and a reference-count bump. Cores never share answers; a name looked
//! up on every core is queried once per core per TTL, which is cheap next to a cross-core
//! message.
//!
//! - [`ResolverConfig`] — name servers (from `/etc/resolv.conf`, or `corepost_dns_servers`),
//!   per-try timeout, attempts, and the cache's TTL floor and ceilings.
//! - Lookups: [`Resolver::lookup_mx`], [`Resolver::lookup_a`], [`Resolver::lookup_aaaa`],
//!   [`Resolver::lookup_ip`], [`Resolver::lookup_ptr`], [`Resolver::lookup_txt`], and the generic
//!   [`Resolver::lookup`]. CNAME chains are followed (at most [`MAX_CNAME_CHAIN`] links).
//! - Next hops for the smtp client: [`Resolver::resolve_nexthop`] in [`nexthop`], with Postfix's
//!   syntax (`[host]:port` skips MX) and its MX rules (preference order, random among equals,
//!   implicit MX, null MX, `smtp_mx_address_limit`).
//! - [`DnsError`] separates "does not exist" (NXDOMAIN, NODATA, null MX: a 5xx / bounce) from
//!   "try later" (SERVFAIL, timeout, network: a 4xx / deferral), and prints Postfix's texts.
//!
//! # What happens on a lookup
//!
//! 1. The name is made fully qualified (no search list: mail names are absolute) and lower-cased
//!    for the cache key.
//! 2. Cache hit → done. Another task already asking the same question → wait for its answer
//!    (in-flight de-duplication). Otherwise this task leads: see [`cache`].
//! 3. For each attempt, for each name server in order: one UDP exchange with a random id and
//!    source port, a per-try timeout, and a reply checked against the question ([`transport`]).
//!    Truncated → the same server over TCP. NOERROR and NXDOMAIN are final; SERVFAIL, REFUSED,
//!    other rcodes, timeouts and socket errors move on to the next server.
//! 4. The answer section is walked from the query name along CNAMEs; records owned by other
//!    names are ignored (they could only be poisoning attempts). A chain that ends without data
//!    is re-queried from its last name.
//! 5. The outcome is cached: positive answers for the chain's smallest TTL, negative ones for the
//!    SOA's negative TTL, temporary failures briefly — all clamped (see [`ResolverConfig`]).
//!
//! With [`ResolverConfig::dnssec`] (`smtp_dns_support_level = dnssec`) every query carries the
//! EDNS DO bit and an answer counts as authenticated when the name server set AD on every
//! message of it (the whole CNAME chain); the flag is cached with the answer
//! ([`Resolver::lookup_secure`], [`Destination::mx_secure`]/[`Destination::secure`]). Like
//! Postfix, corepost checks no signatures: the name servers must be a validating resolver on a
//! trusted path. DANE ([`crate::delivery::smtp::dane`]) is what uses it.
//!
//! The test support in [`testserver`] is a small authoritative server on loopback that the tests
//! and the benchmark (`engine/benches/dns.rs`) run against; no test touches the machine's
//! resolver.

pub mod cache;
pub mod hosts;
pub mod nexthop;
pub mod resolv_conf;
pub mod testserver;
pub mod transport;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use corepost_config::{Config, ConfigError};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use cache::{Answer, Cache, InFlight, Key, LeaderGuard, Outcome, Settled};
use transport::{Question, TransportError};

pub use nexthop::{
    AddressPreference, Destination, DnsSupport, HostLookup, Nexthop, NexthopError, NexthopOptions,
    parse_nexthop,
};
pub use resolv_conf::{ResolvConf, ServerSyntaxError, parse_server};

/// Most CNAME links followed for one lookup (across re-queries).
pub const MAX_CNAME_CHAIN: usize = 8;

/// The resolver's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Name servers, tried in order on each attempt. Must not be empty.
    pub nameservers: Vec<SocketAddr>,
    /// How long one try (one query to one server, including a TCP retry) may take.
    pub timeout: Duration,
    /// Rounds over all name servers.
    pub attempts: u32,
    /// Floor for cached TTLs (positive and negative); also the negative TTL when an answer
    /// carries no SOA.
    pub min_ttl: Duration,
    /// Ceiling for positive TTLs.
    pub max_ttl: Duration,
    /// Ceiling for negative (NXDOMAIN/NODATA) TTLs.
    pub max_negative_ttl: Duration,
    /// How long a temporary failure (SERVFAIL, timeout) is remembered; zero: not at all.
    pub failure_ttl: Duration,
    /// Most cached answers.
    pub cache_size: usize,
    /// Ask for DNSSEC (the EDNS DO bit) and believe the AD bit of answers: Postfix's
    /// `smtp_dns_support_level = dnssec`. corepost validates no signatures itself: like Postfix
    /// it trusts the AD bit of the configured name servers, so they must be a validating
    /// resolver reached over a trusted path (normally one on the same host).
    pub dnssec: bool,
}

impl ResolverConfig {
    /// Default TTL floor.
    pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(5);
    /// Default positive TTL ceiling: one day.
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(86_400);
    /// Default negative TTL ceiling: one hour (RFC 2308 §5 suggests one to three).
    pub const DEFAULT_MAX_NEGATIVE_TTL: Duration = Duration::from_secs(3_600);
    /// Default time a SERVFAIL/timeout is remembered.
    pub const DEFAULT_FAILURE_TTL: Duration = Duration::from_secs(5);
    /// Default cache size (per core): room for the MX, A and AAAA answers of ~30,000
    /// destinations (~200 bytes each, so at most ~20 MB). With 10,000 the answers of 10,000
    /// destinations did not fit and most lookups went to the name server again.
    pub const DEFAULT_CACHE_SIZE: usize = 100_000;

    /// Name servers, timeout and attempts from a parsed resolv.conf; cache defaults.
    pub fn from_resolv_conf(conf: &ResolvConf) -> ResolverConfig {
        ResolverConfig {
            nameservers: conf.nameservers.clone(),
            timeout: conf.timeout,
            attempts: conf.attempts,
            min_ttl: Self::DEFAULT_MIN_TTL,
            max_ttl: Self::DEFAULT_MAX_TTL,
            max_negative_ttl: Self::DEFAULT_MAX_NEGATIVE_TTL,
            failure_ttl: Self::DEFAULT_FAILURE_TTL,
            cache_size: Self::DEFAULT_CACHE_SIZE,
            dnssec: false,
        }
    }

    /// resolv.conf's defaults (timeout, attempts) with these name servers.
    pub fn with_servers(nameservers: Vec<SocketAddr>) -> ResolverConfig {
        ResolverConfig {
            nameservers,
            ..Self::from_resolv_conf(&ResolvConf::default())
        }
    }

    /// From corepost's configuration: `corepost_dns_servers` when set, else the name servers in
    /// `resolv_conf` (normally `/etc/resolv.conf`, read here — call this at start-up, not on a
    /// core's hot path). resolv.conf's timeout and attempts apply in both cases. Pass
    /// [`resolv_conf::RESOLV_CONF`] for the system's file.
    pub fn from_config(
        config: &Config,
        resolv_conf: &Path,
    ) -> Result<ResolverConfig, DnsConfigError> {
        let servers = config
            .get_list("corepost_dns_servers")
            .map_err(DnsConfigError::Config)?;
        let conf = ResolvConf::load(resolv_conf);
        let mut rc = ResolverConfig::from_resolv_conf(&conf);
        if !servers.is_empty() {
            rc.nameservers = servers
                .iter()
                .map(|s| parse_server(s))
                .collect::<Result<_, _>>()
                .map_err(DnsConfigError::Server)?;
        }
        Ok(rc)
    }
}

/// A configuration problem found by [`ResolverConfig::from_config`].
#[derive(Debug)]
pub enum DnsConfigError {
    Config(ConfigError),
    Server(ServerSyntaxError),
}

impl fmt::Display for DnsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsConfigError::Config(e) => e.fmt(f),
            DnsConfigError::Server(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DnsConfigError {}

/// Record data the resolver keeps, decoded from the wire. Names are lower-case ASCII (IDNs in
/// their `xn--` form) without the trailing dot; the root is the empty string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx {
        preference: u16,
        exchange: String,
    },
    Ptr(String),
    /// A TXT record's character-strings joined, as text (invalid UTF-8 replaced).
    Txt(String),
    /// A TLSA record (RFC 6698): certificate usage, selector, matching type, association data.
    Tlsa {
        usage: u8,
        selector: u8,
        mtype: u8,
        data: Vec<u8>,
    },
}

/// One MX record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MxHost {
    pub preference: u16,
    /// The exchange's name, lower-case, without the trailing dot.
    pub exchange: String,
}

/// What an MX lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxResult {
    /// MX records, preference ascending (ties in the order received; next-hop resolution
    /// shuffles them).
    Hosts(Vec<MxHost>),
    /// The domain exists but has no MX records: RFC 5321 §5.1 says to use the domain itself as
    /// the only host (its A/AAAA records), with preference 0.
    Implicit,
}

/// Why a lookup did not produce an answer. [`DnsError::is_permanent`] tells a 5xx from a 4xx.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsError {
    /// NXDOMAIN: the name does not exist.
    NotFound { name: String, rtype: &'static str },
    /// NOERROR without records of the type asked for.
    NoData { name: String, rtype: &'static str },
    /// RFC 7505 null MX (`MX 0 .`): the domain accepts no mail.
    NullMx { domain: String },
    /// The name cannot be looked up (empty, too long, bad label).
    InvalidName { name: String, reason: String },
    /// Try later: SERVFAIL, timeout, network trouble, a broken answer, an over-long CNAME chain.
    TempFail {
        name: String,
        rtype: &'static str,
        reason: TempReason,
    },
    /// MX hosts without any address, deferred rather than bounced
    /// (`smtp_defer_if_no_mx_address_found = yes`): the lookup error that
    /// ended the search, with a 4.x.x status.
    NoMxAddress(Box<DnsError>),
}

/// Why a lookup failed temporarily.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TempReason {
    /// No name server answered in time.
    Timeout,
    /// The last server answered SERVFAIL.
    ServFail,
    /// Another rcode (REFUSED, FORMERR, NOTIMP, ...).
    Rcode(String),
    /// A socket error (e.g. connection refused: nothing listens there).
    Network(String),
    /// An answer with our id that did not decode or did not fit.
    Malformed(String),
    /// More than [`MAX_CNAME_CHAIN`] CNAME links (or a loop).
    CnameChain,
    /// The system's host lookup (getaddrinfo) failed temporarily.
    System(String),
}

impl fmt::Display for TempReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TempReason::Timeout => f.write_str("timed out"),
            TempReason::ServFail => f.write_str("server failure (SERVFAIL)"),
            TempReason::Rcode(rcode) => write!(f, "name server replied {rcode}"),
            TempReason::Network(e) => write!(f, "network error: {e}"),
            TempReason::Malformed(e) => write!(f, "malformed reply: {e}"),
            TempReason::CnameChain => write!(f, "CNAME chain longer than {MAX_CNAME_CHAIN}"),
            TempReason::System(e) => write!(f, "system host lookup: {e}"),
        }
    }
}

impl DnsError {
    /// True for "does not exist" (reject or bounce); false for "try later".
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DnsError::TempFail { .. } | DnsError::NoMxAddress(_))
    }

    /// The RFC 3463 enhanced status code Postfix uses for this outcome.
    pub fn dsn(&self) -> &'static str {
        match self {
            DnsError::NotFound { .. } | DnsError::NoData { .. } => "5.4.4",
            DnsError::NullMx { .. } => "5.1.10",
            DnsError::InvalidName { .. } => "5.1.2",
            DnsError::TempFail { .. } => "4.4.3",
            // Postfix's SMTP_SET_SOFT_DSN: 5.4.4 becomes 4.4.4.
            DnsError::NoMxAddress(_) => "4.4.4",
        }
    }

    /// The detail behind a temporary failure, for a verbose log line.
    pub fn reason(&self) -> Option<&TempReason> {
        match self {
            DnsError::TempFail { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PREFIX: &str = "Host or domain name not found. Name service error for";
        match self {
            DnsError::NotFound { name, rtype } => {
                write!(f, "{PREFIX} name={name} type={rtype}: Host not found")
            }
            DnsError::NoData { name, rtype } => write!(
                f,
                "{PREFIX} name={name} type={rtype}: Host found but no data record of requested type"
            ),
            DnsError::NullMx { domain } => {
                write!(f, "Domain {domain} does not accept mail (nullMX)")
            }
            DnsError::InvalidName { name, reason } => {
                write!(f, "{PREFIX} name={name}: Malformed domain name: {reason}")
            }
            DnsError::TempFail { name, rtype, .. } => {
                write!(
                    f,
                    "{PREFIX} name={name} type={rtype}: Host not found, try again"
                )
            }
            DnsError::NoMxAddress(inner) => inner.fmt(f),
        }
    }
}

impl std::error::Error for DnsError {}

/// Counters for metrics and tests. Monotonic since [`Resolver::new`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolverStats {
    /// Lookups asked for (each type separately; `lookup_ip` counts two).
    pub lookups: u64,
    /// Answered from the cache.
    pub cache_hits: u64,
    /// Waited on another task's identical query.
    pub coalesced: u64,
    /// Queries put on the wire (every try, UDP and TCP).
    pub queries_sent: u64,
    /// Truncated UDP answers retried over TCP.
    pub tcp_fallbacks: u64,
    /// Datagrams discarded because they did not match the question.
    pub discarded_replies: u64,
}

#[derive(Default)]
struct Counters {
    lookups: Cell<u64>,
    cache_hits: Cell<u64>,
    coalesced: Cell<u64>,
    queries_sent: Cell<u64>,
    tcp_fallbacks: Cell<u64>,
    discarded_replies: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get().wrapping_add(1));
}

/// One core's resolver. Not `Send`: create one per core, on that core.
pub struct Resolver {
    config: ResolverConfig,
    /// [`ResolverConfig::dnssec`], changed by [`Resolver::set_dnssec`] (a reload).
    dnssec: Cell<bool>,
    cache: RefCell<Cache>,
    inflight: InFlight,
    counters: Counters,
}

/// A lookup name made fully qualified, with its cache key and its display form.
struct Fqdn {
    name: Name,
    /// Lower-case ASCII without the trailing dot: the cache key and the name in messages.
    text: String,
}

fn fqdn(input: &str) -> Result<Fqdn, DnsError> {
    let invalid = |reason: String| DnsError::InvalidName {
        name: input.to_string(),
        reason,
    };
    let trimmed = input.strip_suffix('.').unwrap_or(input);
    if trimmed.is_empty() {
        return Err(invalid("empty name".into()));
    }
    if trimmed.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(invalid("whitespace or control character".into()));
    }
    let parsed = if trimmed.is_ascii() {
        Name::from_ascii(trimmed)
    } else {
        Name::from_utf8(trimmed)
    };
    let mut name = parsed.map_err(|e| invalid(e.to_string()))?;
    name.set_fqdn(true);
    let name = name.to_lowercase();
    let text = name.to_ascii();
    let text = text.strip_suffix('.').unwrap_or(&text).to_string();
    Ok(Fqdn { name, text })
}

/// The cache key of a plain ASCII host name (letters, digits, `-`, `_`, dots) without parsing
/// it: lower-cased, trailing dot removed — the same text [`fqdn`] produces for such a name.
/// `None` for anything else (IDNs, escapes, odd syntax), which takes the parsing path. A name
/// that would not parse can only miss the cache, since only parsed names are ever stored.
fn fast_key(input: &str) -> Option<String> {
    let trimmed = input.strip_suffix('.').unwrap_or(input);
    let plain = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    plain.then(|| trimmed.to_ascii_lowercase())
}

fn rtype_str(rtype: RecordType) -> &'static str {
    rtype.into()
}

fn name_text(name: &Name) -> String {
    let ascii = name.to_lowercase().to_ascii();
    ascii.strip_suffix('.').unwrap_or(&ascii).to_string()
}

/// What one answer says about one question.
#[derive(Debug, PartialEq)]
enum Interpreted {
    Records {
        data: Vec<Rdata>,
        ttl: u32,
    },
    NxDomain {
        ttl: u32,
    },
    NoData {
        ttl: u32,
    },
    /// The answer ended at a CNAME target without data for it: ask again for `target`.
    Cname {
        target: Name,
        ttl: u32,
        links: usize,
    },
    ChainTooLong,
}

fn convert(data: &RData, rtype: RecordType) -> Option<Rdata> {
    match (data, rtype) {
        (RData::A(a), RecordType::A) => Some(Rdata::A(a.0)),
        (RData::AAAA(a), RecordType::AAAA) => Some(Rdata::Aaaa(a.0)),
        (RData::MX(mx), RecordType::MX) => Some(Rdata::Mx {
            preference: mx.preference,
            exchange: name_text(&mx.exchange),
        }),
        (RData::PTR(ptr), RecordType::PTR) => Some(Rdata::Ptr(name_text(&ptr.0))),
        (RData::TXT(txt), RecordType::TXT) => {
            let mut text = String::new();
            for chunk in txt.txt_data.iter() {
                text.push_str(&String::from_utf8_lossy(chunk));
            }
            Some(Rdata::Txt(text))
        }
        (RData::TLSA(t), RecordType::TLSA) => Some(Rdata::Tlsa {
            usage: t.cert_usage.into(),
            selector: t.selector.into(),
            mtype: t.matching.into(),
            data: t.cert_data.clone(),
        }),
        _ => None,
    }
}

/// RFC 2308 §5: the negative TTL is the lesser of the SOA record's TTL and its MINIMUM field.
fn negative_ttl(msg: &Message) -> Option<u32> {
    msg.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    })
}

/// Walks the answer section from `qname` along CNAMEs (at most `max_links`) and says what the
/// answer means. Only records owned by the names on the chain count.
fn interpret(msg: &Message, qname: &Name, rtype: RecordType, max_links: usize) -> Interpreted {
    let mut owner = qname.clone();
    let mut ttl = u32::MAX;
    let mut links = 0usize;
    loop {
        let mut data = Vec::new();
        let mut set_ttl = u32::MAX;
        for r in &msg.answers {
            if r.dns_class == DNSClass::IN
                && r.record_type() == rtype
                && r.name.eq_ignore_root(&owner)
                && let Some(d) = convert(&r.data, rtype)
            {
                if !data.contains(&d) {
                    data.push(d);
                }
                set_ttl = set_ttl.min(r.ttl);
            }
        }
        if !data.is_empty() {
            return Interpreted::Records {
                data,
                ttl: ttl.min(set_ttl),
            };
        }
        let next = msg.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c) if r.dns_class == DNSClass::IN && r.name.eq_ignore_root(&owner) => {
                Some((c.0.clone(), r.ttl))
            }
            _ => None,
        });
        match next {
            Some((target, link_ttl)) => {
                links += 1;
                if links > max_links {
                    return Interpreted::ChainTooLong;
                }
                ttl = ttl.min(link_ttl);
                owner = target;
            }
            None => break,
        }
    }
    let neg = negative_ttl(msg).unwrap_or(0).min(ttl);
    if msg.metadata.response_code == ResponseCode::NXDomain {
        Interpreted::NxDomain { ttl: neg }
    } else if links > 0 {
        Interpreted::Cname {
            target: owner,
            ttl,
            links,
        }
    } else {
        Interpreted::NoData { ttl: neg }
    }
}

impl Resolver {
    /// A resolver with an empty cache. Call on the core that will use it.
    pub fn new(config: ResolverConfig) -> Resolver {
        Resolver {
            cache: RefCell::new(Cache::new(config.cache_size)),
            inflight: RefCell::new(HashMap::new()),
            counters: Counters::default(),
            dnssec: Cell::new(config.dnssec),
            config,
        }
    }

    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// Turns DNSSEC (the DO bit, believing AD) on or off from now on, e.g. when a reload
    /// changed `smtp_dns_support_level`. Answers cached before keep the flag they came with.
    pub fn set_dnssec(&self, on: bool) {
        self.dnssec.set(on);
    }

    /// Whether queries ask for DNSSEC now.
    pub fn dnssec(&self) -> bool {
        self.dnssec.get()
    }

    pub fn stats(&self) -> ResolverStats {
        let c = &self.counters;
        ResolverStats {
            lookups: c.lookups.get(),
            cache_hits: c.cache_hits.get(),
            coalesced: c.coalesced.get(),
            queries_sent: c.queries_sent.get(),
            tcp_fallbacks: c.tcp_fallbacks.get(),
            discarded_replies: c.discarded_replies.get(),
        }
    }

    /// Forgets every cached answer (in-flight queries are unaffected).
    pub fn clear_cache(&self) {
        self.cache.borrow_mut().clear();
    }

    /// Number of cached answers (positive, negative and failures).
    pub fn cache_len(&self) -> usize {
        self.cache.borrow().len()
    }

    /// MX records of `domain`. No MX records → [`MxResult::Implicit`]; a null MX (`MX 0 .`,
    /// RFC 7505) → [`DnsError::NullMx`]; NXDOMAIN → [`DnsError::NotFound`].
    pub async fn lookup_mx(&self, domain: &str) -> Result<MxResult, DnsError> {
        self.lookup_mx_secure(domain).await.0
    }

    /// [`Resolver::lookup_mx`], and whether the MX RRset was authenticated (DNSSEC).
    pub async fn lookup_mx_secure(&self, domain: &str) -> (Result<MxResult, DnsError>, bool) {
        let answer = self.lookup_secure(domain, RecordType::MX).await;
        (mx_result(domain, answer.outcome), answer.secure)
    }

    /// TLSA records of `name` (`_25._tcp.mx.example.com`), and whether they were authenticated.
    pub async fn lookup_tlsa(&self, name: &str) -> (Result<Vec<Rdata>, DnsError>, bool) {
        let answer = self.lookup_secure(name, RecordType::TLSA).await;
        let records = answer.outcome.map(|r| {
            r.iter()
                .filter(|d| matches!(d, Rdata::Tlsa { .. }))
                .cloned()
                .collect()
        });
        (records, answer.secure)
    }

    /// IPv4 addresses of `host`.
    pub async fn lookup_a(&self, host: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
        let records = self.lookup(host, RecordType::A).await?;
        Ok(records
            .iter()
            .filter_map(|r| match r {
                Rdata::A(a) => Some(*a),
                _ => None,
            })
            .collect())
    }

    /// IPv6 addresses of `host`.
    pub async fn lookup_aaaa(&self, host: &str) -> Result<Vec<Ipv6Addr>, DnsError> {
        let records = self.lookup(host, RecordType::AAAA).await?;
        Ok(records
            .iter()
            .filter_map(|r| match r {
                Rdata::Aaaa(a) => Some(*a),
                _ => None,
            })
            .collect())
    }

    /// IPv4 and IPv6 addresses of `host` (A and AAAA queried concurrently; IPv4 first). Succeeds
    /// if either family has addresses; otherwise a temporary failure of either wins (the other
    /// family might exist), then NXDOMAIN, then NODATA.
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let (v4, v6) = futures_lite::future::zip(self.lookup_a(host), self.lookup_aaaa(host)).await;
        merge_families(host, v4, v6)
    }

    /// Host names of `ip` (PTR of its `in-addr.arpa` / `ip6.arpa` name).
    pub async fn lookup_ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let name = name_text(&Name::from(ip));
        let records = self.lookup(&name, RecordType::PTR).await?;
        Ok(records
            .iter()
            .filter_map(|r| match r {
                Rdata::Ptr(p) => Some(p.clone()),
                _ => None,
            })
            .collect())
    }

    /// TXT records of `name`, each record's strings joined.
    pub async fn lookup_txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let records = self.lookup(name, RecordType::TXT).await?;
        Ok(records
            .iter()
            .filter_map(|r| match r {
                Rdata::Txt(t) => Some(t.clone()),
                _ => None,
            })
            .collect())
    }

    /// The records of type `rtype` (A, AAAA, MX, PTR, TXT or TLSA) for `name`, from the cache,
    /// from a query already in flight, or from the name servers.
    pub async fn lookup(&self, name: &str, rtype: RecordType) -> Outcome {
        self.lookup_secure(name, rtype).await.outcome
    }

    /// [`Resolver::lookup`], and whether the answer was authenticated (`secure`: asked with DO
    /// and answered with AD, along the whole CNAME chain; never without
    /// [`ResolverConfig::dnssec`]).
    pub async fn lookup_secure(&self, name: &str, rtype: RecordType) -> Answer {
        let insecure = |outcome| Answer {
            outcome,
            secure: false,
        };
        // Hits (the common case) skip parsing the name; misses parse it once.
        let mut parsed = None;
        let key_text = match fast_key(name) {
            Some(text) => text,
            None => {
                let fq = match fqdn(name) {
                    Ok(fq) => fq,
                    Err(e) => return insecure(Err(e)),
                };
                let text = fq.text.clone();
                parsed = Some(fq);
                text
            }
        };
        bump(&self.counters.lookups);
        let key: Key = (key_text, u16::from(rtype));
        loop {
            let hit = self.cache.borrow_mut().get(&key, Instant::now());
            if let Some(hit) = hit {
                bump(&self.counters.cache_hits);
                crate::metrics::dns(crate::metrics::Dns::Hit);
                return hit;
            }
            let pending = self.inflight.borrow().get(&key).cloned();
            if let Some(pending) = pending {
                bump(&self.counters.coalesced);
                crate::metrics::dns(crate::metrics::Dns::Coalesced);
                match pending.wait().await {
                    Settled::Done(outcome) => return outcome,
                    Settled::Abandoned => continue,
                }
            }
            let fq = match parsed.take().map_or_else(|| fqdn(name), Ok) {
                Ok(fq) => fq,
                Err(e) => return insecure(Err(e)),
            };
            debug_assert_eq!(fq.text, key.0, "fast_key and fqdn agree");
            let guard = LeaderGuard::new(&self.inflight, key.clone());
            crate::metrics::dns(crate::metrics::Dns::Miss);
            let (answer, ttl) = self.resolve(&fq, rtype).await;
            self.cache
                .borrow_mut()
                .insert(key, answer.clone(), ttl, Instant::now());
            guard.finish(answer.clone());
            return answer;
        }
    }

    fn clamp_positive(&self, ttl: u32) -> Duration {
        Duration::from_secs(u64::from(ttl)).clamp(
            self.config.min_ttl,
            self.config.max_ttl.max(self.config.min_ttl),
        )
    }

    fn clamp_negative(&self, ttl: u32) -> Duration {
        Duration::from_secs(u64::from(ttl)).clamp(
            self.config.min_ttl,
            self.config.max_negative_ttl.max(self.config.min_ttl),
        )
    }

    /// Resolves without the cache: follows CNAMEs across re-queries. Returns the answer (secure
    /// only when every message on the way carried AD) and how long to cache it.
    async fn resolve(&self, fq: &Fqdn, rtype: RecordType) -> (Answer, Duration) {
        let mut secure = self.dnssec.get();
        let (outcome, ttl) = self.resolve_chain(fq, rtype, &mut secure).await;
        let secure = secure && outcome.as_ref().map_or_else(|e| e.is_permanent(), |_| true);
        (Answer { outcome, secure }, ttl)
    }

    async fn resolve_chain(
        &self,
        fq: &Fqdn,
        rtype: RecordType,
        secure: &mut bool,
    ) -> (Outcome, Duration) {
        let rname = rtype_str(rtype);
        let temp = |reason| DnsError::TempFail {
            name: fq.text.clone(),
            rtype: rname,
            reason,
        };
        let mut current = fq.name.clone();
        let mut links = 0usize;
        let mut chain_ttl = u32::MAX;
        loop {
            let msg = match self.exchange(&current, rtype).await {
                Ok(msg) => msg,
                Err(reason) => return (Err(temp(reason)), self.config.failure_ttl),
            };
            *secure &= msg.metadata.authentic_data;
            match interpret(&msg, &current, rtype, MAX_CNAME_CHAIN.saturating_sub(links)) {
                Interpreted::Records { data, ttl } => {
                    return (Ok(Rc::from(data)), self.clamp_positive(ttl.min(chain_ttl)));
                }
                Interpreted::NxDomain { ttl } => {
                    let e = DnsError::NotFound {
                        name: fq.text.clone(),
                        rtype: rname,
                    };
                    return (Err(e), self.clamp_negative(ttl.min(chain_ttl)));
                }
                Interpreted::NoData { ttl } => {
                    let e = DnsError::NoData {
                        name: fq.text.clone(),
                        rtype: rname,
                    };
                    return (Err(e), self.clamp_negative(ttl.min(chain_ttl)));
                }
                Interpreted::Cname {
                    target,
                    ttl,
                    links: more,
                } => {
                    links += more;
                    chain_ttl = chain_ttl.min(ttl);
                    current = target;
                }
                Interpreted::ChainTooLong => {
                    return (Err(temp(TempReason::CnameChain)), self.config.failure_ttl);
                }
            }
        }
    }

    /// One question to the name servers: every attempt, every server, until a NOERROR or
    /// NXDOMAIN answer.
    async fn exchange(&self, name: &Name, rtype: RecordType) -> Result<Message, TempReason> {
        let question = Question {
            name: name.clone(),
            rtype,
            dnssec: self.dnssec.get(),
        };
        let mut last = TempReason::Timeout;
        if self.config.nameservers.is_empty() {
            return Err(TempReason::Network("no name servers configured".into()));
        }
        for _ in 0..self.config.attempts.max(1) {
            for &server in &self.config.nameservers {
                bump(&self.counters.queries_sent);
                crate::metrics::dns(crate::metrics::Dns::Query);
                let reply = transport::udp_exchange(
                    server,
                    &question,
                    self.config.timeout,
                    &self.counters.discarded_replies,
                )
                .await;
                let reply = match reply {
                    Ok(msg) if msg.metadata.truncation => {
                        bump(&self.counters.tcp_fallbacks);
                        bump(&self.counters.queries_sent);
                        crate::metrics::dns(crate::metrics::Dns::Query);
                        transport::tcp_exchange(server, &question, self.config.timeout).await
                    }
                    other => other,
                };
                match reply {
                    Ok(msg) => match msg.metadata.response_code {
                        ResponseCode::NoError | ResponseCode::NXDomain => return Ok(msg),
                        ResponseCode::ServFail => last = TempReason::ServFail,
                        rcode => {
                            last = TempReason::Rcode(format!("{rcode:?}").to_ascii_uppercase())
                        }
                    },
                    Err(TransportError::Timeout) => last = TempReason::Timeout,
                    Err(TransportError::Network(e)) => last = TempReason::Network(e.to_string()),
                    Err(TransportError::Malformed(e)) => last = TempReason::Malformed(e),
                }
            }
        }
        Err(last)
    }
}

/// What an MX answer means: hosts in preference order, an implicit MX (NODATA, or no usable
/// record), or RFC 7505's null MX.
fn mx_result(domain: &str, outcome: Outcome) -> Result<MxResult, DnsError> {
    let records = match outcome {
        Ok(records) => records,
        Err(DnsError::NoData { .. }) => return Ok(MxResult::Implicit),
        Err(e) => return Err(e),
    };
    let mut hosts: Vec<MxHost> = records
        .iter()
        .filter_map(|r| match r {
            Rdata::Mx {
                preference,
                exchange,
            } => Some(MxHost {
                preference: *preference,
                exchange: exchange.clone(),
            }),
            _ => None,
        })
        .collect();
    // RFC 7505 says a null MX must be the only MX; a domain that publishes one next to
    // others has still said it wants no mail, so any null MX wins.
    if hosts.iter().any(|h| h.exchange.is_empty()) {
        return Err(DnsError::NullMx {
            domain: fqdn(domain)?.text,
        });
    }
    if hosts.is_empty() {
        return Ok(MxResult::Implicit);
    }
    hosts.sort_by_key(|h| h.preference);
    Ok(MxResult::Hosts(hosts))
}

/// Combines an A and an AAAA outcome into one address list (see [`Resolver::lookup_ip`]).
fn merge_families(
    host: &str,
    v4: Result<Vec<Ipv4Addr>, DnsError>,
    v6: Result<Vec<Ipv6Addr>, DnsError>,
) -> Result<Vec<IpAddr>, DnsError> {
    let v4 = v4.map(|a| a.into_iter().map(IpAddr::V4).collect());
    let v6 = v6.map(|a| a.into_iter().map(IpAddr::V6).collect());
    merge_secure_families(host, v4, v6)
}

/// [`merge_families`] for addresses of either family already converted (with or without
/// their authentication flag).
fn merge_secure_families<T>(
    host: &str,
    v4: Result<Vec<T>, DnsError>,
    v6: Result<Vec<T>, DnsError>,
) -> Result<Vec<T>, DnsError> {
    let mut addrs: Vec<T> = Vec::new();
    let (v4, v6) = match (v4, v6) {
        (Ok(a), Ok(b)) => {
            addrs.extend(a);
            addrs.extend(b);
            (None, None)
        }
        (Ok(a), Err(e)) => {
            addrs.extend(a);
            (None, Some(e))
        }
        (Err(e), Ok(b)) => {
            addrs.extend(b);
            (Some(e), None)
        }
        (Err(a), Err(b)) => (Some(a), Some(b)),
    };
    if !addrs.is_empty() {
        return Ok(addrs);
    }
    let errors = [v4, v6];
    let rank = |e: &DnsError| match e {
        DnsError::TempFail { .. } | DnsError::NoMxAddress(_) => 0,
        DnsError::InvalidName { .. } => 1,
        DnsError::NotFound { .. } => 2,
        DnsError::NullMx { .. } => 3,
        DnsError::NoData { .. } => 4,
    };
    let best = errors.into_iter().flatten().min_by_key(rank);
    // Both lists empty without an error cannot come from DNS (an empty answer is NODATA),
    // but say NODATA rather than pretend success.
    Err(best.unwrap_or_else(|| DnsError::NoData {
        name: host.to_string(),
        rtype: "A",
    }))
}

#[cfg(test)]
mod tests;
