//! Configuration: the TOML file, its defaults, and the flags that override it.
//!
//! Every setting has a default, so an empty file (or none) is a valid configuration. Durations
//! are strings such as `"1s"` or `"250ms"`; sizes are byte counts or strings such as `"64mb"`.
//! `config/slotproxy.toml` documents each setting and must stay in step with this file (a test
//! parses every file under `config/`).

use anyhow::{bail, Context};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// The proxy's settings.
///
/// Invariant: every field is listed in [`SETTINGS`] (a unit test checks it), which says whether
/// it may change while the proxy runs; `PROXY CONFIG`, SIGHUP and the reference file all work
/// from that list.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address clients connect to.
    pub listen: String,
    /// Cluster nodes to learn the topology from (`host:port`); any one reachable node is enough.
    pub seeds: Vec<String>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// How often the slot map is re-read when nothing triggers a refresh (jittered by up to 20%).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub refresh_interval: Duration,
    /// Shortest time between two refreshes, so a burst of MOVED replies causes one refresh.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub refresh_min_gap: Duration,
    /// Longest wait for a backend reply, counted from the moment the request was written.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub request_timeout: Duration,
    /// Longest wait for a backend TCP connection.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// Longest wait before reconnecting to a node that failed; doubles from 50 ms up to this.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub reconnect_backoff_max: Duration,
    /// Multiplexed connections per worker and node.
    pub connections_per_node: usize,
    /// Where reads (commands Redis flags `readonly`) go: `master` (every request to the slot's
    /// master), `prefer-replica` (a usable replica of that master, else the master), `replica`
    /// (usable replicas only; an error when there is none) or `any` (master and usable
    /// replicas in turn).
    pub read_from: String,
    /// A replica serves reads only while its replication lag, measured from `INFO
    /// replication` offsets, is at most this (and its link to the master is up).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub max_replica_lag: Duration,
    /// Hosts (as the nodes' addresses spell them, without the port) whose replicas take a
    /// replica read first, in turn among themselves; the other usable replicas only when none
    /// of those is usable. Empty (the default): every usable replica alike.
    pub prefer_hosts: Vec<String>,
    /// Most client connections; more are refused with Redis's error.
    pub max_clients: usize,
    /// Most requests one client may have in flight before the proxy stops reading from it.
    pub max_pipeline: usize,
    /// Reply bytes waiting for a client that does not read; past this it is disconnected.
    #[serde(deserialize_with = "de_size", serialize_with = "ser_size")]
    pub max_pending_reply_bytes: usize,
    /// Most arguments in one request.
    pub max_request_args: usize,
    /// Longest argument (Redis's proto-max-bulk-len).
    #[serde(deserialize_with = "de_size", serialize_with = "ser_size")]
    pub max_bulk_len: usize,
    /// Most bytes one incomplete request may buffer (Redis's client-query-buffer-limit).
    #[serde(deserialize_with = "de_size", serialize_with = "ser_size")]
    pub max_query_buffer: usize,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive).
    pub log_level: String,
    /// What a multi-key command whose keys hash to different slots gets: Redis Cluster's
    /// CROSSSLOT error (`refuse`), or the proxy carries it out step by step, not atomically
    /// (`emulate`; see [`crate::session::cross_slot`]). A user's own `cross_slot` wins.
    pub cross_slot: CrossSlot,
    /// Whether clients may run CONFIG SET, which the proxy applies to every node of the
    /// cluster (masters and replicas). Off: CONFIG SET is refused; CONFIG GET still works.
    pub allow_config_set: bool,
    /// Whether CONFIG SET may change the node settings that can cut the proxy or the cluster
    /// off (`requirepass`, `port`, `bind`, `cluster-*`, `tls-*`, `dir`, ...; see
    /// [`crate::route::config_refusal`]), and ACL SETUSER / DELUSER the user the proxy logs in
    /// as (see [`crate::access::acl_guard`]). Off (the default): such a command is refused
    /// whole, before any node sees it.
    pub allow_dangerous_config_set: bool,
    /// Log line format: `text` (human-readable) or `json` (one JSON object per line).
    pub log_format: String,
    /// Address of the Prometheus endpoint (`http://ADDR/metrics`); empty disables metrics.
    pub metrics_listen: String,
    /// Commands slower than this (from the request's arrival to its reply) enter the slow log;
    /// `None` (`"off"` in the file) logs none, as Redis's negative `slowlog-log-slower-than`.
    /// `CONFIG SET slowlog-log-slower-than` through the proxy changes it too.
    #[serde(deserialize_with = "de_threshold", serialize_with = "ser_threshold")]
    pub slowlog_threshold: Option<Duration>,
    /// Entries the slow log keeps (the oldest go first); 0 turns the slow log off.
    pub slowlog_max_len: usize,
    /// On SIGTERM, SIGINT or `PROXY SHUTDOWN`: longest wait for in-flight requests to finish
    /// before the remaining ones are answered with an error and the clients closed.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub shutdown_timeout: Duration,
    /// Most dedicated backend connections one worker holds for blocking commands, transactions
    /// and pub/sub (each needs a connection of its own); past it such requests are refused.
    pub max_dedicated_per_worker: usize,
    /// Most dedicated backend connections one client holds at once (so one client cannot take
    /// all of its worker's); past it its blocking commands, transactions and subscriptions are
    /// refused.
    pub max_dedicated_per_client: usize,
    /// Unread bytes a subscribed client may accumulate (Redis's `client-output-buffer-limit
    /// pubsub` hard limit); past it the client is disconnected.
    #[serde(deserialize_with = "de_size", serialize_with = "ser_size")]
    pub max_pubsub_reply_bytes: usize,
    /// Users (`[[users]]` tables). None: the proxy is open, as Redis without a password.
    pub users: Vec<crate::access::UserConfig>,
    /// ACL user the proxy authenticates as on every node connection (empty: `AUTH <password>`
    /// only, for `requirepass`).
    pub backend_user: String,
    /// Password for the nodes; empty: the nodes need none.
    pub backend_password: String,
    /// Failed AUTH attempts one client address may make per minute before AUTH from it is
    /// refused for the rest of the minute; 0: no limit.
    pub auth_failures_per_minute: u32,
    /// Address of a TLS client listener beside `listen`; empty: no TLS listener.
    pub tls_listen: String,
    /// PEM certificate chain the TLS listener presents.
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
    /// PEM CA bundle; when set, TLS clients must present a certificate it signed.
    pub tls_client_ca_file: String,
    /// Whether the proxy speaks TLS to the nodes (all of them: data path, refresher, admin).
    pub backend_tls: bool,
    /// PEM CA bundle the nodes' certificates are verified against.
    pub backend_tls_ca_file: String,
    /// PEM client certificate for the nodes (Redis's `tls-auth-clients`); empty: none.
    pub backend_tls_cert_file: String,
    /// PEM private key of `backend_tls_cert_file`.
    pub backend_tls_key_file: String,
    /// The name the nodes' certificates are checked against; empty: each node's host.
    pub backend_tls_server_name: String,
}

