use super::*;
use corepost_config::Config;
use corepost_spool::RecipientState;

const BASE: &str = "myhostname = mx.example.com\nmydomain = example.com\nmyorigin = example.com\nrecipient_delimiter = +\n";

fn setup(extra: &str) -> (Router, Rewriter) {
    let dir = tempfile::tempdir().unwrap();
    let main_cf = format!("{BASE}{extra}");
    let config = Config::from_parts(dir.path(), Some(&main_cf), None).unwrap();
    let get = |n: &str| config.get(n);
    (
        Router::from_params(&get).unwrap(),
        Rewriter::from_params(&get).unwrap(),
    )
}

fn expand(extra: &str, address: &str) -> Result<Vec<String>, RewriteError> {
    let (router, rw) = setup(extra);
    rw.expand_virtual(&router, address)
}

fn rcpt(address: &str) -> Recipient {
    Recipient {
        address: address.into(),
        transport: "smtp".into(),
        nexthop: "x".into(),
        state: RecipientState::Pending,
        ..Recipient::default()
    }
}

#[test]
fn nothing_configured_is_inactive() {
    let (_, rw) = setup("");
    assert!(!rw.is_active());
    let (_, rw) = setup("virtual_alias_maps = inline:{ a@x.example=b@y.example }\n");
    assert!(rw.is_active());
    let (_, rw) = setup("sender_canonical_maps = inline:{ a@x.example=b@y.example }\n");
    assert!(rw.is_active());
}

#[test]
fn one_to_many_and_recursive() {
    let maps = "virtual_alias_maps = inline:{ {multi@r.example = x@r.example, fwd@r.example}, {fwd@r.example = b@r.example} }\n";
    assert_eq!(
        expand(maps, "multi@r.example").unwrap(),
        ["x@r.example", "b@r.example"]
    );
    assert_eq!(
        expand(maps, "other@r.example").unwrap(),
        ["other@r.example"]
    );
}

#[test]
fn an_address_may_expand_into_itself_once() {
    let maps = "virtual_alias_maps = inline:{ {a@r.example = a@r.example, b@r.example} }\n";
    assert_eq!(
        expand(maps, "a@r.example").unwrap(),
        ["a@r.example", "b@r.example"]
    );
}

#[test]
fn key_search_order_and_catch_all() {
    let maps = "virtual_alias_maps = inline:{ {@v.example = catch@r.example}, {info@v.example = info@r.example}, {user+tag@v.example = exact@r.example}, {postmaster = pm@r.example}, {@w.example = @r.example} }\n";
    assert_eq!(expand(maps, "info@v.example").unwrap(), ["info@r.example"]);
    assert_eq!(expand(maps, "zz@v.example").unwrap(), ["catch@r.example"]);
    assert_eq!(
        expand(maps, "user+tag@v.example").unwrap(),
        ["exact@r.example"]
    );
    // "user" keys only for local domains ($mydestination, $myorigin).
    assert_eq!(
        expand(maps, "postmaster@mx.example.com").unwrap(),
        ["pm@r.example"]
    );
    assert_eq!(
        expand(maps, "postmaster@example.com").unwrap(),
        ["pm@r.example"]
    );
    assert_eq!(
        expand(maps, "postmaster@r.example").unwrap(),
        ["postmaster@r.example"]
    );
    // "@other" keeps the whole local part.
    assert_eq!(expand(maps, "a+b@w.example").unwrap(), ["a+b@r.example"]);
}

#[test]
fn unmatched_extensions_are_propagated_unless_told_not_to() {
    let maps = "virtual_alias_maps = inline:{ {user@e.example = u2@r.example, u3} }\n";
    assert_eq!(
        expand(maps, "user+tag@e.example").unwrap(),
        ["u2+tag@r.example", "u3+tag@example.com"]
    );
    let no = format!("{maps}propagate_unmatched_extensions = canonical\n");
    assert_eq!(
        expand(&no, "user+tag@e.example").unwrap(),
        ["u2@r.example", "u3@example.com"]
    );
}

#[test]
fn limits_defer() {
    let deep = "virtual_alias_recursion_limit = 2\nvirtual_alias_maps = inline:{ {a@r.example = b@r.example}, {b@r.example = c@r.example}, {c@r.example = d@r.example} }\n";
    assert_eq!(
        expand(deep, "a@r.example"),
        Err(RewriteError::Limit(
            "unreasonable virtual_alias_maps map nesting for a@r.example -- message not accepted, try again later".into()
        ))
    );
    let wide = "virtual_alias_expansion_limit = 2\nvirtual_alias_maps = inline:{ {a@r.example = b@r.example, c@r.example, d@r.example} }\n";
    assert!(matches!(
        expand(wide, "a@r.example"),
        Err(RewriteError::Limit(w)) if w.contains("expansion size")
    ));
    // A loop ends at the recursion limit too.
    let looped = "virtual_alias_maps = inline:{ {a@r.example = b@r.example}, {b@r.example = a@r.example} }\n";
    assert!(matches!(
        expand(looped, "a@r.example"),
        Err(RewriteError::Limit(_))
    ));
}

