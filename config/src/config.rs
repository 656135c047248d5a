//! [`Config`]: main.cf + master.cf + the registry, answering "what is the
//! effective value of this parameter?" globally or for one service.
//!
//! Precedence, as in Postfix: a service's `-o name=value` override, then
//! main.cf, then the built-in default. Values are expanded on demand; a
//! `$name` inside a value is looked up with the same precedence (so an `-o`
//! override of `myhostname` changes `$myhostname` inside that service).
//!
//! With no main.cf the built-in defaults apply; with no master.cf the
//! built-in [`BUILTIN_MASTER_CF`] does.

use crate::error::{ConfigError, Location};
use crate::expand::{self, ExpandError};
use crate::maincf::MainCf;
use crate::mastercf::{MasterCf, Service};
use crate::registry::{DefaultValue, Kind, Registry};
use crate::value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The services corepost runs when the configuration directory has no
/// master.cf: an SMTP server on an unprivileged loopback port (it listens
/// on `inet_interfaces`, loopback-only by default) and the delivery
/// transports the default address classes route to.
pub const BUILTIN_MASTER_CF: &str = "\
# corepost built-in master.cf, used when the configuration directory has none.
# service type  private unpriv  chroot  wakeup  maxproc command + args
2525      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
qmgr      unix  n       -       n       300     1       qmgr
bounce    unix  -       -       n       -       0       bounce
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
";

/// The configuration directory to use when none is given: `$COREPOST_CONFIG_DIR`,
/// else `/etc/corepost`.
pub fn default_config_dir() -> PathBuf {
    match std::env::var_os("COREPOST_CONFIG_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("/etc/corepost"),
    }
}

/// A loaded configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub config_dir: PathBuf,
    pub main: MainCf,
    pub master: MasterCf,
    pub registry: Registry,
    /// false when running on built-in defaults (no main.cf).
    pub has_main_cf: bool,
    /// false when the built-in master.cf is in use.
    pub has_master_cf: bool,
    /// Computed defaults, evaluated once at load.
    computed: HashMap<String, String>,
}

