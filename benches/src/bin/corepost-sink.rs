//! `corepost-sink`: SMTP sink, flag-compatible with Postfix's `smtp-sink` for its essential
//! flags, with STARTTLS, CHUNKING and failure injection. See `corepost_benches::sink`.

use std::io::{IsTerminal, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};
use corepost_benches::message::parse_size;
use corepost_benches::sink::{
    FaultRates, Faults, ScriptedReply, Sink, SinkConfig, SinkSummary, parse_duration,
    parse_fraction,
};

/// SMTP sink for benchmarks (smtp-sink compatible flags, plus STARTTLS, CHUNKING, failure
/// injection and a JSON summary).
#[derive(Parser, Debug)]
#[command(name = "corepost-sink", version, disable_help_flag = true)]
struct Args {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// Show a live counter of messages on stderr.
    #[arg(short = 'c')]
    counter: bool,
    /// Switch to this user after opening the socket (when started as root).
    #[arg(short = 'u')]
    user: Option<String>,
    /// Write each accepted message (with X-Mail-From/X-Rcpt-To lines) into this directory.
    #[arg(short = 'd')]
    dump_dir: Option<PathBuf>,
    /// Maximum concurrent sessions.
    #[arg(short = 'm')]
    max_sessions: Option<usize>,
    /// Exit after this many accepted messages.
    #[arg(short = 'M')]
    quit_after: Option<u64>,
    /// Do not announce or accept EHLO (HELO only).
    #[arg(short = 'e')]
    no_ehlo: bool,
    /// Do not announce PIPELINING.
    #[arg(short = 'p')]
    no_pipelining: bool,
    /// Do not announce 8BITMIME.
    #[arg(short = '8')]
    no_8bitmime: bool,
    /// Do not announce ENHANCEDSTATUSCODES (and leave enhanced codes out of replies).
    #[arg(short = 'E')]
    no_enhanced: bool,
    /// Host name in the greeting.
    #[arg(short = 'h', default_value = "sink.localdomain")]
    hostname: String,
    /// Idle timeout per read or write.
    #[arg(short = 't', default_value = "300s", value_parser = parse_duration)]
    timeout: Duration,
    /// Wait this long before answering DATA (smtp-sink -w; seconds or e.g. 50ms).
    #[arg(short = 'w', value_parser = parse_duration)]
    data_delay: Option<Duration>,
    /// Announce STARTTLS (self-signed certificate made at start-up).
    #[arg(long)]
    tls: bool,
    /// With --tls: write the certificate (PEM) to this file, for a client that verifies it.
    #[arg(long, value_name = "FILE")]
    tls_cert_out: Option<std::path::PathBuf>,
    /// Do not announce CHUNKING (BDAT is still accepted).
    #[arg(long)]
    no_chunking: bool,
    /// Do not announce AUTH.
    #[arg(long)]
    no_auth: bool,
    /// Largest message accepted (announced with SIZE).
    #[arg(long, default_value = "1024m", value_parser = parse_size)]
    max_size: usize,
    /// Fraction of recipients refused with 4xx (0.1 or 10%).
    #[arg(long, value_parser = parse_fraction, default_value = "0")]
    rcpt_tempfail: f64,
    /// Fraction of recipients refused with 5xx.
    #[arg(long, value_parser = parse_fraction, default_value = "0")]
    rcpt_permfail: f64,
    /// Fraction of messages refused with 4xx at end of data.
    #[arg(long, value_parser = parse_fraction, default_value = "0")]
    data_tempfail: f64,
    /// Fraction of messages refused with 5xx at end of data.
    #[arg(long, value_parser = parse_fraction, default_value = "0")]
    data_permfail: f64,
    /// Per-domain rates replacing the global ones: DOMAIN:tempfail=F,permfail=F,data-tempfail=F,data-permfail=F.
    #[arg(long = "domain-fault", value_name = "SPEC")]
    domain_faults: Vec<String>,
    /// Delay before a reply: COMMAND=DURATION, COMMAND one of greeting, helo, mail, rcpt, data, eod.
    #[arg(long = "delay", value_name = "CMD=DURATION")]
    delays: Vec<String>,
    /// A chosen RCPT reply: WHEN:CODE [ENHANCED] TEXT, WHEN = prefix=LOCALPART-PREFIX and/or
    /// after=N (messages accepted first), e.g. 'after=100:450 4.7.28 rate limited'. A 421
    /// closes the connection. Repeatable; the first that applies answers.
    #[arg(long = "rcpt-reply", value_name = "SPEC")]
    rcpt_replies: Vec<String>,
    /// Fraction of transactions cut off by closing the connection.
    #[arg(long, value_parser = parse_fraction, default_value = "0")]
    disconnect: f64,
    /// Fraction of connections answered 421 at the greeting.
    #[arg(long, value_parser = parse_fraction, default_value = "0")]
    greeting_421: f64,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// RNG seed for failure injection (0: random).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the JSON summary to this file at exit and on SIGUSR1.
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
    /// Print the summary at exit as JSON on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// [inet:][host]:port to listen on (host: an IP address or localhost; default 127.0.0.1).
    listen: String,
    /// Listen backlog.
    #[arg(default_value_t = 1024)]
    backlog: u32,
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.strip_prefix("inet:").unwrap_or(s);
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: expected [host]:port"))?;
    let port: u16 = port.parse().map_err(|_| format!("bad port in {s:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "" | "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h
            .parse()
            .map_err(|_| format!("{h:?}: give an IP address (no name resolution)"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// Switches to `user`'s uid and gid.
fn drop_privileges(user: &str) -> Result<(), String> {
    let name = std::ffi::CString::new(user).map_err(|_| "bad user name".to_string())?;
    // SAFETY: `name` is a valid NUL-terminated string; getpwnam returns NULL or a pointer to a
    // static passwd record that we read immediately, before any other getpw* call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(format!("unknown user {user:?}"));
    }
    // SAFETY: `pw` is non-null and points to the record getpwnam returned.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    // SAFETY: plain syscalls with integer arguments; group first, while we still may.
    let ok = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(gid) == 0
            && libc::setuid(uid) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "cannot switch to {user}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

fn text_summary(s: &SinkSummary) -> String {
    let e2e = if s.e2e_latency_us.count > 0 {
        format!("\n{}", s.e2e_latency_us.line("end-to-end"))
    } else {
        String::new()
    };
    let injected: Vec<String> = s
        .injected
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}:{n}"))
        .collect();
    let replies: Vec<String> = s.replies.iter().map(|(c, n)| format!("{c}:{n}")).collect();
    format!(
        "corepost-sink: {} messages ({} refused), {} recipients ({} refused), {} connections, {} transactions ({:.2}/connection), {} bytes, {:.1} msg/s\nreplies      {}\ninjected     {}{e2e}\n",
        s.messages,
        s.messages_rejected,
        s.recipients,
        s.recipients_rejected,
        s.connections,
        s.transactions,
        s.transactions_per_connection.mean,
        s.bytes,
        s.msgs_per_sec,
        replies.join(" "),
        if injected.is_empty() {
            "none".to_string()
        } else {
            injected.join(" ")
        },
    )
}

fn write_summary(path: &std::path::Path, s: &SinkSummary) {
    let json = serde_json::to_string_pretty(s).unwrap_or_default();
    // Write then rename, so a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, json + "\n").and_then(|()| std::fs::rename(&tmp, path)) {
        eprintln!("corepost-sink: {}: {e}", path.display());
    }
}

fn main() {
    let args = Args::parse();
    let fatal = |msg: String| -> ! {
        eprintln!("corepost-sink: fatal: {msg}");
        std::process::exit(1)
    };
    let addr = parse_listen(&args.listen).unwrap_or_else(|e| fatal(e));
    let mut faults = Faults {
        global: FaultRates {
            rcpt_tempfail: args.rcpt_tempfail,
            rcpt_permfail: args.rcpt_permfail,
            data_tempfail: args.data_tempfail,
            data_permfail: args.data_permfail,
        },
        greeting_421: args.greeting_421,
        disconnect: args.disconnect,
        ..Faults::default()
    };
    for spec in &args.domain_faults {
        faults
            .domains
            .push(Faults::parse_domain_rule(spec).unwrap_or_else(|e| fatal(e)));
    }
    for spec in &args.rcpt_replies {
        faults
            .rcpt_replies
            .push(ScriptedReply::parse(spec).unwrap_or_else(|e| fatal(e)));
    }
    for spec in &args.delays {
        faults.parse_delay(spec).unwrap_or_else(|e| fatal(e));
    }
    if let Some(d) = args.data_delay {
        faults.delays.data = d;
    }
    if let Some(d) = &args.dump_dir {
        std::fs::create_dir_all(d).unwrap_or_else(|e| fatal(format!("{}: {e}", d.display())));
    }
    let cfg = SinkConfig {
        hostname: args.hostname.clone(),
        ehlo: !args.no_ehlo,
        pipelining: !args.no_pipelining,
        eightbitmime: !args.no_8bitmime,
        enhanced: !args.no_enhanced,
        chunking: !args.no_chunking,
        auth: !args.no_auth,
        max_size: args.max_size as u64,
        max_sessions: args.max_sessions,
        quit_after: args.quit_after,
        dump_dir: args.dump_dir.clone(),
        timeout: args.timeout,
        faults,
        seed: args.seed,
    };
    let tls = args.tls.then(|| {
        let (config, pem) = corepost_benches::tls::server_config_and_pem(&args.hostname)
            .unwrap_or_else(|e| fatal(format!("TLS: {e}")));
        if let Some(path) = &args.tls_cert_out {
            std::fs::write(path, pem).unwrap_or_else(|e| fatal(format!("{}: {e}", path.display())));
        }
        config
    });
    let sink = Sink::new(cfg, tls);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fatal(e.to_string()));
    let listener = rt
        .block_on(async {
            let sock = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            sock.set_reuseaddr(true)?;
            sock.bind(addr)?;
            sock.listen(args.backlog)?.into_std()
        })
        .unwrap_or_else(|e| fatal(format!("listen on {addr}: {e}")));
    let local = listener
        .local_addr()
        .unwrap_or_else(|e| fatal(e.to_string()));
    if let Some(user) = &args.user {
        drop_privileges(user).unwrap_or_else(|e| fatal(e));
    }
    // The handlers exist before anyone learns the address: a SIGTERM that
    // arrives right after the listening line must still print the summary.
    let (mut term, mut int, mut usr1) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _runtime = rt.enter();
        let install = |kind| signal(kind).unwrap_or_else(|e| fatal(e.to_string()));
        (
            install(SignalKind::terminate()),
            install(SignalKind::interrupt()),
            install(SignalKind::user_defined1()),
        )
    };
    println!("corepost-sink: listening on {local}");
    let _ = std::io::stdout().flush();

    for _ in 0..args.threads.max(1) {
        let l = listener
            .try_clone()
            .unwrap_or_else(|e| fatal(e.to_string()));
        let sink = sink.clone();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => fatal(e.to_string()),
            };
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(l) {
                    Ok(l) => sink.serve(l).await,
                    Err(e) => fatal(e.to_string()),
                }
            });
        });
    }
    if args.counter {
        let sink = sink.clone();
        let interactive = std::io::stderr().is_terminal();
        std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} {spinner} {pos} messages {msg}",
            ) {
                bar.set_style(style);
            }
            let mut ticks = 0u64;
            loop {
                std::thread::sleep(Duration::from_millis(250));
                let n = sink.stats.messages();
                bar.set_position(n);
                bar.set_message(format!(
                    "{} recipients refused",
                    sink.stats.recipients_rejected()
                ));
                ticks += 1;
                if !interactive && ticks.is_multiple_of(4) {
                    eprintln!("corepost-sink: {n} messages");
                }
            }
        });
    }

    let summary_path = args.summary.clone();
    rt.block_on(async {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = sink.stats.done.notified() => break,
                _ = usr1.recv() => {
                    let s = sink.summary();
                    match &summary_path {
                        Some(p) => write_summary(p, &s),
                        None => eprint!("{}", text_summary(&s)),
                    }
                }
            }
        }
    });
    let s = sink.summary();
    if let Some(p) = &summary_path {
        write_summary(p, &s);
    }
    if args.json {
        println!("{}", serde_json::to_string(&s).unwrap_or_default());
    } else {
        print!("{}", text_summary(&s));
    }
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap().to_string(),
            "127.0.0.1:0"
        );
        assert_eq!(
            parse_listen("inet::2525").unwrap().to_string(),
            "127.0.0.1:2525"
        );
        assert_eq!(
            parse_listen("localhost:25").unwrap().to_string(),
            "127.0.0.1:25"
        );
        assert_eq!(parse_listen("[::1]:25").unwrap().to_string(), "[::1]:25");
        assert!(parse_listen("2525").is_err());
        assert!(parse_listen("mail.example:25").is_err());
    }
}
