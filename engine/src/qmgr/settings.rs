//! [`QmgrSettings`]: what the queue manager needs from the configuration —
//! retry and lifetime limits, and per transport its kind, concurrency and
//! recipient limits and SMTP client settings. Built on the main thread at
//! start and at reload, shared read-only by the cores.

use crate::delivery::smtp::ClientSettings;
use crate::dns::{NexthopOptions, ResolverConfig};
use corepost_config::Config;
use corepost_config::mastercf::ServiceType;
use std::collections::HashMap;
use std::time::Duration;

/// What delivers mail for a transport (master.cf's command).
// One value per transport, built at start and reload: the size of the SMTP
// variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum TransportKind {
    /// smtp(8) and lmtp(8): the SMTP client, in LMTP mode for lmtp.
    Smtp(ClientSettings),
    Discard,
    Error,
    /// local(8): aliases, .forward, mailboxes (off the cores).
    Local(std::sync::Arc<crate::delivery::local::LocalSettings>),
    /// pipe(8): an external command (off the cores).
    Pipe(std::sync::Arc<crate::delivery::pipe::PipeSettings>),
    /// virtual(8): hosted mailboxes (off the cores).
    Virtual(std::sync::Arc<crate::delivery::r#virtual::VirtualSettings>),
    /// A delivery agent corepost does not have yet: mail is deferred, never
    /// lost.
    NotImplemented(String),
}

#[derive(Debug, Clone)]
pub struct TransportSettings {
    pub kind: TransportKind,
    pub concurrency: usize,
    /// `<transport>_initial_destination_concurrency`: connections a
    /// destination starts with before feedback moves the window.
    pub initial_concurrency: usize,
    /// `<transport>_destination_concurrency_{positive,negative}_feedback`
    /// and `_failed_cohort_limit` (see [`super::window`]).
    pub feedback: super::window::FeedbackSettings,
    pub recipient_limit: usize,
    /// `<transport>_destination_rate_delay`: pause between deliveries to
    /// one destination; when set, one connection per destination (as
    /// Postfix).
    pub rate_delay: Duration,
    /// master.cf maxproc (or `default_process_limit`): the size of the
    /// thread pool of an off-core agent (local, virtual, pipe).
    pub process_limit: usize,
}

#[derive(Debug, Clone)]
pub struct QmgrSettings {
    pub minimal_backoff: Duration,
    pub maximal_backoff: Duration,
    pub maximal_queue_lifetime: Duration,
    pub bounce_queue_lifetime: Duration,
    /// `delay_warning_time` (zero: never warn).
    pub delay_warning: Duration,
    /// `soft_bounce`: hard failures are deferred instead of bounced.
    pub soft_bounce: bool,
    /// `lmtp_assume_final`: LMTP success is "delivered", not "relayed".
    pub lmtp_assume_final: bool,
    /// main.cf's `smtp_connection_*` limits. Workers use their transport's own
    /// (`ClientSettings`: `smtp_*` or `lmtp_*`, with master.cf `-o` overrides).
    pub cache_time_limit: Duration,
    pub reuse_time_limit: Duration,
    /// `smtp_connection_reuse_count_limit`: transactions per connection (0 = no limit).
    pub reuse_count_limit: u32,
    pub transports: HashMap<String, TransportSettings>,
    pub nexthop: NexthopOptions,
    pub resolver: ResolverConfig,
    /// Routes notices (bounces) like smtpd routes mail.
    pub router: crate::routing::Router,
    pub bounce: crate::bounce::BounceSettings,
    pub policy_maps: corepost_config::tables::TableList,
    /// `corepost_shaping_files`, merged (empty: no shaping).
    pub shaping: std::sync::Arc<crate::shaping::Shaping>,
    /// `qmgr_message_active_limit`: most messages being delivered at once,
    /// across the cores.
    pub message_active_limit: usize,
    /// `destination_concurrency_feedback_debug`: log every window change.
    pub feedback_debug: bool,
    /// `corepost_shared_throttle_redis`: the policy limits shared with
    /// other nodes (None: this node's alone).
    pub cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
    /// Egress pools: which source address each SMTP connection leaves from.
    pub egress: crate::egress::EgressSettings,
}