/// The `cross_slot` setting (defined beside the users, who may have their own).
pub use crate::access::CrossSlot;

/// One setting: its name (the TOML key) and whether it can change while the proxy runs.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The TOML key, also the name `PROXY CONFIG GET/SET` use.
    pub name: &'static str,
    /// Whether `PROXY CONFIG SET` and SIGHUP may change it without a restart.
    pub live: bool,
}

const fn live(name: &'static str) -> Setting {
    Setting { name, live: true }
}

const fn restart(name: &'static str) -> Setting {
    Setting { name, live: false }
}

/// Every setting, in the order of the reference file. Settings that shape threads, sockets or
/// connection pools at start-up need a restart; timeouts, limits and logging change live.
pub const SETTINGS: &[Setting] = &[
    restart("listen"),
    restart("seeds"),
    restart("workers"),
    live("refresh_interval"),
    live("refresh_min_gap"),
    live("request_timeout"),
    live("connect_timeout"),
    live("reconnect_backoff_max"),
    restart("connections_per_node"),
    live("read_from"),
    live("max_replica_lag"),
    live("prefer_hosts"),
    live("max_clients"),
    live("max_pipeline"),
    live("max_pending_reply_bytes"),
    live("max_request_args"),
    live("max_bulk_len"),
    live("max_query_buffer"),
    live("log_level"),
    restart("log_format"),
    live("cross_slot"),
    live("allow_config_set"),
    live("allow_dangerous_config_set"),
    restart("metrics_listen"),
    live("slowlog_threshold"),
    live("slowlog_max_len"),
    live("shutdown_timeout"),
    restart("max_dedicated_per_worker"),
    live("max_dedicated_per_client"),
    restart("max_pubsub_reply_bytes"),
    restart("users"),
    restart("backend_user"),
    restart("backend_password"),
    restart("auth_failures_per_minute"),
    restart("tls_listen"),
    live("tls_cert_file"),
    live("tls_key_file"),
    live("tls_client_ca_file"),
    restart("backend_tls"),
    live("backend_tls_ca_file"),
    live("backend_tls_cert_file"),
    live("backend_tls_key_file"),
    live("backend_tls_server_name"),
];

