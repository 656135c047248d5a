use super::config::parse_rule;
use super::state::{self, GroupState};
use super::*;

fn fresh(name: &str) -> Arc<GroupState> {
    // Names are process-wide: each test uses its own.
    state::group(name)
}

#[test]
fn a_throttle_lowers_the_limits_until_it_ends() {
    let g = fresh("unit-throttle");
    let base = config::Limits {
        connection_limit: Some(10),
        message_interval: Some(Duration::from_millis(10)),
        ..config::Limits::default()
    };
    let rule = parse_rule(
        "421 => throttle connection_limit=2 message_rate=60/m for 1s",
        "f:1",
    )
    .unwrap();
    let act = g
        .trigger(&rule, ("a.test", None), "421 slow down", "4.0.0")
        .unwrap();
    // The same rule again while it is in force: not a second trigger.
    assert!(
        g.trigger(&rule, ("b.test", None), "421 slow down", "4.0.0")
            .is_none()
    );
    let l = g.effective(&base);
    assert_eq!(l.connection_limit, Some(2));
    assert_eq!(l.message_interval, Some(Duration::from_secs(1)));
    assert_eq!(g.report().triggers.get("throttle"), Some(&1));
    assert_eq!(g.end(act.id).map(|a| a.id), Some(act.id));
    assert_eq!(g.effective(&base), base);
}

#[test]
fn suspensions_cover_their_scope_and_a_bounce_wins() {
    let g = fresh("unit-scope");
    let domain = parse_rule("450 => suspend-domain for 60s", "f:1").unwrap();
    g.trigger(&domain, ("A.test", None), "450 busy", "4.2.1")
        .unwrap();
    assert!(g.blocking("a.test").is_some());
    assert!(g.blocking("b.test").is_none());
    let bounce = parse_rule("550 => bounce for 60s", "f:2").unwrap();
    g.trigger(&bounce, ("b.test", None), "550 blocked", "5.7.1")
        .unwrap();
    assert_eq!(g.blocking("a.test").unwrap().action, Action::Bounce);
    assert_eq!(g.blocking("c.test").unwrap().action, Action::Bounce);
}

/// `suspend-source` suspends the egress source whose connection got the reply, once per
/// source while in force; it never blocks the group, and without a source it does nothing.
#[test]
fn suspend_source_is_scoped_to_the_connections_source() {
    let g = fresh("unit-source");
    let rule = parse_rule("421 => suspend-source for 60s", "f:1").unwrap();
    assert!(g.trigger(&rule, ("a.test", None), "421", "4.7.0").is_none());
    let act = g
        .trigger(&rule, ("a.test", Some("ip1")), "421", "4.7.0")
        .unwrap();
    assert_eq!(act.scope.as_deref(), Some("source ip1"));
    assert!(
        g.trigger(&rule, ("b.test", Some("ip1")), "421", "4.7.0")
            .is_none()
    );
    assert!(
        g.trigger(&rule, ("a.test", Some("ip2")), "421", "4.7.0")
            .is_some()
    );
    assert!(g.blocking("a.test").is_none(), "the group still delivers");
}

#[test]
fn expired_actions_are_swept_once() {
    let g = fresh("unit-sweep");
    let rule = parse_rule("421 => suspend for 1s", "f:1").unwrap();
    g.trigger(&rule, ("a.test", None), "421", "4.0.0").unwrap();
    assert!(g.sweep().is_empty());
    std::thread::sleep(Duration::from_millis(1100));
    assert!(g.blocking("a.test").is_none());
    assert_eq!(g.sweep().len(), 1);
    assert!(g.sweep().is_empty());
}

#[test]
fn connections_and_slots_are_counted_across_threads() {
    let g = fresh("unit-conns");
    let taken: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| s.spawn(|| (0..10).filter(|_| g.try_connect(5)).count()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(taken, 5);
    g.release();
    assert!(g.try_connect(5));
    assert!(!g.try_connect(5));
    let i = Duration::from_millis(100);
    assert_eq!(g.reserve_message(i), Duration::ZERO);
    let w = g.reserve_message(i);
    assert!(w > Duration::from_millis(90) && w <= i, "{w:?}");
}

#[test]
fn rates_are_shown_as_written() {
    assert_eq!(state::show_rate(Duration::from_millis(100)), "10/s");
    assert_eq!(state::show_rate(Duration::from_secs(1)), "1/s");
    assert_eq!(state::show_rate(Duration::from_secs(60)), "1/m");
    assert_eq!(state::show_rate(Duration::from_secs(6)), "10/m");
    assert_eq!(state::show_rate(Duration::from_secs(3600) / 600), "10/m");
    assert_eq!(state::show_rate(Duration::from_secs(3600) / 7), "7/h");
    assert_eq!(state::per_hour(Duration::from_secs(6)), 600);
}