impl Config {
    /// Load `dir/main.cf` and `dir/master.cf`; either may be absent.
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        let main_path = dir.join("main.cf");
        let master_path = dir.join("master.cf");
        let main = read_optional(&main_path)?;
        let master = read_optional(&master_path)?;
        Config::from_parts(dir, main.as_deref(), master.as_deref())
    }

    /// Build from text (None = file absent). Paths in messages are
    /// `dir/main.cf` and `dir/master.cf`.
    pub fn from_parts(
        dir: &Path,
        main_text: Option<&str>,
        master_text: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let main_path = dir.join("main.cf");
        let master_path = dir.join("master.cf");
        let main = match main_text {
            Some(text) => MainCf::parse(text, &main_path)?,
            None => MainCf::parse("", &main_path)?,
        };
        let master = match master_text {
            Some(text) => MasterCf::parse(text, &master_path)?,
            None => MasterCf::parse(BUILTIN_MASTER_CF, Path::new("(built-in master.cf)"))?,
        };
        let registry = Registry::with_transports(
            master
                .services
                .iter()
                .map(|s| (s.name.as_str(), s.command.as_str())),
        );
        let mut config = Config {
            config_dir: dir.to_path_buf(),
            main,
            master,
            registry,
            has_main_cf: main_text.is_some(),
            has_master_cf: master_text.is_some(),
            computed: HashMap::new(),
        };
        config.compute_defaults();
        Ok(config)
    }

    /// Evaluate computed defaults in table order; a computed default that
    /// refers to one not yet computed sees it as empty, so this always
    /// terminates even when main.cf makes them refer to each other.
    fn compute_defaults(&mut self) {
        let computed: Vec<_> = self
            .registry
            .iter()
            .filter_map(|p| match p.default {
                DefaultValue::Computed(f) => Some((p.name.clone(), f)),
                DefaultValue::Text(_) => None,
            })
            .collect();
        self.computed.insert(
            "config_directory".into(),
            self.config_dir.display().to_string(),
        );
        // Table order, not the registry's alphabetical order, decides.
        let order: Vec<&str> = crate::params::PARAMS.iter().map(|d| d.name).collect();
        let mut computed = computed;
        computed.sort_by_key(|(name, _)| order.iter().position(|n| n == name));
        for (name, compute) in computed {
            if self.computed.contains_key(&name) {
                continue;
            }
            let value = compute(&|other: &str| self.get(other).unwrap_or_default());
            self.computed.insert(name, value);
        }
    }

    /// The built-in default of `name`, unexpanded.
    pub fn default_raw(&self, name: &str) -> Option<String> {
        let param = self.registry.get(name)?;
        Some(match &param.default {
            DefaultValue::Text(text) => text.to_string(),
            DefaultValue::Computed(_) => self.computed.get(name).cloned().unwrap_or_default(),
        })
    }

    /// The global raw value: main.cf, else the built-in default.
    pub fn raw(&self, name: &str) -> Option<String> {
        match self.main.get(name) {
            Some(v) => Some(v.to_string()),
            None => self.default_raw(name),
        }
    }

    /// The global effective value of `name`, expanded.
    pub fn get(&self, name: &str) -> Result<String, ConfigError> {
        self.expand_in(None, name)
    }

    /// Expand arbitrary text in the global context.
    pub fn expand(&self, text: &str) -> Result<String, ExpandError> {
        expand::expand(text, &|n: &str| self.raw(n))
    }

    /// The view of one master.cf service (`smtp`, `smtp/inet`).
    pub fn service(&self, spec: &str) -> Option<ServiceConfig<'_>> {
        self.master.find(spec).map(|service| ServiceConfig {
            config: self,
            service,
        })
    }

    /// Every service's view, in master.cf order.
    pub fn services(&self) -> impl Iterator<Item = ServiceConfig<'_>> {
        self.master.services.iter().map(|service| ServiceConfig {
            config: self,
            service,
        })
    }

    fn expand_in(&self, service: Option<&Service>, name: &str) -> Result<String, ConfigError> {
        let lookup = |n: &str| -> Option<String> {
            if let Some(v) = service.and_then(|s| s.override_value(n)) {
                return Some(v.to_string());
            }
            self.raw(n)
        };
        if self.registry.get(name).is_some_and(|p| p.raw) {
            return Ok(lookup(name).unwrap_or_default());
        }
        expand::expand_named(name, &lookup)
            .map_err(|e| self.value_error(service, name, e.to_string()))
    }

    /// A value error located where `name` was set.
    fn value_error(&self, service: Option<&Service>, name: &str, message: String) -> ConfigError {
        let origin = match service.filter(|s| s.override_value(name).is_some()) {
            Some(s) => format!("{}: ", Location::new(&self.master.path, s.line)),
            None => match self.main.entry(name) {
                Some(e) => format!("{}: ", Location::new(&self.main.path, e.line)),
                None => String::new(),
            },
        };
        ConfigError::Value {
            name: name.to_string(),
            origin,
            message,
        }
    }

    /// Names set in main.cf (and -o) that are neither known parameters nor
    /// referenced anywhere: Postfix's "unused parameter" warnings, plus the
    /// parser's "overriding earlier entry" warnings.
    /// Names corepost knows as unsupported Postfix parameters are reported
    /// by [`crate::unsupported::findings`] instead.
    pub fn warnings(&self) -> Vec<String> {
        let unsupported = |name: &str| crate::unsupported::lookup(name).is_some();
        let mut out = self.main.warnings.clone();
        let used = self.referenced_names();
        for name in self.main.names() {
            if !self.registry.contains(name) && !used.contains(name) && !unsupported(name) {
                out.push(format!(
                    "{}: unused parameter: {}={}",
                    self.main.path.display(),
                    name,
                    self.main.get(name).unwrap_or_default()
                ));
            }
        }
        for service in &self.master.services {
            for o in &service.overrides {
                if !self.registry.contains(&o.name)
                    && !used.contains(o.name.as_str())
                    && !unsupported(&o.name)
                {
                    out.push(format!(
                        "{}, line {}: service {}: unused parameter: {}={}",
                        self.master.path.display(),
                        service.line,
                        service.id(),
                        o.name,
                        o.value
                    ));
                }
            }
        }
        out
    }

    /// Every name referenced by `$name` from any value (main.cf, -o
    /// overrides, built-in defaults), plus restriction class names.
    pub fn referenced_names(&self) -> HashSet<String> {
        let mut used = HashSet::new();
        let mut values: Vec<String> = self.main.entries.iter().map(|e| e.value.clone()).collect();
        for s in &self.master.services {
            values.extend(s.overrides.iter().map(|o| o.value.clone()));
        }
        for p in self.registry.iter() {
            if let DefaultValue::Text(t) = &p.default {
                values.push(t.to_string());
            }
        }
        for v in &values {
            used.extend(expand::references(v));
        }
        if let Ok(classes) = self.get("smtpd_restriction_classes") {
            used.extend(crate::list::split_list(&classes).unwrap_or_default());
        }
        for s in &self.master.services {
            if let Some(v) = s.override_value("smtpd_restriction_classes") {
                used.extend(crate::list::split_list(v).unwrap_or_default());
            }
        }
        used
    }

    // Typed global accessors; each validates with the parameter's syntax.

    pub fn get_bool(&self, name: &str) -> Result<bool, ConfigError> {
        typed(self.get(name)?, value::parse_bool, |m| {
            self.value_error(None, name, m)
        })
    }

    pub fn get_int(&self, name: &str) -> Result<i64, ConfigError> {
        typed(self.get(name)?, value::parse_int, |m| {
            self.value_error(None, name, m)
        })
    }

    pub fn get_size(&self, name: &str) -> Result<u64, ConfigError> {
        typed(self.get(name)?, value::parse_size, |m| {
            self.value_error(None, name, m)
        })
    }

    pub fn get_time(&self, name: &str) -> Result<Duration, ConfigError> {
        let unit = self.time_unit(name);
        typed(
            self.get(name)?,
            |v| value::parse_time(v, unit),
            |m| self.value_error(None, name, m),
        )
    }

    pub fn get_list(&self, name: &str) -> Result<Vec<String>, ConfigError> {
        typed(
            self.get(name)?,
            |v| crate::list::split_list(v).map_err(|e| e.to_string()),
            |m| self.value_error(None, name, m),
        )
    }

    fn time_unit(&self, name: &str) -> char {
        match self.registry.get(name).map(|p| p.kind) {
            Some(Kind::Time(unit)) => unit,
            _ => 's',
        }
    }
}

