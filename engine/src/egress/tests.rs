use super::*;
use std::path::Path;

fn egress(text: &str) -> Egress {
    Egress::parse(Path::new("egress.conf"), text).unwrap()
}

fn take(pool: &Pool, dest: &str, limit: usize) -> Result<Lease, String> {
    match choose(pool, dest, limit) {
        Choice::Chosen(l) => Ok(l),
        Choice::Busy => Err("busy".into()),
        Choice::Unavailable { dsn, text } => Err(format!("{dsn} {text}")),
    }
}

#[test]
fn weights_give_exact_proportions_in_a_smooth_order() {
    let e =
        egress("source a 192.0.2.1\nsource b 192.0.2.2\nsource c 192.0.2.3\npool p a:5 b:1 c:1\n");
    let pool = &e.pools["p"];
    let order: String = (0..14)
        .map(|_| {
            take(pool, "smtp:weights.example", 100)
                .unwrap()
                .source
                .name
                .clone()
        })
        .collect();
    // nginx's smooth WRR: a's turns are spread out, not five in a row.
    assert_eq!(order, "aabacaaaabacaa");
}

#[test]
fn source_concurrency_limit_skips_to_other_members_then_is_busy() {
    let e = egress(
        "source a 192.0.2.1 concurrency=1\nsource b 192.0.2.2 concurrency=1\npool p a:9 b:1\n",
    );
    let pool = &e.pools["p"];
    let first = take(pool, "smtp:limit.example", 100).unwrap();
    let second = take(pool, "smtp:limit.example", 100).unwrap();
    assert_eq!(
        (first.source.name.as_str(), second.source.name.as_str()),
        ("a", "b")
    );
    assert_eq!(take(pool, "smtp:limit.example", 100).unwrap_err(), "busy");
    // Another destination has its own counts.
    assert!(take(pool, "smtp:other.example", 100).is_ok());
    drop(first);
    assert_eq!(
        take(pool, "smtp:limit.example", 100).unwrap().source.name,
        "a"
    );
}

#[test]
fn destination_limit_holds_across_pools() {
    let e = egress("source a 192.0.2.1\nsource b 192.0.2.2\npool p a\npool q b\n");
    let one = take(&e.pools["p"], "smtp:shared.example", 2).unwrap();
    let two = take(&e.pools["q"], "smtp:shared.example", 2).unwrap();
    assert_eq!(
        take(&e.pools["q"], "smtp:shared.example", 2).unwrap_err(),
        "busy"
    );
    drop((one, two));
    assert!(take(&e.pools["q"], "smtp:shared.example", 2).is_ok());
}

#[test]
fn warmup_cap_spills_to_the_other_member_then_defers() {
    let e = egress(
        "source new 192.0.2.1 warmup_start=2000-01-01 warmup_daily=2 warmup_growth=1\n\
         source old 192.0.2.2 warmup_start=2000-01-01 warmup_daily=3 warmup_growth=1\n\
         pool p new:100 old:1\n",
    );
    let pool = &e.pools["p"];
    let dest = "smtp:warm.example";
    let lease = take(pool, dest, 100).unwrap();
    assert_eq!(lease.source.name, "new");
    assert!(lease.admit().is_ok() && lease.admit().is_ok());
    assert_eq!(lease.admit().unwrap_err(), "new reached its warm-up limit");
    drop(lease);
    let lease = take(pool, dest, 100).unwrap();
    assert_eq!(lease.source.name, "old");
    for _ in 0..3 {
        assert!(lease.admit().is_ok());
    }
    assert!(lease.admit().is_err());
    drop(lease);
    let why = take(pool, dest, 100).unwrap_err();
    assert_eq!(
        why,
        "4.4.5 egress pool p: no source may send now: new reached its warm-up limit (2 today), old reached its warm-up limit (3 today)"
    );
}

#[test]
fn rate_reserves_spaced_slots() {
    let e = egress("source a 192.0.2.1 rate=10/s\npool p a\n");
    let lease = take(&e.pools["p"], "smtp:rate.example", 100).unwrap();
    let waits: Vec<Duration> = (0..3).map(|_| lease.admit().unwrap()).collect();
    assert_eq!(waits[0], Duration::ZERO);
    assert!(waits[1] > Duration::from_millis(90) && waits[2] > Duration::from_millis(190));
}

