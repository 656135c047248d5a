//! Queue administration end to end: `mailq`, `corepost queue
//! list/show/shape/hold/release/delete/flush`, `sendmail -q` and `corepost
//! status` against a running daemon through its control socket, and
//! list/show/shape on a stopped daemon's spool.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// A daemon relaying to 127.0.0.1:`port`, with retries far apart so that
/// only a flush or a release brings deferred mail out early.
fn daemon(port: u16) -> Daemon {
    Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{port}\nminimal_backoff_time = 1h\nmaximal_backoff_time = 2h\nqueue_run_delay = 1h\n"
    ))
}

fn send(port: u16, rcpts: &[&str], subject: &str) -> String {
    let mut c = Raw::connect(port);
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<sender@example.org>").starts_with("250"));
    for r in rcpts {
        assert!(c.cmd(&format!("RCPT TO:<{r}>")).starts_with("250"));
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(format!("Subject: {subject}\r\n\r\nbody\r\n.\r\n").as_bytes());
    let r = c.reply();
    c.cmd("QUIT");
    r.trim()
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .expect("queued")
        .to_string()
}

fn queue(d: &Daemon, args: &[&str]) -> std::process::Output {
    let dir = d.config_dir();
    let mut all = vec!["queue", "-c", &dir];
    all.extend_from_slice(args);
    corepost(&all)
}

/// Run the binary under another name (mailq, sendmail) through a link.
fn as_named(d: &Daemon, name: &str, args: &[&str]) -> std::process::Output {
    let link = d.dir.path().join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(corepost_bin(), &link).expect("symlink");
    }
    Command::new(link)
        .args(["-C", &d.config_dir()])
        .args(args)
        .env_remove("COREPOST_CONFIG_DIR")
        .output()
        .expect("run")
}

fn wait_log(d: &Daemon, needle: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let log = d.log();
        if log.contains(needle) || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
    stdout(o)
}