fn typed<T>(
    value: String,
    parse: impl Fn(&str) -> Result<T, String>,
    error: impl Fn(String) -> ConfigError,
) -> Result<T, ConfigError> {
    parse(&value).map_err(error)
}

fn read_optional(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// One master.cf service's view of the configuration: its `-o` overrides
/// on top of the global values.
#[derive(Debug, Clone, Copy)]
pub struct ServiceConfig<'a> {
    pub config: &'a Config,
    pub service: &'a Service,
}

impl ServiceConfig<'_> {
    /// The effective value of `name` for this service, expanded.
    pub fn get(&self, name: &str) -> Result<String, ConfigError> {
        self.config.expand_in(Some(self.service), name)
    }

    /// The raw value: `-o` override, main.cf, default.
    pub fn raw(&self, name: &str) -> Option<String> {
        match self.service.override_value(name) {
            Some(v) => Some(v.to_string()),
            None => self.config.raw(name),
        }
    }

    pub fn get_bool(&self, name: &str) -> Result<bool, ConfigError> {
        typed(self.get(name)?, value::parse_bool, |m| {
            self.config.value_error(Some(self.service), name, m)
        })
    }

    pub fn get_int(&self, name: &str) -> Result<i64, ConfigError> {
        typed(self.get(name)?, value::parse_int, |m| {
            self.config.value_error(Some(self.service), name, m)
        })
    }

    pub fn get_time(&self, name: &str) -> Result<Duration, ConfigError> {
        let unit = self.config.time_unit(name);
        typed(
            self.get(name)?,
            |v| value::parse_time(v, unit),
            |m| self.config.value_error(Some(self.service), name, m),
        )
    }

    pub fn get_list(&self, name: &str) -> Result<Vec<String>, ConfigError> {
        typed(
            self.get(name)?,
            |v| crate::list::split_list(v).map_err(|e| e.to_string()),
            |m| self.config.value_error(Some(self.service), name, m),
        )
    }
}