#[test]
fn suspended_sources_are_skipped_until_resumed() {
    let e = egress("source s1 192.0.2.1\nsource s2 192.0.2.2\npool p s1 s2\n");
    let pool = &e.pools["p"];
    suspend("s1", Instant::now() + Duration::from_secs(60));
    let lease = take(pool, "smtp:susp.example", 100).unwrap();
    assert_eq!(lease.source.name, "s2");
    suspend("s2", Instant::now() + Duration::from_secs(60));
    assert_eq!(lease.admit().unwrap_err(), "s2 is suspended");
    assert!(
        take(pool, "smtp:susp.example", 100)
            .unwrap_err()
            .contains("s1 is suspended, s2 is suspended")
    );
    resume("s1");
    resume("s2");
    assert!(suspended_until("s1").is_none());
    assert!(lease.admit().is_ok());
}

#[test]
fn client_settings_take_the_source_addresses_and_helo() {
    let e = egress(
        "source a 192.0.2.1 address6=2001:db8::1 helo=a.example\nsource b 2001:db8::2\npool p a\npool q b\n",
    );
    let base = ClientSettings::for_tests(crate::delivery::smtp::TlsLevel::None, false);
    let a = take(&e.pools["p"], "smtp:c.example", 100).unwrap();
    let c = a.client(&base);
    assert_eq!(c.bind_address, "192.0.2.1".parse().ok());
    assert_eq!(c.bind_address6, "2001:db8::1".parse().ok());
    assert_eq!(c.helo_name, "a.example");
    assert!(c.bind_address_enforce);
    let b = take(&e.pools["q"], "smtp:c.example", 100).unwrap();
    let c = b.client(&base);
    assert_eq!(
        (c.bind_address, c.helo_name.as_str()),
        (None, "client.test")
    );
    assert_eq!(c.bind_address6, "2001:db8::2".parse().ok());
}

#[test]
fn sender_table_then_transport_pool() {
    let e = egress("source a 192.0.2.1\npool bulk a\npool news a\n");
    let settings = EgressSettings {
        egress: Some(Arc::new(e)),
        sender_maps: Some(
            TableList::open("inline:{ @news.example=news, vip@news.example=DUNNO, <>=bulk }")
                .unwrap(),
        ),
        transport_pools: HashMap::from([
            ("smtp".to_string(), "bulk".to_string()),
            ("plain".to_string(), String::new()),
        ]),
        recipient_delimiter: "+".into(),
    };
    let pool = |sender: &str, transport: &str| {
        settings.pool_for(settings.sender_pool(sender).as_deref(), transport)
    };
    assert_eq!(pool("x+y@NEWS.example", "smtp"), "news");
    assert_eq!(pool("vip@news.example", "smtp"), "bulk");
    assert_eq!(pool("x@other.example", "smtp"), "bulk");
    assert_eq!(pool("x@news.example", "plain"), "news");
    assert_eq!(pool("x@other.example", "plain"), "");
    assert_eq!(pool("", "plain"), "bulk");
    // Not an smtp transport: no pools.
    assert_eq!(pool("x@news.example", "local"), "");
}

#[test]
fn a_destination_is_paced_across_its_pools() {
    let e = egress("source a 192.0.2.1\nsource b 192.0.2.2\npool p a\npool q b\n");
    let one = take(&e.pools["p"], "smtp:paced.example", 100).unwrap();
    let two = take(&e.pools["q"], "smtp:paced.example", 100).unwrap();
    let interval = Duration::from_millis(100);
    assert_eq!(
        one.destination_slot(Paced::Message, interval),
        Duration::ZERO
    );
    assert!(two.destination_slot(Paced::Message, interval) > Duration::from_millis(90));
    // New connections have their own schedule; another destination is not paced.
    assert_eq!(
        two.destination_slot(Paced::Connection, interval),
        Duration::ZERO
    );
    let other = take(&e.pools["q"], "smtp:unpaced.example", 100).unwrap();
    assert_eq!(
        other.destination_slot(Paced::Message, interval),
        Duration::ZERO
    );
}