#[test]
fn mailq_lists_deferred_mail_with_its_reason_running_or_stopped() {
    let sink = Sink::start();
    let mut d = daemon(sink.port);
    let id = send(
        d.port,
        &["tempfail@remote.example", "tempfail2@remote.example"],
        "deferred",
    );
    let log = wait_log(&d, "status=deferred", 20);
    assert!(log.contains("status=deferred"), "{log}");
    std::thread::sleep(Duration::from_millis(300));
    let list = ok(&as_named(&d, "mailq", &[]));
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("-Queue ID-"), "{list}");
    let head = lines
        .iter()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} listed: {list}"));
    assert!(head.ends_with("  sender@example.org"), "{list}");
    assert!(
        list.contains("(host 127.0.0.1[127.0.0.1] said: 450 4.2.0 try again later"),
        "the deferral reason: {list}"
    );
    // Recipients line up under the sender column.
    let column = head.find("sender@example.org").expect("sender column");
    assert!(
        list.contains(&format!(
            "\n{}tempfail@remote.example\n",
            " ".repeat(column)
        )),
        "{list}"
    );
    assert!(list.contains("tempfail2@remote.example"), "{list}");
    assert!(list.trim_end().ends_with("Kbytes in 1 Request."), "{list}");
    // sendmail -bp is mailq.
    assert_eq!(ok(&as_named(&d, "sendmail", &["-bp"])), list);
    let shape = ok(&queue(&d, &["shape"]));
    assert!(shape.contains("TOTAL      2     2"), "{shape}");
    assert!(shape.contains("remote.example      2     2"), "{shape}");
    let show = ok(&queue(&d, &["show", &id]));
    assert!(show.contains("sender: sender@example.org"), "{show}");
    assert!(
        show.contains("recipient: tempfail@remote.example (pending, smtp:"),
        "{show}"
    );
    assert!(show.contains("Subject: deferred"), "{show}");
    let status = ok(&corepost(&["status", "-c", &d.config_dir()]));
    assert!(status.contains("the mail system is running"), "{status}");
    assert!(
        status.contains("queue: 1 messages (0 active, 1 deferred, 0 held)"),
        "{status}"
    );
    assert!(status.contains("cores: 2"), "{status}");
    assert!(
        status.contains(&format!("listeners: 127.0.0.1:{}", d.port)),
        "{status}"
    );
    // Stopped: the same listing, read from the spool.
    d.stop();
    let offline = ok(&queue(&d, &["list"]));
    assert_eq!(offline, list, "the stopped spool lists the same");
    assert!(ok(&queue(&d, &["show", &id])).contains("Subject: deferred"));
    assert!(ok(&queue(&d, &["shape"])).contains("remote.example"));
    let refused = queue(&d, &["hold", &id]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("not running"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn hold_keeps_a_message_from_delivery_until_release() {
    let port = free_port();
    let d = daemon(port);
    let id = send(d.port, &["x@remote.example"], "held");
    wait_log(&d, "status=deferred", 20);
    let out = ok(&queue(&d, &["hold", &id]));
    assert!(out.contains("Placed on hold: 1 message"), "{out}");
    let list = ok(&queue(&d, &["list"]));
    assert!(list.contains(&format!("{id}!")), "{list}");
    let sink = Sink::start_on(port);
    ok(&queue(&d, &["flush"]));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sink.snapshot().messages.len(),
        0,
        "held mail is not delivered"
    );
    let out = ok(&queue(&d, &["release", &id]));
    assert!(out.contains("Released from hold: 1 message"), "{out}");
    let got = sink.wait_for(1, 10);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    let log = d.log();
    assert!(log.contains(&format!("{id}: placed on hold")), "{log}");
    assert!(log.contains(&format!("{id}: released from hold")), "{log}");
}

#[test]
fn delete_removes_a_message_for_good() {
    let port = free_port();
    let mut d = daemon(port);
    let keep = send(d.port, &["keep@remote.example"], "keep");
    let gone = send(d.port, &["gone@remote.example"], "gone");
    wait_log(&d, "status=deferred", 20);
    let out = ok(&queue(&d, &["delete", &gone]));
    assert!(out.contains("Deleted: 1 message"), "{out}");
    assert!(d.log().contains(&format!("{gone}: removed")));
    let list = ok(&queue(&d, &["list"]));
    assert!(!list.contains(&gone) && list.contains(&keep), "{list}");
    // Also after a restart, and when the destination is back.
    d.stop();
    let sink = Sink::start_on(port);
    d.spawn();
    ok(&queue(&d, &["flush"]));
    let got = sink.wait_for(1, 10);
    std::thread::sleep(Duration::from_millis(500));
    let got_all = sink.snapshot();
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    assert_eq!(
        got_all.messages.len(),
        1,
        "only the kept message: {:?}",
        got_all.messages
    );
    assert_eq!(
        got_all.messages[0].1,
        vec!["keep@remote.example".to_string()]
    );
    // ALL deletes everything left; unknown ids count nothing.
    let _ = send(d.port, &["later@nowhere.invalid"], "later");
    let out = ok(&queue(&d, &["delete", "ALL"]));
    assert!(out.contains("Deleted: "), "{out}");
    let bad = queue(&d, &["delete", "not-an-id"]);
    assert!(!bad.status.success());
}

#[test]
fn flush_delivers_deferred_mail_as_soon_as_the_sink_is_back() {
    let port = free_port();
    let d = daemon(port);
    let a = send(d.port, &["a@remote.example"], "flush one");
    let b = send(d.port, &["b@remote.example"], "flush two");
    let log = wait_log(&d, &format!("{b}: to=<b@remote.example>"), 20);
    assert!(
        log.contains(&format!("{a}: to=<a@remote.example>")),
        "{log}"
    );
    let sink = Sink::start_on(port);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        sink.snapshot().messages.len(),
        0,
        "retries are an hour away"
    );
    let started = Instant::now();
    // `sendmail -q` is a flush.
    ok(&as_named(&d, "sendmail", &["-q"]));
    let got = sink.wait_for(2, 10);
    assert_eq!(got.messages.len(), 2, "{}", d.log());
    assert!(started.elapsed() < Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ok(&queue(&d, &["list"])), "Mail queue is empty\n");
}

