//! The Redis side of the shared throttles: one thread per process holding one
//! connection (the `redis` crate's synchronous client), fed by the cores over
//! a bounded channel and answering each request through a oneshot.
//!
//! The cores never block on it: they `try_send` and await the answer with a
//! timeout. The thread drains whatever requests are waiting and sends them as
//! one pipeline, so a busy node costs one round trip per batch, not per
//! message. A failed round trip drops the connection and answers every
//! waiting request with an error; the thread then reconnects at most once per
//! [`RETRY`], and [`super::Health`] tells the cores not to ask meanwhile.
//!
//! The scripts (atomic on the server, on the server's clock so nodes' clocks
//! do not matter):
//! - [`PACE`]: GCRA in its "virtual scheduling" form, one reserved slot per
//!   event: the key holds the theoretical arrival time (TAT, microseconds);
//!   a caller gets `max(TAT, now)` as its slot, TAT moves one interval on,
//!   and the answer is how long to wait for the slot. No burst: events start
//!   at least one interval apart across all nodes, as the local pacing.
//! - [`LEASE`]: a sorted set of connection leases scored by expiry
//!   (milliseconds): expired members are dropped, and a new member is added
//!   only while fewer than the limit remain. [`RENEW`] moves a member's
//!   expiry, adding it back if Redis lost it (a restarted Redis learns the
//!   open connections again within a third of the lease time, so the count
//!   is right again after at most that long); a release is a plain `ZREM`.

use super::{Answer, Ask, Health, Request};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a lost connection is tried again.
pub(super) const RETRY: Duration = Duration::from_secs(1);
/// Most requests sent in one pipeline.
const BATCH: usize = 256;

/// KEYS[1] the TAT key; ARGV[1] the interval in microseconds. Returns the
/// wait in microseconds.
pub(super) const PACE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval = tonumber(ARGV[1])
local slot = math.max(tat, now)
local after = slot + interval
redis.call('SET', KEYS[1], string.format('%d', after), 'PX', math.floor((after - now) / 1000) + 1000)
return slot - now
";

/// KEYS[1] the lease set; ARGV[1] member, ARGV[2] limit, ARGV[3] lifetime in
/// milliseconds. Returns 1 when the lease is granted, else 0.
pub(super) const LEASE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[3])), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
";

/// KEYS[1] the lease set; ARGV[1] member, ARGV[2] lifetime in milliseconds.
/// Returns 1 (the member's expiry changed or it was added back).
pub(super) const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('ZADD', KEYS[1], 'CH', string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return held
";

/// KEYS[1] the counter; ARGV[1] the window in milliseconds. The window
/// starts with its first event (as Postfix's anvil). Returns the count.
pub(super) const COUNT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
";

/// The scripts' SHA1s, loaded on every (re)connection.
struct Loaded {
    pace: String,
    lease: String,
    renew: String,
    count: String,
}

struct Link {
    conn: redis::Connection,
    scripts: Loaded,
}

/// Start the thread. It ends when every sender is gone.
pub(super) fn spawn(
    url: String,
    timeout: Duration,
    rx: flume::Receiver<Request>,
    health: Arc<Health>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("corepost-redis".into())
        .spawn(move || run(&url, timeout, &rx, &health))
        .map(drop)
}

fn run(url: &str, timeout: Duration, rx: &flume::Receiver<Request>, health: &Health) {
    let mut link = connect(url, timeout, health);
    let mut last_try = Instant::now();
    loop {
        let first = if link.is_some() {
            rx.recv().map_err(|_| flume::RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(RETRY)
        };
        let first = match first {
            Ok(r) => Some(r),
            Err(flume::RecvTimeoutError::Timeout) => None,
            Err(flume::RecvTimeoutError::Disconnected) => return,
        };
        if link.is_none() && last_try.elapsed() >= RETRY {
            link = connect(url, timeout, health);
            last_try = Instant::now();
        }
        let batch: Vec<Request> = first
            .into_iter()
            .chain(rx.try_iter().take(BATCH - 1))
            .collect();
        if batch.is_empty() {
            continue;
        }
        let answers = match &mut link {
            Some(l) => match round_trip(l, &batch) {
                Ok(a) => Some(a),
                Err(e) => {
                    health.down(&e.to_string());
                    link = None;
                    last_try = Instant::now();
                    None
                }
            },
            None => None,
        };
        reply(batch, answers);
    }
}

/// Connect and load the scripts; records the outcome in `health`.
fn connect(url: &str, timeout: Duration, health: &Health) -> Option<Link> {
    let attempt = || -> redis::RedisResult<Link> {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        let scripts = Loaded {
            pace: redis::Script::new(PACE).load(&mut conn)?,
            lease: redis::Script::new(LEASE).load(&mut conn)?,
            renew: redis::Script::new(RENEW).load(&mut conn)?,
            count: redis::Script::new(COUNT).load(&mut conn)?,
        };
        Ok(Link { conn, scripts })
    };
    match attempt() {
        Ok(l) => {
            health.up();
            Some(l)
        }
        Err(e) => {
            health.down(&e.to_string());
            None
        }
    }
}

/// Send the batch as one pipeline; one value per request.
fn round_trip(link: &mut Link, batch: &[Request]) -> redis::RedisResult<Vec<redis::Value>> {
    let mut pipe = redis::pipe();
    for req in batch {
        let s = &link.scripts;
        match &req.ask {
            Ask::Pace { key, interval } => {
                let us = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
                pipe.cmd("EVALSHA").arg(&s.pace).arg(1).arg(key).arg(us);
            }
            Ask::Lease {
                key,
                member,
                limit,
                lifetime,
            } => {
                pipe.cmd("EVALSHA")
                    .arg(&s.lease)
                    .arg(1)
                    .arg(key)
                    .arg(member)
                    .arg(*limit)
                    .arg(millis(*lifetime));
            }
            Ask::Renew {
                key,
                member,
                lifetime,
            } => {
                pipe.cmd("EVALSHA")
                    .arg(&s.renew)
                    .arg(1)
                    .arg(key)
                    .arg(member)
                    .arg(millis(*lifetime));
            }
            Ask::Release { key, member } => {
                pipe.cmd("ZREM").arg(key).arg(member);
            }
            Ask::Count { key, window } => {
                pipe.cmd("EVALSHA")
                    .arg(&s.count)
                    .arg(1)
                    .arg(key)
                    .arg(millis(*window));
            }
        }
    }
    pipe.query(&mut link.conn)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Answer every request of the batch (an error when there was no answer).
fn reply(batch: Vec<Request>, answers: Option<Vec<redis::Value>>) {
    let mut answers = answers.map(Vec::into_iter);
    for req in batch {
        let value = answers.as_mut().and_then(Iterator::next);
        let Some(tx) = req.reply else {
            continue;
        };
        let answer = match (value, &req.ask) {
            (Some(redis::Value::Int(us)), Ask::Pace { .. }) => Ok(Answer::Wait(
                Duration::from_micros(u64::try_from(us).unwrap_or(0)),
            )),
            (Some(redis::Value::Int(n)), Ask::Count { .. }) => {
                Ok(Answer::Count(u64::try_from(n).unwrap_or(0)))
            }
            (Some(redis::Value::Int(n)), _) => Ok(Answer::Granted(n == 1)),
            (Some(other), _) => Err(format!("unexpected reply {other:?}")),
            (None, _) => Err("Redis unreachable".to_string()),
        };
        let _ = tx.send(answer);
    }
}
