//! Configuration: the TOML file, its defaults, and the flags that override it.
//!
//! Every setting has a default, so an empty file (or none) is a valid configuration. Durations
//! are strings such as `"1s"` or `"250ms"`; sizes are byte counts or strings such as `"64mb"`.
//! `config/slotproxy.toml` documents each setting and must stay in step with this file (a test
//! parses every file under `config/`).

use anyhow::{bail, Context};
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// The proxy's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address clients connect to.
    pub listen: String,
    /// Cluster nodes to learn the topology from (`host:port`); any one reachable node is enough.
    pub seeds: Vec<String>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// How often the slot map is re-read when nothing triggers a refresh (jittered by up to 20%).
    #[serde(deserialize_with = "de_duration")]
    pub refresh_interval: Duration,
    /// Shortest time between two refreshes, so a burst of MOVED replies causes one refresh.
    #[serde(deserialize_with = "de_duration")]
    pub refresh_min_gap: Duration,
    /// Longest wait for a backend reply, counted from the moment the request was written.
    #[serde(deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// Longest wait for a backend TCP connection.
    #[serde(deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// Longest wait before reconnecting to a node that failed; doubles from 50 ms up to this.
    #[serde(deserialize_with = "de_duration")]
    pub reconnect_backoff_max: Duration,
    /// Multiplexed connections per worker and node.
    pub connections_per_node: usize,
    /// Most client connections; more are refused with Redis's error.
    pub max_clients: usize,
    /// Most requests one client may have in flight before the proxy stops reading from it.
    pub max_pipeline: usize,
    /// Reply bytes waiting for a client that does not read; past this it is disconnected.
    #[serde(deserialize_with = "de_size")]
    pub max_pending_reply_bytes: usize,
    /// Most arguments in one request.
    pub max_request_args: usize,
    /// Longest argument (Redis's proto-max-bulk-len).
    #[serde(deserialize_with = "de_size")]
    pub max_bulk_len: usize,
    /// Most bytes one incomplete request may buffer (Redis's client-query-buffer-limit).
    #[serde(deserialize_with = "de_size")]
    pub max_query_buffer: usize,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive).
    pub log_level: String,
    /// Whether clients may run CONFIG SET, which the proxy applies to every node of the
    /// cluster (masters and replicas). Off: CONFIG SET is refused; CONFIG GET still works.
    pub allow_config_set: bool,
    /// Most dedicated backend connections one worker holds for blocking commands, transactions
    /// and pub/sub (each needs a connection of its own); past it such requests are refused.
    pub max_dedicated_per_worker: usize,
    /// Unread bytes a subscribed client may accumulate (Redis's `client-output-buffer-limit
    /// pubsub` hard limit); past it the client is disconnected.
    #[serde(deserialize_with = "de_size")]
    pub max_pubsub_reply_bytes: usize,
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
            max_clients: 10_000,
            max_pipeline: 1024,
            max_pending_reply_bytes: 64 * 1024 * 1024,
            max_request_args: 1024 * 1024,
            max_bulk_len: 512 * 1024 * 1024,
            max_query_buffer: 1024 * 1024 * 1024,
            log_level: "info".into(),
            allow_config_set: true,
            max_dedicated_per_worker: 1024,
            max_pubsub_reply_bytes: 32 * 1024 * 1024,
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
        if self.connections_per_node == 0 {
            bail!("connections_per_node must be at least 1");
        }
        if self.max_pipeline == 0 {
            bail!("max_pipeline must be at least 1");
        }
        if self.max_request_args == 0 {
            bail!("max_request_args must be at least 1");
        }
        if self.refresh_interval.is_zero() {
            bail!("refresh_interval must be positive");
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

    /// The parser limits these settings imply.
    pub fn limits(&self) -> crate::protocol::Limits {
        crate::protocol::Limits {
            max_args: self.max_request_args,
            max_bulk: self.max_bulk_len,
            max_query_buffer: self.max_query_buffer,
        }
    }
}

/// Parses `"1s"`, `"250ms"`, `"2m"`, `"1h"`, `"10us"`.
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
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte count: a number, or a string with a `kb`, `mb` or `gb` suffix (powers of 1024,
/// as in redis.conf).
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
        .with_context(|| format!("size {s:?} is too large"))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        N(u64),
        S(String),
    }
    match Size::deserialize(d)? {
        Size::N(n) => usize::try_from(n).map_err(serde::de::Error::custom),
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
}