fn transport_time(
    config: &Config,
    transport: &str,
    suffix: &str,
    fallback: &str,
) -> Result<Duration, String> {
    let name = format!("{transport}_{suffix}");
    let name = if config.registry.contains(&name) {
        name
    } else {
        fallback.to_string()
    };
    config.get_time(&name).map_err(|e| e.to_string())
}

fn transport_int(
    config: &Config,
    transport: &str,
    suffix: &str,
    fallback: &str,
) -> Result<i64, String> {
    let name = format!("{transport}_{suffix}");
    if config.registry.contains(&name) {
        config.get_int(&name).map_err(|e| e.to_string())
    } else {
        config.get_int(fallback).map_err(|e| e.to_string())
    }
}

fn transport_text(config: &Config, transport: &str, suffix: &str) -> Result<String, String> {
    let name = format!("{transport}_{suffix}");
    let name = if config.registry.contains(&name) {
        name
    } else {
        format!("default_{suffix}")
    };
    config.get(&name).map_err(|e| e.to_string())
}

fn transport_feedback(
    config: &Config,
    transport: &str,
) -> Result<super::window::FeedbackSettings, String> {
    use super::window::{Feedback, FeedbackSettings};
    let feedback = |suffix: &str| {
        Feedback::parse(&transport_text(config, transport, suffix)?)
            .map_err(|e| format!("transport {transport}: {suffix}: {e}"))
    };
    let cohorts = transport_int(
        config,
        transport,
        "destination_concurrency_failed_cohort_limit",
        "default_destination_concurrency_failed_cohort_limit",
    )?;
    Ok(FeedbackSettings {
        positive: feedback("destination_concurrency_positive_feedback")?,
        negative: feedback("destination_concurrency_negative_feedback")?,
        failed_cohort_limit: u32::try_from(cohorts).unwrap_or(0),
    })
}

