//! The name server of `benches/relay-vs-postfix.sh --domain-mix`: the loopback test server
//! (`corepost::dns::testserver`) answering for every domain of a corepost-source domain mix.
//!
//! `bench_dns ADDR:PORT MIX` — MIX has corepost-source's `--domain-mix` syntax (weights are
//! ignored; `tail:N[:suffix]` stands for `t0.suffix` … `t{N-1}.suffix`). Each domain gets an MX
//! record naming its own mail host `mx.<domain>`, whose A record is an address of its own in
//! 127.1.0.0/16 (the k-th domain: 127.1.k/256.k%256), so every domain is a destination with its
//! own lookups and its own server address, as on the Internet; the sink listens on 0.0.0.0:25.
//! Runs until killed.

use corepost::dns::testserver::TestServer;
use std::net::{Ipv4Addr, SocketAddr};

fn domains(mix: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in mix.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let name = item.split_once('=').map_or(item, |(n, _)| n).trim();
        match name.strip_prefix("tail:") {
            Some(rest) => {
                let (n, suffix) = rest.split_once(':').unwrap_or((rest, "tail.test"));
                let n: u32 = n
                    .parse()
                    .map_err(|_| format!("bad tail size in {name:?}"))?;
                out.extend((0..n).map(|i| format!("t{i}.{suffix}")));
            }
            None => out.push(name.to_string()),
        }
    }
    Ok(out)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(mix)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: bench_dns ADDR:PORT DOMAIN-MIX");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| {
        eprintln!("bench_dns: bad address {addr}: {e}");
        std::process::exit(2);
    });
    let names = domains(mix).unwrap_or_else(|e| {
        eprintln!("bench_dns: {e}");
        std::process::exit(2);
    });
    if names.len() > 65_536 {
        eprintln!("bench_dns: at most 65536 domains");
        std::process::exit(2);
    }
    let server = TestServer::start_at(addr).unwrap_or_else(|e| {
        eprintln!("bench_dns: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    for (k, domain) in names.iter().enumerate() {
        let host = format!("mx.{domain}");
        server.add_mx(domain, 3600, 10, &host);
        let ip = Ipv4Addr::new(127, 1, (k >> 8) as u8, (k & 0xff) as u8);
        server.add_a(&host, 3600, ip);
    }
    eprintln!("bench_dns: {} domains on {addr}", names.len());
    loop {
        std::thread::park();
    }
}