/// The setting called `name`, if there is one.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7617".into(),
            seeds: Vec::new(),
            workers: 0,
            refresh_interval: Duration::from_secs(1),
            refresh_min_gap: Duration::from_millis(100),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            reconnect_backoff_max: Duration::from_secs(1),
            connections_per_node: 1,
            read_from: "master".into(),
            max_replica_lag: Duration::from_secs(1),
            prefer_hosts: Vec::new(),
            max_clients: 10_000,
            max_pipeline: 1024,
            max_pending_reply_bytes: 64 * 1024 * 1024,
            max_request_args: 1024 * 1024,
            max_bulk_len: 512 * 1024 * 1024,
            max_query_buffer: 1024 * 1024 * 1024,
            log_level: "info".into(),
            cross_slot: CrossSlot::Refuse,
            allow_config_set: true,
            allow_dangerous_config_set: false,
            log_format: "text".into(),
            metrics_listen: "127.0.0.1:9617".into(),
            slowlog_threshold: Some(Duration::from_millis(10)),
            slowlog_max_len: 128,
            shutdown_timeout: Duration::from_secs(10),
            max_dedicated_per_worker: 1024,
            max_dedicated_per_client: 64,
            max_pubsub_reply_bytes: 32 * 1024 * 1024,
            users: Vec::new(),
            backend_user: String::new(),
            backend_password: String::new(),
            auth_failures_per_minute: 10,
            tls_listen: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_client_ca_file: String::new(),
            backend_tls: false,
            backend_tls_ca_file: String::new(),
            backend_tls_cert_file: String::new(),
            backend_tls_key_file: String::new(),
            backend_tls_server_name: String::new(),
        }
    }
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Config::from_toml(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the settings that have no sensible meaning out of range.
    pub fn validate(&self) -> anyhow::Result<()> {
        let users = crate::access::Users::from_config(&self.users)?;
        if users.use_certificates() && self.tls_client_ca_file.is_empty() {
            bail!("users with certificate_names need tls_listen and tls_client_ca_file (only certificates that CA signed may log in)");
        }
        if self.connections_per_node == 0 {
            bail!("connections_per_node must be at least 1");
        }
        if self.max_pipeline == 0 {
            bail!("max_pipeline must be at least 1");
        }
        if self.max_dedicated_per_client == 0 {
            bail!("max_dedicated_per_client must be at least 1");
        }
        if self.max_request_args == 0 {
            bail!("max_request_args must be at least 1");
        }
        if self.refresh_interval.is_zero() {
            bail!("refresh_interval must be positive");
        }
        for h in &self.prefer_hosts {
            if h.trim().is_empty() || h.parse::<std::net::SocketAddr>().is_ok() {
                bail!("prefer_hosts lists hosts without a port (e.g. \"10.0.0.5\"), not {h:?}");
            }
        }
        if self.max_replica_lag.is_zero() {
            bail!("max_replica_lag must be positive");
        }
        // The parsers already refuse these; a configuration built in code is held to the same.
        for (name, d) in [
            ("refresh_interval", self.refresh_interval),
            ("refresh_min_gap", self.refresh_min_gap),
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("reconnect_backoff_max", self.reconnect_backoff_max),
            (
                "slowlog_threshold",
                self.slowlog_threshold.unwrap_or_default(),
            ),
            ("shutdown_timeout", self.shutdown_timeout),
            ("max_replica_lag", self.max_replica_lag),
        ] {
            if d > MAX_DURATION {
                bail!("{name} must be at most 168h (one week)");
            }
        }
        for (name, n) in [
            ("max_pending_reply_bytes", self.max_pending_reply_bytes),
            ("max_bulk_len", self.max_bulk_len),
            ("max_query_buffer", self.max_query_buffer),
            ("max_pubsub_reply_bytes", self.max_pubsub_reply_bytes),
        ] {
            if n > MAX_SIZE {
                bail!("{name} must be at most 64gb");
            }
        }
        if crate::route::replica_choice::ReadFrom::parse(&self.read_from).is_none() {
            bail!(
                "read_from must be {}, not {:?}",
                crate::route::replica_choice::ReadFrom::NAMES,
                self.read_from
            );
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("log_format must be \"text\" or \"json\"");
        }
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            bail!(
                "metrics_listen {:?} is not ip:port (use \"\" to turn metrics off)",
                self.metrics_listen
            );
        }
        for s in &self.seeds {
            if !s.contains(':') {
                bail!("seed {s:?} is not host:port");
            }
        }
        Ok(())
    }

    /// The worker count to start: `workers`, or one per core when it is 0.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }

    /// The settings as a TOML table, keyed by setting name, values as the file would spell them.
    pub fn to_table(&self) -> anyhow::Result<toml::Table> {
        toml::Table::try_from(self).context("encoding the settings as TOML")
    }

    /// The value of setting `name` as `PROXY CONFIG GET` shows it (durations as `"5s"`, sizes
    /// as `"64mb"`, lists comma-separated).
    pub fn get(&self, name: &str) -> Option<String> {
        if name == "backend_password" {
            return Some(
                if self.backend_password.is_empty() {
                    ""
                } else {
                    "(set)"
                }
                .into(),
            );
        }
        if name == "users" {
            // Names and levels only: passwords never leave the file.
            let list: Vec<String> = self
                .users
                .iter()
                .map(|u| format!("{}:{:?}", u.name, u.level).to_lowercase())
                .collect();
            return Some(list.join(","));
        }
        let table = self.to_table().ok()?;
        table.get(name).map(display_value)
    }

    /// A copy with setting `name` set from its text form (as `PROXY CONFIG SET` receives it),
    /// validated like a file. The text is read according to the setting's type: durations and
    /// sizes as in the file, booleans as `yes`/`no`/`true`/`false`, lists comma-separated.
    pub fn with(&self, name: &str, value: &str) -> anyhow::Result<Config> {
        let mut table = self.to_table()?;
        let Some(old) = table.get(name) else {
            bail!("unknown setting '{name}'");
        };
        let new = match old {
            toml::Value::Integer(_) => toml::Value::Integer(
                value
                    .trim()
                    .parse()
                    .with_context(|| format!("'{name}' takes an integer, not {value:?}"))?,
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(match value.trim() {
                v if v.eq_ignore_ascii_case("yes") || v.eq_ignore_ascii_case("true") => true,
                v if v.eq_ignore_ascii_case("no") || v.eq_ignore_ascii_case("false") => false,
                _ => bail!("'{name}' takes yes or no, not {value:?}"),
            }),
            toml::Value::Array(_) => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            ),
            // Strings, and sizes or durations spelled as strings: the field's own parser reads
            // them, and a bare number for a size is accepted too.
            _ => match value.trim().parse::<i64>() {
                Ok(n) if name.starts_with("max_") => toml::Value::Integer(n),
                _ => toml::Value::String(value.to_string()),
            },
        };
        table.insert(name.to_string(), new);
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .with_context(|| format!("bad value {value:?} for '{name}'"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The names of the settings whose values differ between `self` and `other`.
    pub fn diff(&self, other: &Config) -> Vec<&'static str> {
        let (Ok(a), Ok(b)) = (self.to_table(), other.to_table()) else {
            return Vec::new();
        };
        SETTINGS
            .iter()
            .filter(|s| a.get(s.name) != b.get(s.name))
            .map(|s| s.name)
            .collect()
    }

    /// The parser limits these settings imply.
    pub fn limits(&self) -> crate::route::protocol::Limits {
        crate::route::protocol::Limits {
            max_args: self.max_request_args,
            max_bulk: self.max_bulk_len,
            max_query_buffer: self.max_query_buffer,
        }
    }
}

/// Longest duration any setting takes. Timers add durations to `Instant`s (which panics on
/// overflow) and nothing the proxy waits for is meaningful past a week, so anything longer is a
/// typo; refusing it keeps every `Instant + setting` in range.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Largest size any setting takes (64 GB). The sizes are per-client buffer limits; one past
/// this is a typo, and refusing it keeps the arithmetic on them far from overflow.
pub const MAX_SIZE: usize = 64 << 30;

/// Parses `"1s"`, `"250ms"`, `"2m"`, `"1h"`, `"10us"`, up to [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("bad duration {s:?} (use e.g. \"1s\", \"250ms\")"))?;
    let secs = match unit.trim() {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("bad duration unit in {s:?} (use us, ms, s, m or h)"),
    };
    // `Duration::from_secs_f64` panics past its range (and on the infinity a few hundred digits
    // parse to), so the bound is checked on the float first.
    if secs > MAX_DURATION.as_secs_f64() {
        bail!("duration {s:?} is too long (at most 168h, one week)");
    }
    Duration::try_from_secs_f64(secs).with_context(|| format!("bad duration {s:?}"))
}

