//! `corepost-source`: SMTP load generator, flag-compatible with Postfix's `smtp-source` where a
//! flag exists there. See `corepost_benches::source` for how the load is driven.

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use clap::Parser;
use corepost_benches::message::{Weighted, parse_domain_mix, parse_size, parse_size_mix};
use corepost_benches::sink::parse_duration;
use corepost_benches::source::{self, Progress, SourceConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// SMTP load generator (smtp-source compatible flags, plus PIPELINING, BDAT, STARTTLS, AUTH,
/// rate cap, duration, size and domain mixes).
#[derive(Parser, Debug)]
#[command(name = "corepost-source", version)]
struct Args {
    /// Show a live progress bar even when stderr is not a terminal (smtp-source: running counter).
    #[arg(short = 'c')]
    counter: bool,
    /// Reuse connections: send all of a session's messages over one connection.
    #[arg(short = 'd')]
    reuse: bool,
    /// Envelope sender.
    #[arg(short = 'f', default_value = "foo@source.localdomain")]
    sender: String,
    /// Message body length in bytes (k/m suffixes allowed); headers come on top.
    #[arg(short = 'l', default_value = "4096", value_parser = parse_size)]
    length: usize,
    /// Number of messages to send (default 1, or unlimited with --duration).
    #[arg(short = 'm')]
    messages: Option<u64>,
    /// HELO/EHLO name and Message-ID domain.
    #[arg(short = 'M', default_value = "source.localdomain")]
    myhostname: String,
    /// Prefix each recipient with a unique sequence number.
    #[arg(short = 'N')]
    unique: bool,
    /// Old-style: HELO instead of EHLO.
    #[arg(short = 'o')]
    helo: bool,
    /// Recipients per message.
    #[arg(short = 'r', default_value_t = 1)]
    recipients: usize,
    /// Concurrent sessions.
    #[arg(short = 's', default_value_t = 1)]
    sessions: usize,
    /// Subject prefix.
    #[arg(short = 'S', default_value = "corepost-source test message")]
    subject: String,
    /// Recipient (its domain is replaced by --domain-mix when given).
    #[arg(short = 't', default_value = "foo@sink.localdomain")]
    recipient: String,
    /// Pipeline MAIL, RCPT and DATA/BDAT (RFC 2920).
    #[arg(long)]
    pipelining: bool,
    /// Send messages with BDAT (CHUNKING) instead of DATA.
    #[arg(long)]
    bdat: bool,
    /// Use STARTTLS (any server certificate is accepted).
    #[arg(long)]
    starttls: bool,
    /// AUTH PLAIN as USER:PASSWORD.
    #[arg(long, value_name = "USER:PASSWORD")]
    auth: Option<String>,
    /// Open-loop rate cap: start messages at this many per second in total.
    #[arg(long, value_name = "MSG_PER_SEC")]
    rate: Option<f64>,
    /// Stop starting new messages after this long (e.g. 10s, 2m).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Weighted body sizes, e.g. 4k=70,64k=25,1m=5 (replaces -l).
    #[arg(long)]
    size_mix: Option<String>,
    /// Weighted recipient domains, e.g. gmail.test=40,yahoo.test=30,tail:10000=30.
    #[arg(long)]
    domain_mix: Option<String>,
    /// Worker threads (each a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timeout per connect, read and write.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
    /// Do not add the X-Corepost-Injected timestamp header.
    #[arg(long)]
    no_stamp: bool,
    /// RNG seed (0: random).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the final report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Server: [inet:]host[:port] with host an IP address or localhost (no DNS); port 25 by default.
    target: String,
}

/// Parses `[inet:]host[:port]` without name resolution.
fn parse_target(s: &str) -> Result<SocketAddr, String> {
    let s = s.strip_prefix("inet:").unwrap_or(s);
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => (
            h,
            p.parse::<u16>().map_err(|_| format!("bad port in {s:?}"))?,
        ),
        _ => (s, 25),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "localhost" | "" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h
            .parse::<IpAddr>()
            .map_err(|_| format!("{h:?}: give an IP address (no name resolution)"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

fn main() {
    let args = Args::parse();
    let fatal = |msg: String| -> ! {
        eprintln!("corepost-source: fatal: {msg}");
        std::process::exit(1)
    };
    let target = parse_target(&args.target).unwrap_or_else(|e| fatal(e));
    let sizes = match &args.size_mix {
        Some(spec) => parse_size_mix(spec),
        None => Weighted::new(vec![(args.length, 1)]),
    }
    .unwrap_or_else(|e| fatal(e));
    let domains = args
        .domain_mix
        .as_deref()
        .map(parse_domain_mix)
        .transpose()
        .unwrap_or_else(|e| fatal(e));
    let auth = args.auth.as_deref().map(|a| match a.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => fatal("--auth takes USER:PASSWORD".into()),
    });
    let messages = match (args.messages, args.duration) {
        (Some(m), _) => Some(m),
        (None, Some(_)) => None,
        (None, None) => Some(1),
    };
    let cfg = SourceConfig {
        target,
        messages,
        duration: args.duration,
        sessions: args.sessions,
        reuse: args.reuse,
        helo_name: args.myhostname,
        helo_only: args.helo,
        sender: args.sender,
        recipient: args.recipient,
        rcpts_per_msg: args.recipients,
        unique_rcpts: args.unique,
        subject: args.subject,
        sizes,
        domains,
        pipelining: args.pipelining,
        bdat: args.bdat,
        starttls: args.starttls,
        auth,
        rate: args.rate,
        timeout: args.timeout,
        threads: args.threads,
        stamp: !args.no_stamp,
        seed: args.seed,
    };

    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let bar_thread = (!args.quiet).then(|| {
        let bar = match messages {
            Some(m) => ProgressBar::new(m),
            None => ProgressBar::new_spinner(),
        };
        // Not a terminal: indicatif draws nothing; with -c, plain counter lines are printed instead.
        let lines = args.counter && !std::io::stderr().is_terminal();
        bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        let template = if messages.is_some() {
            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}"
        } else {
            "{elapsed_precise} {spinner} {pos} {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let (progress, stop) = (progress.clone(), stop.clone());
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let mut ticks = 1u64;
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let ok = progress.accepted.load(Relaxed);
                let failed = progress.failed.load(Relaxed);
                bar.set_position(ok + failed);
                let rate = ok as f64 / start.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{rate:.0} msg/s, {failed} errors"));
                if lines && ticks.is_multiple_of(10) {
                    eprintln!(
                        "corepost-source: {} sent, {rate:.0} msg/s, {failed} errors",
                        ok + failed
                    );
                }
                ticks += 1;
            }
            bar.finish_and_clear();
        })
    });
    let report = source::run(cfg, progress);
    stop.store(true, Relaxed);
    if let Some(t) = bar_thread {
        let _ = t.join();
    }
    let report = report.unwrap_or_else(|e| fatal(e));
    if args.json {
        match serde_json::to_string(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => fatal(e.to_string()),
        }
    } else {
        print!("{}", report.text());
    }
    if report.messages == 0 && report.attempted > 0 {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("127.0.0.1:2525").unwrap().to_string(),
            "127.0.0.1:2525"
        );
        assert_eq!(
            parse_target("inet:localhost:26").unwrap().to_string(),
            "127.0.0.1:26"
        );
        assert_eq!(
            parse_target("127.0.0.1").unwrap().to_string(),
            "127.0.0.1:25"
        );
        assert_eq!(parse_target("[::1]:25").unwrap().to_string(), "[::1]:25");
        assert_eq!(parse_target(":2525").unwrap().to_string(), "127.0.0.1:2525");
        assert!(parse_target("mail.example.com:25").is_err());
    }
}