#[test]
fn requeue_routes_deferred_mail_again_with_the_current_configuration() {
    let dead = free_port();
    let d = daemon(dead);
    let old = send(d.port, &["r@remote.example"], "requeue me");
    wait_log(&d, "status=deferred", 20);
    // The operator points the relay somewhere that works, reloads, and
    // requeues: the message is routed again under a new queue id.
    let sink = Sink::start();
    let main = d.dir.path().join("main.cf");
    let text = std::fs::read_to_string(&main).unwrap().replace(
        &format!("[127.0.0.1]:{dead}"),
        &format!("[127.0.0.1]:{}", sink.port),
    );
    std::fs::write(&main, text).unwrap();
    ok(&corepost(&["reload", "-c", &d.config_dir()]));
    wait_log(&d, "reload --", 10);
    let out = ok(&queue(&d, &["requeue", "ALL"]));
    assert!(out.contains("Requeued: 1 message"), "{out}");
    let got = sink.wait_for(1, 10);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    assert_eq!(got.messages[0].1, vec!["r@remote.example".to_string()]);
    let log = d.log();
    assert!(log.contains(&format!("{old}: requeued as ")), "{log}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ok(&queue(&d, &["list"])), "Mail queue is empty\n");
}

#[test]
fn flush_of_one_domain_leaves_the_rest_waiting() {
    let port = free_port();
    let d = daemon(port);
    let one = send(d.port, &["a@one.example"], "one");
    let two = send(d.port, &["b@two.example"], "two");
    let log = wait_log(&d, &format!("{two}: to=<b@two.example>"), 20);
    assert!(log.contains(&format!("{one}: to=<a@one.example>")), "{log}");
    let sink = Sink::start_on(port);
    let out = ok(&queue(&d, &["flush", "two.example"]));
    assert!(out.contains("flushed 1 deferred message"), "{out}");
    let got = sink.wait_for(1, 10);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    assert_eq!(got.messages[0].1, vec!["b@two.example".to_string()]);
    std::thread::sleep(Duration::from_millis(500));
    let list = ok(&queue(&d, &["list"]));
    assert!(list.contains(&one) && !list.contains(&two), "{list}");
}

#[test]
fn delete_all_deferred_spares_held_mail() {
    let port = free_port();
    let d = daemon(port);
    let held = send(d.port, &["h@remote.example"], "held");
    let deferred = send(d.port, &["d@remote.example"], "deferred");
    let log = wait_log(&d, &format!("{deferred}: to=<d@remote.example>"), 20);
    assert!(
        log.contains(&format!("{held}: to=<h@remote.example>")),
        "{log}"
    );
    std::thread::sleep(Duration::from_millis(200));
    ok(&queue(&d, &["hold", &held]));
    let out = ok(&queue(&d, &["delete", "ALL", "deferred"]));
    assert!(out.contains("Deleted: 1 message"), "{out}");
    let list = ok(&queue(&d, &["list"]));
    assert!(
        list.contains(&format!("{held}!")) && !list.contains(&deferred),
        "{list}"
    );
}

/// `args` of `corepost` as the user `uid` (group the same number).
fn corepost_as(uid: u32, args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    Command::new(corepost_bin())
        .args(args)
        .env_remove("COREPOST_CONFIG_DIR")
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run")
}

#[test]
fn list_json_is_postqueue_j_running_or_stopped_with_the_maildrop() {
    let sink = Sink::start();
    let mut d = daemon(sink.port);
    let id = send(d.port, &["tempfail@remote.example"], "json");
    let log = wait_log(&d, "status=deferred", 20);
    assert!(log.contains("status=deferred"), "{log}");
    // No pickup service in the harness's master.cf: a submission waits in
    // the maildrop, which mailq lists too (Postfix's "maildrop queue").
    let mut submit = Command::new({
        let link = d.dir.path().join("sendmail");
        std::os::unix::fs::symlink(corepost_bin(), &link).expect("symlink");
        link
    })
    .args([
        "-C",
        &d.config_dir(),
        "-f",
        "dropper@example.org",
        "a@remote.example",
        "b@remote.example",
    ])
    .stdin(std::process::Stdio::piped())
    .spawn()
    .expect("sendmail");
    use std::io::Write;
    submit
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: waiting\n\nin the maildrop\n")
        .unwrap();
    assert!(submit.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    let check = |json: &str| {
        let objects: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(objects.len(), 2, "{json}");
        let drop = &objects[0];
        assert_eq!(drop["queue_name"], "maildrop", "{json}");
        assert_eq!(drop["sender"], "dropper@example.org");
        assert_eq!(drop["recipients"][1]["address"], "b@remote.example");
        assert!(drop["queue_id"].as_str().is_some_and(|s| !s.is_empty()));
        let deferred = &objects[1];
        let keys: Vec<&str> = deferred
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // postqueue -j's members (serde_json sorts them).
        assert_eq!(
            keys,
            [
                "arrival_time",
                "forced_expire",
                "message_size",
                "queue_id",
                "queue_name",
                "recipients",
                "sender"
            ]
        );
        assert_eq!(deferred["queue_name"], "deferred");
        assert_eq!(deferred["queue_id"], id.as_str());
        assert_eq!(deferred["sender"], "sender@example.org");
        assert_eq!(deferred["forced_expire"], false);
        assert!(deferred["message_size"].as_u64().unwrap() > 20);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let arrival = deferred["arrival_time"].as_u64().unwrap();
        assert!(arrival <= now && arrival + 120 > now, "{arrival} {now}");
        let rcpt = &deferred["recipients"][0];
        assert_eq!(rcpt["address"], "tempfail@remote.example");
        assert!(
            rcpt["delay_reason"]
                .as_str()
                .unwrap()
                .contains("said: 450 4.2.0 try again later"),
            "{json}"
        );
    };
    let running = ok(&queue(&d, &["list", "--json"]));
    check(&running);
    let text = ok(&queue(&d, &["list"]));
    assert!(text.contains("dropper@example.org"), "{text}");
    assert!(text.trim_end().ends_with("in 2 Requests."), "{text}");
    d.stop();
    let stopped = ok(&queue(&d, &["list", "-j"]));
    check(&stopped);
    assert_eq!(stopped, running);
}

#[test]
fn other_users_list_and_flush_through_the_public_socket_as_authorized() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let sink = Sink::start();
    let mut d = Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{}\nminimal_backoff_time = 1h\nmaximal_backoff_time = 2h\nmail_owner = daemon\n",
        sink.port
    ));
    // Other users reach the configuration (as on a real host).
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = send(d.port, &["tempfail@remote.example"], "public");
    let log = wait_log(&d, "status=deferred", 20);
    assert!(log.contains("status=deferred"), "{log}");
    let dir = d.config_dir();
    let public = d.spool_dir().join("control.public");
    let mode = std::fs::metadata(&public).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    // Postfix's default (static:anyone): nobody lists, in both formats...
    let nobody = 65534;
    let list = corepost_as(nobody, &["queue", "-c", &dir, "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    assert!(stdout(&list).contains(&id), "{}", stdout(&list));
    let json = corepost_as(nobody, &["queue", "-c", &dir, "list", "--json"]);
    assert!(stdout(&json).contains(&format!("\"queue_id\": \"{id}\"")));
    // ... but may not read a message or steer the queue.
    for action in [
        vec!["show", id.as_str()],
        vec!["hold", "ALL"],
        vec!["delete", "ALL"],
    ] {
        let mut args = vec!["queue", "-c", &dir];
        args.extend(action.iter().copied());
        let out = corepost_as(nobody, &args);
        assert!(!out.status.success(), "nobody ran {action:?}");
    }
    assert!(ok(&queue(&d, &["list"])).contains(&id), "still queued");
    // Narrowed lists, read at each request as postqueue reads main.cf.
    let main_cf = d.dir.path().join("main.cf");
    let mut main = std::fs::read_to_string(&main_cf).unwrap();
    main.push_str(
        "authorized_mailq_users = bin\nauthorized_flush_users = !nobody, static:anyone\n",
    );
    std::fs::write(&main_cf, main).unwrap();
    let refused = corepost_as(nobody, &["queue", "-c", &dir, "list"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("User nobody(65534) is not allowed to view the mail queue"),
        "{}",
        stderr(&refused)
    );
    let refused = corepost_as(nobody, &["queue", "-c", &dir, "flush"]);
    assert!(
        stderr(&refused).contains("User nobody(65534) is not allowed to flush the mail queue"),
        "{}",
        stderr(&refused)
    );
    let bin = corepost_as(2, &["queue", "-c", &dir, "list"]);
    assert!(
        stdout(&bin).contains(&id),
        "{}{}",
        stdout(&bin),
        stderr(&bin)
    );
    let flush = corepost_as(2, &["queue", "-c", &dir, "flush"]);
    assert!(
        stdout(&flush).contains("flushed 1 deferred message"),
        "{}{}",
        stdout(&flush),
        stderr(&flush)
    );
    // Root and mail_owner are always allowed.
    assert!(ok(&queue(&d, &["list"])).contains(&id));
    let as_owner = corepost_as(1, &["queue", "-c", &dir, "list"]);
    assert!(stdout(&as_owner).contains(&id), "{}", stderr(&as_owner));
    // Stopped: only those who can read the spool get a listing (Postfix's
    // postqueue: "Queue report unavailable", EX_UNAVAILABLE).
    d.stop();
    let down = corepost_as(2, &["queue", "-c", &dir, "list"]);
    assert_eq!(down.status.code(), Some(69), "{}", stderr(&down));
    assert!(
        stderr(&down).contains("fatal: Queue report unavailable - mail system is down"),
        "{}",
        stderr(&down)
    );
    assert!(ok(&queue(&d, &["list"])).contains(&id));
}
