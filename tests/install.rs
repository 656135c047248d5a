//! A fresh machine: `corepost install` (Postfix's post-install) into a
//! temporary root, then mail submitted with `sendmail` by an unprivileged
//! user before the daemon ever ran and after it started, and by root
//! before it ran — every message delivered, none set aside. Root only
//! (accounts, ownership, a daemon that gives up root); CI runs as root.

mod support;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::*;

/// `nobody`, who submits.
const NOBODY: (u32, u32) = (65534, 65534);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A fresh root to install into, reachable by other users.
fn fresh_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

fn install(root: &Path) -> Output {
    Command::new(corepost_bin())
        .args(["install", "--root"])
        .arg(root)
        .env_remove("COREPOST_CONFIG_DIR")
        .output()
        .expect("corepost install")
}

/// The installed binary, run as `args[0]`.
fn installed(root: &Path, args: &[&str]) -> Output {
    Command::new(root.join("usr/sbin/corepost"))
        .args(args)
        .env_remove("COREPOST_CONFIG_DIR")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run the installed corepost")
}

/// Stops the daemon `corepost start` left running if the test ends early.
struct StopOnDrop(PathBuf, String);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = installed(&self.0, &["stop", "-c", &self.1]);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn install_creates_a_working_layout_and_is_idempotent() {
    let root = fresh_root();
    let r = root.path();
    let out = install(r);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let main = std::fs::read_to_string(r.join("etc/corepost/main.cf")).expect("main.cf");
    assert!(main.starts_with("# corepost main.cf"), "{main}");
    assert!(
        main.contains("\n#relayhost = "),
        "commented examples: {main}"
    );
    // master.cf is the built-in one, in full.
    let config_dir = r.join("etc/corepost").display().to_string();
    let services = stdout(&installed(r, &["config", "-M", "-c", &config_dir]));
    let empty = tempfile::tempdir().unwrap();
    let builtin = stdout(&installed(
        r,
        &["config", "-M", "-c", &empty.path().display().to_string()],
    ));
    assert!(services.contains("pickup"), "{services}");
    assert_eq!(services, builtin);
    // The queue directory with its modes (ARCHITECTURE.md).
    let queue = r.join("var/spool/corepost");
    assert_eq!(mode(&queue), 0o755);
    assert_eq!(mode(&queue.join("maildrop")), 0o3733);
    assert_eq!(mode(&queue.join("corrupt")), 0o700);
    if is_root() {
        // Without a `corepost` account on this host: nobody's, as the
        // daemon would run.
        let owner = std::fs::metadata(queue.join("maildrop")).unwrap().uid();
        assert_ne!(owner, 0, "the maildrop must not stay root's");
    }
    // The binary and the classic names, as paths of the target system.
    assert!(mode(&r.join("usr/sbin/corepost")) & 0o111 != 0);
    for link in ["usr/sbin/sendmail", "usr/bin/mailq", "usr/bin/newaliases"] {
        assert_eq!(
            std::fs::read_link(r.join(link)).expect(link),
            PathBuf::from("/usr/sbin/corepost")
        );
    }
    // Manual pages and completions.
    for page in ["corepost.8", "corepost-start.8", "corepost-install.8"] {
        let text = std::fs::read_to_string(r.join("usr/share/man/man8").join(page)).expect(page);
        assert!(text.contains(".TH "), "{page}: {text}");
    }
    let bash = std::fs::read_to_string(r.join("usr/share/bash-completion/completions/corepost"))
        .expect("bash completion");
    assert!(bash.contains("start"), "{bash}");
    assert!(
        r.join("usr/share/zsh/vendor-completions/_corepost")
            .exists()
    );
    assert!(
        r.join("usr/share/fish/vendor_completions.d/corepost.fish")
            .exists()
    );
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/corepost.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("ExecStart=/usr/sbin/corepost run"));
    let rotate = std::fs::read_to_string(r.join("etc/logrotate.d/corepost")).unwrap();
    assert!(rotate.starts_with("# Rotation") && rotate.contains("/var/log/corepost.log {"));

    // Again: nothing the administrator changed is replaced.
    std::fs::write(
        r.join("etc/corepost/main.cf"),
        "# mine\nmyhostname = a.example\n",
    )
    .unwrap();
    let again = install(r);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("kept the existing"),
        "{}",
        stdout(&again)
    );
    assert_eq!(
        std::fs::read_to_string(r.join("etc/corepost/main.cf")).unwrap(),
        "# mine\nmyhostname = a.example\n"
    );
}