#[test]
fn recipients_are_routed_deduplicated_and_remember_the_original() {
    let (router, rw) = setup(
        "relayhost = [10.0.0.1]\nvirtual_alias_maps = inline:{ {a@v.example = t@mx.example.com, u@r.example}, {b@v.example = u@r.example} }\n",
    );
    let out = rw
        .recipients(
            &router,
            "s@example.org",
            vec![
                rcpt("a@v.example"),
                rcpt("a@v.example"),
                rcpt("b@v.example"),
                rcpt("keep@r.example"),
            ],
        )
        .unwrap();
    let got: Vec<_> = out
        .iter()
        .map(|r| {
            (
                r.address.as_str(),
                r.original.as_deref(),
                r.transport.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("t@mx.example.com", Some("a@v.example"), "local"),
            ("u@r.example", Some("a@v.example"), "smtp"),
            ("u@r.example", Some("b@v.example"), "smtp"),
            ("keep@r.example", None, "smtp"),
        ]
    );
    assert_eq!(out[1].nexthop, "[10.0.0.1]");
    assert_eq!(
        out[3].nexthop, "x",
        "an unchanged recipient keeps its route"
    );
}

#[test]
fn canonical_maps_by_class() {
    let (router, rw) = setup(
        "sender_canonical_maps = inline:{ {s@old.example = s@new.example} }\ncanonical_maps = inline:{ {@new.example = @newer.example}, {r@old.example = r@new.example} }\ncanonical_classes = envelope_sender\n",
    );
    assert_eq!(
        rw.envelope_sender(&router, "s@old.example").unwrap(),
        "s@newer.example"
    );
    // canonical_maps is not for recipients here.
    let out = rw
        .recipients(&router, "s@example.org", vec![rcpt("r@old.example")])
        .unwrap();
    assert_eq!(out[0].address, "r@old.example");
    assert_eq!(rw.envelope_sender(&router, "").unwrap(), "");
    let (router, rw) = setup(
        "recipient_canonical_maps = inline:{ {r+x@old.example = r@new.example}, {q@old.example = q@new.example} }\n",
    );
    let out = rw
        .recipients(&router, "s@example.org", vec![rcpt("q+ext@old.example")])
        .unwrap();
    assert_eq!(out[0].address, "q+ext@new.example");
    assert_eq!(out[0].original.as_deref(), Some("q+ext@old.example"));
    assert!(
        rw.has_canonical_recipient(&router, "r+x@old.example")
            .unwrap()
    );
    assert!(
        !rw.has_canonical_recipient(&router, "z@old.example")
            .unwrap()
    );
}

#[test]
fn relocated_lookup_uses_the_virtual_key_order() {
    let (router, rw) = setup("");
    let maps = TableList::open(
        "inline:{ {moved@r.example = new@w.example}, {@gone.example = \"call 555\"} }",
    )
    .unwrap();
    assert_eq!(
        rw.lookup(&router, &maps, "moved+x@r.example")
            .unwrap()
            .as_deref(),
        Some("new@w.example")
    );
    assert_eq!(
        rw.lookup(&router, &maps, "who@gone.example")
            .unwrap()
            .as_deref(),
        Some("\"call 555\"")
    );
    assert_eq!(rw.lookup(&router, &maps, "x@r.example").unwrap(), None);
}

#[test]
fn myorigin_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mailname");
    assert_eq!(myorigin("Example.COM").unwrap(), "example.com");
    std::fs::write(&file, "Mail.Example.org\n").unwrap();
    assert_eq!(
        myorigin(file.to_str().unwrap()).unwrap(),
        "mail.example.org"
    );
    std::fs::write(&file, "\n").unwrap();
    assert_eq!(
        myorigin(file.to_str().unwrap()).unwrap_err(),
        format!("myorigin file {} is empty", file.display())
    );
    let missing = dir.path().join("nope");
    assert!(
        myorigin(missing.to_str().unwrap())
            .unwrap_err()
            .starts_with(&format!("open {}: ", missing.display()))
    );
}

#[test]
fn masquerading_hides_subdomains_as_postfix() {
    let (router, rw) = setup(
        "masquerade_domains = !keep.example.com, example.com, other.example\nmasquerade_exceptions = root\n",
    );
    assert!(rw.is_active());
    let m = |a: &str| rw.masquerade(a);
    assert_eq!(m("u@host.example.com").as_deref(), Some("u@example.com"));
    assert_eq!(m("u@a.b.example.com").as_deref(), Some("u@example.com"));
    assert_eq!(m("u@example.com"), None, "the domain itself is left alone");
    assert_eq!(
        m("u@x.keep.example.com"),
        None,
        "an excluded domain matches first"
    );
    assert_eq!(m("u@badexample.com"), None, "only at a dot");
    assert_eq!(m("root@host.example.com"), None, "masquerade_exceptions");
    // Classes: envelope sender and header addresses by default, not
    // envelope recipients.
    assert_eq!(
        rw.envelope_sender(&router, "u@h.other.example").unwrap(),
        "u@other.example"
    );
    assert_eq!(
        rw.header_address(&router, "u@h.other.example", false)
            .unwrap(),
        "u@other.example"
    );
    let out = rw
        .recipients(&router, "s@example.org", vec![rcpt("u@h.other.example")])
        .unwrap();
    assert_eq!(out[0].address, "u@h.other.example");
    let (router, rw) =
        setup("masquerade_domains = other.example\nmasquerade_classes = envelope_recipient\n");
    let out = rw
        .recipients(&router, "s@example.org", vec![rcpt("u@h.other.example")])
        .unwrap();
    assert_eq!(out[0].address, "u@other.example");
    assert_eq!(out[0].original.as_deref(), Some("u@h.other.example"));
    assert_eq!(
        rw.envelope_sender(&router, "u@h.other.example").unwrap(),
        "u@h.other.example"
    );
}

#[test]
fn no_address_mappings_turns_rewriting_off() {
    let (_, rw) = setup(
        "virtual_alias_maps = inline:{ a@x.example=b@y.example }\nreceive_override_options = no_address_mappings\n",
    );
    assert!(!rw.is_active());
}
