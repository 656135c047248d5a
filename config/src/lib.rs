//! corepost-config: Postfix-compatible configuration.
//!
//! This crate is corepost's equivalent of Postfix's `mail_params.h`,
//! `postconf.proto` and `util/dict_*`: it knows every parameter the engine
//! reads and its built-in default ([`registry`]), parses `main.cf`
//! ([`maincf`]) and `master.cf` ([`mastercf`]) with Postfix's rules, expands
//! `$name` references ([`expand`]), splits list values ([`list`]), opens
//! lookup tables ([`tables`]) and parses restriction lists
//! ([`restrictions`]). [`Config`] ties them together: the effective value of
//! any parameter, globally or for one master.cf service.
//!
//! Nothing here does network I/O or spawns threads; loading a configuration
//! reads files once and everything after that is in memory.

pub mod check;
pub mod config;
pub mod edit;
pub mod error;
pub mod expand;
pub mod fs_safety;
pub mod host;
pub mod list;
pub mod maincf;
pub mod master_transports;
pub mod mastercf;
pub mod owner_access;
pub mod params;
pub mod registry;
pub mod relay_guard;
pub mod restrictions;
pub mod tables;
pub mod tls_level;
pub mod unsupported;
pub mod users;
pub mod value;

pub use config::{BUILTIN_MASTER_CF, Config, ServiceConfig, default_config_dir};
pub use error::{ConfigError, Location};