#[test]
fn the_installed_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let root = fresh_root();
    let r = root.path();
    assert!(install(r).status.success());
    // The unit as installed, its commands pointed at the installed binary
    // (systemd-analyze checks that they are executable).
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/corepost.service")).unwrap();
    let check = tempfile::tempdir().unwrap();
    let copy = check.path().join("corepost.service");
    let binary = r.join("usr/sbin/corepost").display().to_string();
    std::fs::write(&copy, unit.replace("/usr/sbin/corepost", &binary)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("corepost.service:"), "{text}");
}

/// A fresh root with corepost installed and its configuration pointed at
/// the root's paths, a free port and a sink as relayhost; the submitter's
/// `sendmail` link. Returns (root, config dir, smtpd port, sendmail).
fn installed_relay(sink: &Sink) -> (tempfile::TempDir, String, u16, PathBuf) {
    let root = fresh_root();
    let r = root.path();
    let out = install(r);
    assert!(out.status.success(), "{}", stderr(&out));
    let config_dir = r.join("etc/corepost").display().to_string();
    let port = free_port();
    // The README's tour step, on the installed configuration.
    let edit = installed(
        r,
        &[
            "config",
            "-c",
            &config_dir,
            "-e",
            &format!("queue_directory = {}/var/spool/corepost", r.display()),
            &format!("maillog_file = {}/var/log/corepost.log", r.display()),
            "maillog_file_prefixes = /",
            "mail_owner = daemon",
            "myhostname = mx.test.example",
            &format!("relayhost = [127.0.0.1]:{}", sink.port),
            "corepost_cores = 1",
            "alias_maps =",
            "alias_database =",
            "smtpd_peername_lookup = no",
        ],
    );
    assert!(edit.status.success(), "{}", stderr(&edit));
    let master = r.join("etc/corepost/master.cf");
    let text = std::fs::read_to_string(&master).unwrap();
    std::fs::write(
        &master,
        text.replace("\n2525      inet", &format!("\n127.0.0.1:{port} inet")),
    )
    .unwrap();
    std::fs::create_dir_all(r.join("var/log")).unwrap();
    // `sendmail` by its classic name: a link to the installed binary.
    let link = r.join("sendmail");
    std::os::unix::fs::symlink(r.join("usr/sbin/corepost"), &link).unwrap();
    (root, config_dir, port, link)
}

fn sendmail_as(link: &Path, config_dir: &str, user: Option<(u32, u32)>, n: usize) -> Output {
    let mut cmd = Command::new(link);
    cmd.args(["-C", config_dir, "-f", "sender@example.org"])
        .arg(format!("rcpt{n}@remote.example"))
        .env_remove("COREPOST_CONFIG_DIR")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((u, g)) = user {
        cmd.uid(u).gid(g);
    }
    let mut child = cmd.spawn().expect("start sendmail");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("Subject: message {n}\n\nbody {n}\n").as_bytes())
        .unwrap();
    child.wait_with_output().expect("sendmail")
}

#[test]
fn a_fresh_machine_delivers_mail_submitted_before_and_after_the_daemon_starts() {
    if !is_root() {
        eprintln!("skipped: needs root (accounts, ownership, a daemon that gives up root)");
        return;
    }
    let sink = Sink::start();
    let (root, config_dir, port, sendmail) = installed_relay(&sink);
    // Before the daemon ever ran: an unprivileged user, then root.
    let first = sendmail_as(&sendmail, &config_dir, Some(NOBODY), 1);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = sendmail_as(&sendmail, &config_dir, None, 2);
    assert!(second.status.success(), "{}", stderr(&second));
    let start = installed(root.path(), &["start", "-c", &config_dir]);
    let _stop = StopOnDrop(root.path().to_path_buf(), config_dir.clone());
    assert!(start.status.success(), "{}", stderr(&start));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    // After it started.
    let third = sendmail_as(&sendmail, &config_dir, Some(NOBODY), 3);
    assert!(third.status.success(), "{}", stderr(&third));
    let got = sink.wait_for(3, 30);
    let log_path = root.path().join("var/log/corepost.log");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut rcpts: Vec<String> = got.messages.iter().flat_map(|m| m.1.clone()).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        vec![
            "rcpt1@remote.example",
            "rcpt2@remote.example",
            "rcpt3@remote.example"
        ],
        "{log}"
    );
    let corrupt = root.path().join("var/spool/corepost/corrupt");
    assert_eq!(std::fs::read_dir(&corrupt).unwrap().count(), 0, "{log}");
}

