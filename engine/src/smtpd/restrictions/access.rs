//! Access tables: Postfix's `check_table_result` (what OK, REJECT, DEFER,
//! 4xx/5xx text, DUNNO, WARN, HOLD, DISCARD, REDIRECT, FILTER, PREPEND or a
//! restriction list as a table value means) and the lookups behind
//! `check_*_access` and `check_*_{a,mx}_access`.

use super::*;

impl Policy {
    /// `check_{client,helo,sender,recipient}_{a,mx}_access`: the access
    /// table applied to the host names (MX) and addresses behind a name
    /// (Postfix's check_server_access). A temporary DNS failure gives
    /// nothing here (as in Postfix), with a warning.
    pub(super) async fn server_access(
        &self,
        c: &Compiled,
        stage: Stage,
        f: &Facts<'_>,
        out: &mut Outcome,
        depth: usize,
    ) -> Decision {
        let name = c.restriction.name.as_str();
        let mx = name.ends_with("_mx_access");
        let domain_of = |a: &str| a.rsplit_once('@').map_or("", |(_, d)| d).to_string();
        let (target, stage) = if name.starts_with("check_client") {
            (f.client_name.to_string(), Stage::Client)
        } else if name.starts_with("check_helo") {
            (f.helo.unwrap_or_default().to_string(), Stage::Helo)
        } else if name.starts_with("check_sender") {
            (domain_of(f.sender.unwrap_or_default()), Stage::Sender)
        } else {
            let s = if stage == Stage::Relay {
                stage
            } else {
                Stage::Recipient
            };
            (domain_of(f.recipient.unwrap_or_default()), s)
        };
        let target = target.trim_end_matches('.').to_ascii_lowercase();
        if target.is_empty() || target == "unknown" {
            return Decision::Dunno;
        }
        if let Some(literal) = target.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            if !mx {
                return Decision::Dunno;
            }
            let ip = literal.trim_start_matches("ipv6:");
            let keys = client_keys("", ip, self.parent_access);
            return self.access(c, &keys, stage, f, out, depth).await;
        }
        let servers = match self.dns.servers(&target, mx).await {
            Ok(s) => s,
            Err(e) => {
                out.warnings.push(format!(
                    "Unable to look up {} host for {target}: {e}",
                    if mx { "MX" } else { "A" }
                ));
                return Decision::Dunno;
            }
        };
        for (host, addrs) in servers {
            if mx {
                let keys = domain_keys(&host, self.parent_access);
                match self.access(c, &keys, stage, f, out, depth).await {
                    Decision::Dunno => {}
                    other => return other,
                }
            }
            for addr in addrs {
                let keys = client_keys("", &addr.to_string(), self.parent_access);
                match self.access(c, &keys, stage, f, out, depth).await {
                    Decision::Dunno => {}
                    other => return other,
                }
            }
        }
        Decision::Dunno
    }

    /// An access(5) table lookup and its result.
    pub(super) async fn access(
        &self,
        c: &Compiled,
        keys: &[String],
        stage: Stage,
        f: &Facts<'_>,
        out: &mut Outcome,
        depth: usize,
    ) -> Decision {
        let Some(table) = &c.table else {
            return Decision::Dunno;
        };
        let found = match table.lookup_first(keys.iter().map(String::as_str)) {
            Ok(Some((_, v))) => v,
            Ok(None) => return Decision::Dunno,
            Err(e) => {
                out.warnings
                    .push(format!("{}: table lookup problem: {e}", c.restriction));
                return Decision::Reject(Reply::new(
                    451,
                    "4.3.0",
                    format!(
                        "<{}>: {} rejected: Temporary lookup failure",
                        reply_name(stage, f),
                        reply_class(stage)
                    ),
                ));
            }
        };
        let table_name = c.restriction.argument.clone().unwrap_or_default();
        self.table_result(&found, &table_name, stage, f, out, depth)
            .await_boxed()
            .await
    }

    /// Postfix's `check_table_result`: what an access-table (or policy
    /// server) value means. Returns a boxed future because a restriction
    /// list as the result recurses into [`Policy::run_list`].
    pub(super) fn table_result<'s>(
        &'s self,
        value: &str,
        table: &str,
        stage: Stage,
        f: &'s Facts<'s>,
        out: &'s mut Outcome,
        depth: usize,
    ) -> TableResult<'s> {
        let (name, class) = (reply_name(stage, f), reply_class(stage));
        let value = value.trim();
        let (action, text) = match value.split_once(char::is_whitespace) {
            Some((a, t)) => (a, t.trim()),
            None => (value, ""),
        };
        let upper = action.to_ascii_uppercase();
        let denied = |code: u16, default_dsn: &str, default_text: &str| {
            let (dsn, text) = split_dsn(text, default_dsn);
            Decision::Reject(Reply::with_status(
                code,
                &fix_dsn(code, &dsn),
                format!(
                    "<{name}>: {class} rejected: {}",
                    if text.is_empty() { default_text } else { text }
                ),
            ))
        };
        // Actions that need a mail transaction are skipped before MAIL.
        let needs_transaction = |what: &str, out: &mut Outcome| {
            if f.sender.is_none() {
                out.warnings.push(format!(
                    "access table {table}: with smtpd_delay_reject=no, action {what} is always skipped in Client host or Helo command restrictions"
                ));
                false
            } else {
                true
            }
        };
        let decision = match upper.as_str() {
            "OK" | "PERMIT" | "RELAY" => {
                self.log_permit(action, table, stage, f, out);
                Decision::Permit
            }
            "DUNNO" => Decision::Dunno,
            "REJECT" => denied(self.codes.access, "5.7.1", "Access denied"),
            "DEFER" => denied(self.codes.access_defer, "4.7.1", "Access denied"),
            "DEFER_IF_PERMIT" | "DEFER_IF_REJECT" => {
                let Decision::Reject(reply) = denied(450, "4.7.1", "Service unavailable") else {
                    return TableResult::Ready(Decision::Dunno);
                };
                if upper == "DEFER_IF_PERMIT" {
                    out.defer_if_permit.get_or_insert(reply);
                } else {
                    out.defer_if_reject.get_or_insert(reply);
                }
                Decision::Dunno
            }
            "WARN" => Decision::Warn(text.to_string()),
            "HOLD" => {
                if needs_transaction("HOLD", out) {
                    let why = if text.is_empty() {
                        "triggers HOLD action"
                    } else {
                        text
                    };
                    out.events
                        .push(("hold", format!("<{name}>: {class} {why}")));
                    out.actions.hold = true;
                }
                Decision::Dunno
            }
            "DISCARD" => {
                if needs_transaction("DISCARD", out) {
                    let why = if text.is_empty() {
                        "triggers DISCARD action"
                    } else {
                        text
                    };
                    out.events
                        .push(("discard", format!("<{name}>: {class} {why}")));
                    out.actions.discard = true;
                    Decision::Permit
                } else {
                    Decision::Dunno
                }
            }
            "FILTER" => {
                if !text.contains(':') {
                    out.warnings.push(format!(
                        "access table {table} entry \"{value}\" requires transport:destination"
                    ));
                } else if needs_transaction("FILTER", out) {
                    out.events.push((
                        "filter",
                        format!("<{name}>: {class} triggers FILTER {text}"),
                    ));
                    out.actions.filter = Some(text.to_string());
                }
                Decision::Dunno
            }
            "REDIRECT" => {
                if !text.contains('@') {
                    out.warnings.push(format!(
                        "access table {table} entry \"{value}\" requires user@domain target"
                    ));
                } else if needs_transaction("REDIRECT", out) {
                    out.events.push((
                        "redirect",
                        format!("<{name}>: {class} triggers REDIRECT {text}"),
                    ));
                    out.actions.redirect = Some(text.to_string());
                }
                Decision::Dunno
            }
            "PREPEND" => {
                let is_header = text.split_once(':').is_some_and(|(n, _)| {
                    !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                });
                if !is_header {
                    out.warnings.push(format!(
                        "access table {table} entry \"{value}\" requires header: text"
                    ));
                } else if needs_transaction("PREPEND", out) {
                    out.actions.prepend.push(text.to_string());
                }
                Decision::Dunno
            }
            "BCC" => {
                out.warnings.push(format!(
                    "access table {table}: action BCC is not supported in this release; ignored"
                ));
                Decision::Dunno
            }
            a if a.len() == 3
                && (a.starts_with('4') || a.starts_with('5'))
                && a.bytes().all(|b| b.is_ascii_digit())
                && !text.is_empty() =>
            {
                let code: u16 = a.parse().unwrap_or(554);
                denied(
                    code,
                    if code >= 500 { "5.7.1" } else { "4.7.1" },
                    "Access denied",
                )
            }
            a if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) => Decision::Permit,
            _ if value.contains(':') => {
                out.warnings.push(format!(
                    "access table {table} has entry with lookup table: {value}"
                ));
                out.warnings
                    .push("do not specify lookup tables inside SMTPD access maps".into());
                out.warnings
                    .push("define a restriction class and specify its name instead.".into());
                Decision::Reject(config_error())
            }
            _ => match parse_restrictions(value, &self.classes) {
                Ok(list) if list.is_empty() => Decision::Permit,
                Ok(list) => {
                    let compiled: Vec<Compiled> = list
                        .into_iter()
                        .map(|restriction| Compiled {
                            restriction,
                            table: None,
                        })
                        .collect();
                    return TableResult::List(Box::pin(async move {
                        self.run_list(&compiled, stage, f, out, depth + 1).await
                    }));
                }
                Err(e) => {
                    out.warnings
                        .push(format!("access table {table} entry \"{value}\": {e}"));
                    Decision::Reject(config_error())
                }
            },
        };
        TableResult::Ready(decision)
    }
}

/// The result of [`Policy::table_result`]: decided, or a restriction list
/// still to evaluate.
pub(super) enum TableResult<'s> {
    Ready(Decision),
    List(Eval<'s>),
}

impl<'s> TableResult<'s> {
    pub(super) fn await_boxed(self) -> Eval<'s> {
        match self {
            TableResult::Ready(d) => Box::pin(std::future::ready(d)),
            TableResult::List(f) => f,
        }
    }
}