impl QmgrSettings {
    pub fn from_config(config: &Config) -> Result<QmgrSettings, String> {
        let time = |n: &str| config.get_time(n).map_err(|e| e.to_string());
        let mut transports = HashMap::new();
        for s in config
            .master
            .services
            .iter()
            .filter(|s| s.kind == ServiceType::Unix)
        {
            let kind = match s.command.as_str() {
                "smtp" | "lmtp" => {
                    let view = config.service(&s.id()).ok_or("service vanished")?;
                    let get = |n: &str| view.get(n);
                    TransportKind::Smtp(ClientSettings::for_protocol(
                        &get,
                        &s.name,
                        s.command == "lmtp",
                    )?)
                }
                "discard" => TransportKind::Discard,
                "error" => TransportKind::Error,
                "local" => {
                    let view = config.service(&s.id()).ok_or("service vanished")?;
                    let get = |n: &str| view.get(n);
                    TransportKind::Local(std::sync::Arc::new(
                        crate::delivery::local::LocalSettings::from_params(
                            &get,
                            &|n| view.raw(n),
                            &s.name,
                        )?,
                    ))
                }
                "pipe" => {
                    let view = config.service(&s.id()).ok_or("service vanished")?;
                    let limit =
                        transport_time(config, &s.name, "time_limit", "command_time_limit")?;
                    TransportKind::Pipe(std::sync::Arc::new(
                        crate::delivery::pipe::PipeSettings::parse(
                            &s.name,
                            &s.args,
                            limit,
                            &view.get("recipient_delimiter").map_err(|e| e.to_string())?,
                        )?,
                    ))
                }
                "virtual" => {
                    let view = config.service(&s.id()).ok_or("service vanished")?;
                    let get = |n: &str| view.get(n);
                    TransportKind::Virtual(std::sync::Arc::new(
                        crate::delivery::r#virtual::VirtualSettings::from_params(&get)?,
                    ))
                }
                _ => continue,
            };
            let concurrency = transport_int(
                config,
                &s.name,
                "destination_concurrency_limit",
                "default_destination_concurrency_limit",
            )?;
            let initial = transport_int(
                config,
                &s.name,
                "initial_destination_concurrency",
                "initial_destination_concurrency",
            )?;
            let recipients = transport_int(
                config,
                &s.name,
                "destination_recipient_limit",
                "default_destination_recipient_limit",
            )?;
            let rate_delay = transport_time(
                config,
                &s.name,
                "destination_rate_delay",
                "default_destination_rate_delay",
            )?;
            let process_limit = match s.max_proc {
                Some(n) if n > 0 => n as usize,
                _ => usize::try_from(
                    config
                        .get_int("default_process_limit")
                        .map_err(|e| e.to_string())?,
                )
                .unwrap_or(100)
                .max(1),
            };
            transports.insert(
                s.name.clone(),
                TransportSettings {
                    kind,
                    concurrency: usize::try_from(concurrency).unwrap_or(1).max(1),
                    initial_concurrency: usize::try_from(initial).unwrap_or(1).max(1),
                    feedback: transport_feedback(config, &s.name)?,
                    recipient_limit: usize::try_from(recipients).unwrap_or(1).max(1),
                    rate_delay,
                    process_limit,
                },
            );
        }
        let mut resolver = ResolverConfig::from_config(
            config,
            std::path::Path::new(crate::dns::resolv_conf::RESOLV_CONF),
        )
        .unwrap_or_else(|_| ResolverConfig::with_servers(Vec::new()));
        let nexthop = NexthopOptions::from_config(config, 25).map_err(|e| e.to_string())?;
        // `smtp_dns_support_level = dnssec`: queries carry DO and answers keep their AD bit.
        resolver.dnssec = nexthop.dnssec;
        Ok(QmgrSettings {
            minimal_backoff: time("minimal_backoff_time")?,
            maximal_backoff: time("maximal_backoff_time")?,
            maximal_queue_lifetime: time("maximal_queue_lifetime")?,
            bounce_queue_lifetime: time("bounce_queue_lifetime")?,
            delay_warning: time("delay_warning_time")?,
            soft_bounce: config.get_bool("soft_bounce").map_err(|e| e.to_string())?,
            lmtp_assume_final: config
                .get_bool("lmtp_assume_final")
                .map_err(|e| e.to_string())?,
            cache_time_limit: time("smtp_connection_cache_time_limit")?,
            reuse_time_limit: time("smtp_connection_reuse_time_limit")?,
            reuse_count_limit: u32::try_from(
                config
                    .get_int("smtp_connection_reuse_count_limit")
                    .map_err(|e| e.to_string())?,
            )
            .unwrap_or(0),
            transports,
            nexthop,
            resolver,
            router: crate::routing::Router::from_params(&|n| config.get(n))?,
            bounce: crate::bounce::BounceSettings::from_params(&|n| config.get(n))?,
            policy_maps: corepost_config::tables::TableList::open(
                &config
                    .get("corepost_destination_policy_maps")
                    .map_err(|e| e.to_string())?,
            )
            .map_err(|e| format!("corepost_destination_policy_maps: {e}"))?,
            shaping: std::sync::Arc::new(crate::shaping::Shaping::from_config(config)?),
            message_active_limit: usize::try_from(
                config
                    .get_int("qmgr_message_active_limit")
                    .map_err(|e| e.to_string())?,
            )
            .unwrap_or(1)
            .max(1),
            feedback_debug: config
                .get_bool("destination_concurrency_feedback_debug")
                .map_err(|e| e.to_string())?,
            cluster: crate::cluster::Cluster::shared(
                &crate::cluster::ClusterSettings::from_config(config)?,
            ),
            egress: crate::egress::EgressSettings::from_config(config)?,
        })
    }
}