#[test]
fn roots_sendmail_before_the_daemon_ever_ran_leaves_a_maildrop_the_daemon_can_read() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // No install: root's sendmail creates the queue directory itself.
    let sink = Sink::start();
    let dir = fresh_root();
    let d = dir.path().display().to_string();
    let port = free_port();
    std::fs::write(
        dir.path().join("main.cf"),
        format!(
            "queue_directory = {d}/spool\nmaillog_file = {d}/maillog\nmaillog_file_prefixes = /\nmail_owner = nobody\nmyhostname = mx.test.example\nrelayhost = [127.0.0.1]:{}\ncorepost_cores = 1\nalias_maps =\nalias_database =\n",
            sink.port
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("master.cf"),
        format!("127.0.0.1:{port} inet n - n - - smtpd\npickup unix n - n 60 1 pickup\nsmtp unix - - n - - smtp\nrelay unix - - n - - smtp\n"),
    )
    .unwrap();
    let link = dir.path().join("sendmail");
    std::os::unix::fs::symlink(corepost_bin(), &link).unwrap();
    let out = sendmail_as(&link, &d, None, 1);
    assert!(out.status.success(), "{}", stderr(&out));
    let maildrop = dir.path().join("spool/maildrop");
    let meta = std::fs::metadata(&maildrop).unwrap();
    assert_eq!(meta.uid(), NOBODY.0, "made with its final owner");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o3733);
    let mut daemon = Command::new(corepost_bin())
        .args(["run", "-c", &d])
        .env_remove("COREPOST_CONFIG_DIR")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let got = sink.wait_for(1, 30);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    let log = std::fs::read_to_string(dir.path().join("maillog")).unwrap_or_default();
    assert_eq!(got.messages.len(), 1, "{log}");
    assert!(!log.contains("corrupt"), "{log}");
}