/// Parses a byte count: a number, or a string with a `kb`, `mb` or `gb` suffix (powers of 1024,
/// as in redis.conf), up to [`MAX_SIZE`].
pub fn parse_size(s: &str) -> anyhow::Result<usize> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .with_context(|| format!("bad size {s:?} (use e.g. 65536 or \"64mb\")"))?;
    let mul = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => bail!("bad size unit in {s:?} (use kb, mb or gb)"),
    };
    n.checked_mul(mul)
        .filter(|&bytes| bytes <= MAX_SIZE)
        .with_context(|| format!("size {s:?} is too large (at most 64gb)"))
}

/// How a TOML value reads in `PROXY CONFIG GET`: strings bare, lists comma-separated.
pub fn display_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => a.iter().map(display_value).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Writes a duration the way the file spells it, in the largest unit that keeps it exact.
pub fn format_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us == 0 {
        "0s".into()
    } else if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

/// Writes a size the way the file spells it: a `kb`/`mb`/`gb` string when exact, else bytes.
fn format_size(n: usize) -> Option<String> {
    [(1usize << 30, "gb"), (1 << 20, "mb"), (1 << 10, "kb")]
        .iter()
        .find(|(m, _)| n > 0 && n.is_multiple_of(*m))
        .map(|(m, u)| format!("{}{u}", n / m))
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

fn ser_size<S: Serializer>(n: &usize, s: S) -> Result<S::Ok, S::Error> {
    match format_size(*n) {
        Some(text) => s.serialize_str(&text),
        None => s.serialize_u64(*n as u64),
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// How the file spells a slow log threshold that logs nothing.
pub const THRESHOLD_OFF: &str = "off";

fn ser_threshold<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_str(THRESHOLD_OFF),
    }
}

fn de_threshold<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().eq_ignore_ascii_case(THRESHOLD_OFF) {
        return Ok(None);
    }
    parse_duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        N(u64),
        S(String),
    }
    match Size::deserialize(d)? {
        Size::N(n) => parse_size(&n.to_string()).map_err(serde::de::Error::custom),
        Size::S(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_size("64mb").unwrap(), 64 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("1tb").is_err());
    }

    #[test]
    fn absurd_durations_and_sizes_are_errors_not_panics() {
        let too_long = |s: &str| parse_duration(s).unwrap_err().to_string();
        assert!(too_long("99999999999999999999999h").contains("at most 168h"));
        assert!(too_long(&format!("1{}s", "0".repeat(400))).contains("at most 168h"));
        assert!(too_long("169h").contains("at most 168h"));
        assert!(too_long("604801s").contains("at most 168h"));
        assert_eq!(parse_duration("168h").unwrap(), MAX_DURATION);
        assert!(parse_size("17179869183gb").is_err());
        assert!(parse_size("65gb").unwrap_err().to_string().contains("64gb"));
        assert_eq!(parse_size("64gb").unwrap(), MAX_SIZE);

        // Each path names the setting: the file, PROXY CONFIG SET, and a configuration built in
        // code.
        let e = Config::from_toml("refresh_interval = \"99999999999999999999999h\"").unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("refresh_interval") && e.contains("at most"),
            "{e}"
        );
        let e = Config::from_toml("max_bulk_len = 9223372036854775807").unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("max_bulk_len") && e.contains("64gb"), "{e}");
        for name in ["shutdown_timeout", "refresh_interval", "request_timeout"] {
            let e = Config::default()
                .with(name, "99999999999999999999999h")
                .unwrap_err();
            let e = format!("{e:#}");
            assert!(e.contains(name) && e.contains("at most"), "{e}");
        }
        let e = Config::default()
            .with("max_query_buffer", "17179869183gb")
            .unwrap_err();
        assert!(format!("{e:#}").contains("max_query_buffer"), "{e:#}");
        let built = Config {
            shutdown_timeout: Duration::MAX,
            ..Config::default()
        };
        let e = built.validate().unwrap_err().to_string();
        assert!(e.contains("shutdown_timeout"), "{e}");
    }

    #[test]
    fn certificate_logins_need_a_client_ca() {
        let cert_user = "[[users]]\nname = \"s\"\nlevel = \"read\"\ncertificate_names = [\"s\"]\n";
        let e = Config::from_toml(cert_user).unwrap_err().to_string();
        assert!(e.contains("tls_client_ca_file"), "{e}");
        let with_ca = format!("tls_client_ca_file = \"/ca.pem\"\n{cert_user}");
        assert!(Config::from_toml(&with_ca).is_ok());
    }

    #[test]
    fn empty_file_gives_defaults_and_unknown_keys_are_refused() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen, "127.0.0.1:7617");
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert!(Config::from_toml("listn = \"x\"").is_err());
        let c = Config::from_toml("max_pending_reply_bytes = \"1mb\"\nrequest_timeout = \"2s\"")
            .unwrap();
        assert_eq!(c.max_pending_reply_bytes, 1 << 20);
        assert_eq!(c.request_timeout, Duration::from_secs(2));
    }

    #[test]
    fn every_field_is_a_listed_setting() {
        let table = Config::default().to_table().unwrap();
        let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        let keys: Vec<&str> = table.keys().map(String::as_str).collect();
        let mut sorted_names = names.clone();
        sorted_names.sort();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort();
        assert_eq!(sorted_names, sorted_keys);
    }

    #[test]
    fn the_slow_log_threshold_can_be_off() {
        let c = Config::from_toml("slowlog_threshold = \"off\"").unwrap();
        assert_eq!(c.slowlog_threshold, None);
        assert_eq!(c.get("slowlog_threshold").unwrap(), "off");
        let on = c.with("slowlog_threshold", "250us").unwrap();
        assert_eq!(on.slowlog_threshold, Some(Duration::from_micros(250)));
        assert_eq!(on.get("slowlog_threshold").unwrap(), "250us");
        assert_eq!(on.with("slowlog_threshold", "OFF").unwrap(), c);
        assert!(c.with("slowlog_threshold", "169h").is_err());
        assert!(c.with("slowlog_threshold", "-1").is_err());
        let text = toml::to_string(&c).unwrap();
        assert_eq!(Config::from_toml(&text).unwrap(), c);
    }

    #[test]
    fn get_set_and_round_trip() {
        let c = Config::default();
        assert_eq!(c.get("request_timeout").unwrap(), "5s");
        assert_eq!(c.get("max_pending_reply_bytes").unwrap(), "64mb");
        assert_eq!(c.get("allow_config_set").unwrap(), "true");
        let d = c.with("request_timeout", "250ms").unwrap();
        assert_eq!(d.request_timeout, Duration::from_millis(250));
        let d = d.with("max_pipeline", "7").unwrap();
        assert_eq!(d.max_pipeline, 7);
        let d = d.with("max_pending_reply_bytes", "1000").unwrap();
        assert_eq!(d.max_pending_reply_bytes, 1000);
        let d = d.with("allow_config_set", "no").unwrap();
        assert!(!d.allow_config_set);
        assert_eq!(c.get("cross_slot").unwrap(), "refuse");
        let e = d.with("cross_slot", "emulate").unwrap();
        assert_eq!(e.cross_slot, CrossSlot::Emulate);
        assert!(e.with("cross_slot", "sometimes").is_err());
        assert!(c.with("max_pipeline", "0").is_err());
        assert!(c.with("max_dedicated_per_client", "0").is_err());
        assert_eq!(
            c.with("max_dedicated_per_client", "3")
                .unwrap()
                .max_dedicated_per_client,
            3
        );
        assert!(c.with("max_pipeline", "lots").is_err());
        assert!(c.with("nope", "1").is_err());
        assert_eq!(
            c.diff(&d),
            vec![
                "request_timeout",
                "max_pipeline",
                "max_pending_reply_bytes",
                "allow_config_set"
            ]
        );
        // Serialised settings read back as the same configuration.
        let text = toml::to_string(&d).unwrap();
        assert_eq!(Config::from_toml(&text).unwrap(), d);
    }
}
