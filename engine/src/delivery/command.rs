//! Running a delivery command (local `|command`, `mailbox_command`, the
//! pipe transport): the message on stdin, stdout and stderr captured
//! (bounded) for the bounce reason, optionally as another user, killed
//! when it outlives its time limit. Runs on a pool thread, never on a core.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Most bytes of a child's output kept for the delivery status.
const OUTPUT_LIMIT: usize = 2048;

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// argv; `argv[0]` is looked up in PATH.
    pub argv: Vec<String>,
    /// Replaces the environment (plus PATH).
    pub env: Vec<(String, String)>,
    /// uid/gid to run as (only applied when running as root).
    pub ids: Option<(u32, u32)>,
    pub cwd: Option<std::path::PathBuf>,
    pub time_limit: Duration,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    /// Could not start (the reason).
    NotStarted(String),
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub ending: Ending,
    /// stdout and stderr, interleaved as read, at most [`OUTPUT_LIMIT`]
    /// bytes, lossily decoded.
    pub output: String,
}

/// A shell command line as argv (`/bin/sh -c line`).
pub fn shell(line: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), line.into()]
}

/// Run `spec` with `input` on its stdin.
pub fn run(spec: &Spec, input: &[u8]) -> Outcome {
    let Some(program) = spec.argv.first() else {
        return Outcome {
            ending: Ending::NotStarted("empty command".into()),
            output: String::new(),
        };
    };
    let mut cmd = Command::new(program);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    if let Some((uid, gid)) = spec.ids
        && super::mailbox::running_as_root()
    {
        cmd.uid(uid).gid(gid);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                ending: Ending::NotStarted(format!("{program}: {e}")),
                output: String::new(),
            };
        }
    };
    let pid = child.id();
    // Feed stdin and drain the output on helper threads, so a child that
    // writes a lot before reading cannot deadlock us.
    let stdin = child.stdin.take();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            // A child that exits without reading everything closes the
            // pipe: EPIPE is not an error of the delivery.
            let _ = stdin.write_all(&input);
        }
    });
    let collected = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        let collected = std::sync::Arc::clone(&collected);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut c = collected.lock().unwrap_or_else(|p| p.into_inner());
                let room = OUTPUT_LIMIT.saturating_sub(c.len());
                c.extend_from_slice(&buf[..n.min(room)]);
            }
        })
    })
    .collect();
    let deadline = Instant::now() + spec.time_limit;
    let ending = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                use std::os::unix::process::ExitStatusExt;
                break match (status.code(), status.signal()) {
                    (Some(c), _) => Ending::Exited(c),
                    (None, Some(s)) => Ending::Signaled(s),
                    _ => Ending::Exited(-1),
                };
            }
            Ok(None) if Instant::now() >= deadline => {
                // The whole process group: a shell's children too.
                kill_group(pid);
                let _ = child.wait();
                break Ending::TimedOut;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Ending::NotStarted(format!("wait: {e}")),
        }
    };
    let _ = writer.join();
    if ending == Ending::TimedOut {
        // Grandchildren may still hold the pipes; do not wait for them.
        drop(readers);
    } else {
        for r in readers {
            let _ = r.join();
        }
    }
    let output = collected.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Outcome {
        ending,
        output: String::from_utf8_lossy(&output).into_owned(),
    }
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals a process group; it
        // touches no memory of ours. The group is the child's own
        // (process_group(0)), so nothing else is hit.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// The delivery status for a command's outcome (sysexits mapping).
pub fn status(outcome: &Outcome, what: &str) -> super::agent::Status {
    use super::agent::Status;
    match &outcome.ending {
        Ending::Exited(code) => {
            let mut s = super::agent::sysexit_status(*code, &outcome.output);
            if *code == 0 {
                s.text = format!("delivered to {what}");
            }
            s
        }
        Ending::Signaled(sig) => {
            Status::deferred("4.3.0", format!("{what}: command killed by signal {sig}"))
        }
        Ending::TimedOut => {
            Status::deferred("4.3.0", format!("{what}: command time limit exceeded"))
        }
        Ending::NotStarted(why) => Status::deferred("4.3.0", format!("{what}: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(line: &str, limit_ms: u64) -> Spec {
        Spec {
            argv: shell(line),
            env: vec![("X".into(), "y".into())],
            ids: None,
            cwd: None,
            time_limit: Duration::from_millis(limit_ms),
        }
    }

    #[test]
    fn input_output_and_exit_code() {
        let o = run(&spec("cat; echo \" $X\" >&2; exit 3", 5000), b"hello");
        assert_eq!(o.ending, Ending::Exited(3));
        // stdout and stderr are read concurrently: either order.
        assert!(
            o.output.contains("hello") && o.output.contains(" y\n"),
            "{}",
            o.output
        );
    }

    #[test]
    fn time_limit_kills() {
        let t = Instant::now();
        let o = run(&spec("sleep 30", 200), b"");
        assert_eq!(o.ending, Ending::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn child_not_reading_stdin() {
        let big = vec![b'x'; 1 << 20];
        let o = run(&spec("exit 0", 5000), &big);
        assert_eq!(o.ending, Ending::Exited(0));
    }
}