#[test]
fn a_users_sendmail_without_a_system_spool_fails_instead_of_writing_where_nobody_reads() {
    if !is_root() || !can_unshare() {
        eprintln!("skipped: needs root and a private mount namespace (unshare -m)");
        return;
    }
    // No main.cf at all: the built-in defaults, as on a fresh machine
    // before `corepost install`; where this host has a system spool, a
    // private mount namespace hides it (an empty /var/spool).
    let dir = fresh_root();
    let cwd = fresh_root();
    std::fs::set_permissions(cwd.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let link = dir.path().join("sendmail");
    std::os::unix::fs::symlink(corepost_bin(), &link).unwrap();
    let as_nobody = "mount --make-rprivate / && mount -t tmpfs none /var/spool && \
        exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$@\"";
    let mut child = Command::new("unshare")
        .args(["-m", "sh", "-c", as_nobody, "sh"])
        .arg(&link)
        .arg("someone@remote.example")
        .env("COREPOST_CONFIG_DIR", dir.path())
        .env_remove("XDG_STATE_HOME")
        .current_dir(cwd.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: x\n\nx\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/var/spool/corepost does not exist"),
        "{}",
        stderr(&out)
    );
    assert!(!cwd.path().join("corepost-spool").exists());
}

/// Whether a private mount namespace with its own mounts can be made.
fn can_unshare() -> bool {
    Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount --make-rprivate / && mount -t tmpfs none /mnt",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether an overlay of /etc with its upper layer under `scratch` can be
/// mounted in a private mount namespace (not on every container's file
/// systems).
fn can_overlay(scratch: &Path) -> bool {
    let probe = "mount --make-rprivate / && mkdir -p \"$T/u\" \"$T/w\" && \
        mount -t overlay overlay -o \"lowerdir=/etc,upperdir=$T/u,workdir=$T/w\" /etc";
    let ok = Command::new("unshare")
        .args(["-m", "sh", "-c", probe])
        .env("T", scratch.join("probe"))
        .output()
        .is_ok_and(|o| o.status.success());
    let _ = std::fs::remove_dir_all(scratch.join("probe"));
    ok
}

/// The whole first run on this machine as if it were fresh, with nothing
/// written to it: /etc, /usr and /var are overlays in a private mount
/// namespace (`unshare -m`), so `corepost install` runs for real — the
/// `corepost` account made with useradd, /usr/sbin/corepost and the
/// /usr/sbin/sendmail link, /var/spool/corepost, the systemd unit — and
/// everything it wrote is gone with the namespace. Then, as `nobody`,
/// `sendmail` before and after `corepost start`; every message reaches the
/// sink.
const FRESH_MACHINE: &str = r#"
set -eu
mount --make-rprivate /
for d in /etc /usr /var; do
    mkdir -p "$T/upper$d" "$T/work$d"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$T/upper$d,workdir=$T/work$d" "$d"
done
# A machine without another mail system or an earlier corepost.
rm -rf /usr/sbin/sendmail /usr/bin/mailq /usr/bin/newaliases /etc/corepost /var/spool/corepost
if getent passwd corepost >/dev/null; then userdel corepost; fi
if getent group corepost >/dev/null; then groupdel corepost; fi
"$BIN" install
getent passwd corepost
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify --man=no /etc/systemd/system/corepost.service
fi
/usr/sbin/corepost config -e "relayhost = [127.0.0.1]:$SINK" "myhostname = mx.test.example" \
    "corepost_cores = 1" "alias_maps =" "alias_database =" "smtpd_peername_lookup = no"
sed -i "s/^2525      inet/127.0.0.1:$PORT inet/" /etc/corepost/master.cf
submit() {
    printf 'Subject: message %s\n\nbody\n' "$1" |
        setpriv --reuid=65534 --regid=65534 --clear-groups \
            /usr/sbin/sendmail -f sender@example.org "rcpt$1@remote.example"
}
submit 1
/usr/sbin/corepost start
submit 2
stat -c '%U %a' /var/spool/corepost/maildrop
for i in $(seq 300); do
    [ "$(grep -c 'status=sent' /var/log/corepost.log || true)" -ge 2 ] && break
    sleep 0.1
done
/usr/sbin/corepost stop
ls /var/spool/corepost/corrupt | wc -l
"#;

#[test]
fn a_fresh_machine_first_run_in_a_throwaway_namespace() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    if !can_overlay(scratch.path()) {
        eprintln!("skipped: no private mount namespace with overlay mounts here (unshare -m)");
        return;
    }
    let sink = Sink::start();
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", FRESH_MACHINE])
        .env("T", scratch.path())
        .env("BIN", corepost_bin())
        .env("SINK", sink.port.to_string())
        .env("PORT", free_port().to_string())
        .env_remove("COREPOST_CONFIG_DIR")
        .output()
        .expect("unshare");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("created the account corepost"), "{text}");
    assert!(text.contains("corepost 3733"), "maildrop: {text}");
    assert!(
        stdout(&out).trim_end().ends_with("\n0"),
        "nothing in corrupt/: {text}"
    );
    let got = sink.wait_for(2, 10);
    let mut rcpts: Vec<String> = got.messages.iter().flat_map(|m| m.1.clone()).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        vec!["rcpt1@remote.example", "rcpt2@remote.example"],
        "{text}"
    );
}

#[test]
fn config_edit_on_a_fresh_machine_names_the_install_step() {
    let root = fresh_root();
    let missing = root.path().join("etc/corepost");
    // The built-in /etc/corepost, only where it does not exist (the
    // command then cannot write anything).
    if Path::new("/etc/corepost").exists() {
        eprintln!("skipped the first half: /etc/corepost exists on this host");
    } else {
        let out = corepost(&["config", "-e", "relayhost = [smarthost.example.net]:587"]);
        assert_eq!(out.status.code(), Some(1));
        let text = stderr(&out);
        assert!(
            text.contains("cannot write /etc/corepost/main.cf: ")
                && text.contains("(`corepost install` creates /etc/corepost)"),
            "{text}"
        );
        assert!(!Path::new("/etc/corepost").exists());
    }
    // After the install step the README's tour step works.
    assert!(install(root.path()).status.success());
    let out = corepost(&[
        "config",
        "-c",
        &missing.display().to_string(),
        "-e",
        "relayhost = [smarthost.example.net]:587",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let main = std::fs::read_to_string(missing.join("main.cf")).unwrap();
    assert!(
        main.contains("\nrelayhost = [smarthost.example.net]:587"),
        "{main}"
    );
    assert!(
        main.starts_with("# corepost main.cf"),
        "the comments stay: {main}"
    );
}
