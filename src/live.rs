//! Settings that change while the proxy runs: `PROXY CONFIG SET`, the proxy's own settings
//! behind Redis's `CONFIG SET` (the slow log's), SIGHUP and `PROXY CONFIG REWRITE`.
//!
//! SIGHUP applies the settings whose value *in the file* changed since the proxy last read (or
//! rewrote) it. A value set at run time survives a SIGHUP that does not touch its line, so
//! reloading the file to change one setting never silently undoes another set by `CONFIG
//! SET`; when the file's new value does replace a value set at run time, the reload reports it
//! (and so does the log), and it reports the run-time values it kept.
//!
//! The whole configuration in force is an immutable snapshot behind an `ArcSwap`, replaced whole
//! (cold paths read it with a lock-free load). The few values the data path reads per request or
//! per read loop are mirrored in relaxed atomics, so the hot path never even touches the
//! snapshot. Invariant: a change is either applied whole (snapshot, mirrors and generation) or
//! refused whole; a setting that needs a restart is never applied live (see
//! [`crate::config::SETTINGS`]).

use crate::config::{self, Config};
use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The live configuration and its hot-path mirrors.
pub struct Live {
    current: ArcSwap<Config>,
    /// Bumped after every applied change; sessions compare it to reload their limits.
    generation: AtomicU64,
    request_timeout_us: AtomicU64,
    connect_timeout_us: AtomicU64,
    backoff_max_us: AtomicU64,
    slowlog_threshold_us: AtomicU64,
    slowlog_max_len: AtomicUsize,
    max_clients: AtomicUsize,
    /// The file the proxy was started with, for SIGHUP and `PROXY CONFIG REWRITE`.
    pub path: Option<PathBuf>,
    /// The file's settings as last read (at start, by SIGHUP) or written (`PROXY CONFIG
    /// REWRITE`): what a SIGHUP compares the file with to see which lines changed. `None`
    /// when the file could not be read at start (a SIGHUP then applies every live setting
    /// that differs from the running value).
    file: Mutex<Option<Config>>,
    /// Serialises changes, so two concurrent SETs cannot lose one another's update. Never
    /// taken on the data path.
    change: Mutex<()>,
    /// The proxy's TLS configurations, rebuilt here when their files change or are re-read.
    tls: Arc<crate::net::tls::Tls>,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Live {
    /// The live view of `config`, read from `path` if it came from a file; `tls` is the
    /// proxy's, already loaded from `config`, and is what a reload replaces.
    pub fn new(config: Config, path: Option<PathBuf>, tls: Arc<crate::net::tls::Tls>) -> Live {
        let file = path.as_deref().and_then(|p| Config::from_file(p).ok());
        let live = Live {
            current: ArcSwap::from_pointee(config.clone()),
            generation: AtomicU64::new(0),
            request_timeout_us: AtomicU64::new(0),
            connect_timeout_us: AtomicU64::new(0),
            backoff_max_us: AtomicU64::new(0),
            slowlog_threshold_us: AtomicU64::new(0),
            slowlog_max_len: AtomicUsize::new(0),
            max_clients: AtomicUsize::new(0),
            path,
            file: Mutex::new(file),
            change: Mutex::new(()),
            tls,
        };
        live.mirror(&config);
        live
    }

    fn mirror(&self, c: &Config) {
        self.request_timeout_us
            .store(us(c.request_timeout), Relaxed);
        self.connect_timeout_us
            .store(us(c.connect_timeout), Relaxed);
        self.backoff_max_us
            .store(us(c.reconnect_backoff_max), Relaxed);
        // Off: a threshold no request reaches.
        self.slowlog_threshold_us
            .store(c.slowlog_threshold.map_or(u64::MAX, us), Relaxed);
        self.slowlog_max_len.store(c.slowlog_max_len, Relaxed);
        self.max_clients.store(c.max_clients, Relaxed);
    }

    /// The configuration in force (a snapshot; cheap, lock-free).
    pub fn get(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// Changes so far; a reader that saw another value reloads what it caches.
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// Longest wait for a backend reply.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_micros(self.request_timeout_us.load(Relaxed))
    }

    /// Longest wait for a backend connect.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_micros(self.connect_timeout_us.load(Relaxed))
    }

    /// Longest reconnect back-off.
    pub fn backoff_max(&self) -> Duration {
        Duration::from_micros(self.backoff_max_us.load(Relaxed))
    }

    /// Slow log threshold in microseconds (`u64::MAX` when the threshold is off).
    pub fn slowlog_threshold_us(&self) -> u64 {
        self.slowlog_threshold_us.load(Relaxed)
    }

    /// Slow log capacity (0: off).
    pub fn slowlog_max_len(&self) -> usize {
        self.slowlog_max_len.load(Relaxed)
    }

    /// Most client connections.
    pub fn max_clients(&self) -> usize {
        self.max_clients.load(Relaxed)
    }

    /// `PROXY CONFIG SET name value`: applies one live setting, or refuses with the reason.
    pub fn set(&self, name: &str, value: &str) -> anyhow::Result<()> {
        self.set_all(&[(name, value)])
    }

    /// Applies several live settings at once, all or none (Redis's CONFIG SET with several
    /// pairs): the first one refused refuses the change, with its reason.
    pub fn set_all(&self, pairs: &[(&str, &str)]) -> anyhow::Result<()> {
        let _g = self.change.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.get();
        let mut new = (*cur).clone();
        for &(name, value) in pairs {
            let Some(s) = config::setting(name) else {
                bail!("Unknown option or number of arguments for CONFIG SET - '{name}'");
            };
            if !s.live {
                bail!("'{name}' cannot change while the proxy runs; change the file and restart the proxy");
            }
            new = new.with(name, value)?;
        }
        self.install(&cur, new, false)
    }

    /// SIGHUP: re-reads the file and applies the live settings whose value in the file changed
    /// since it was last read or written (see the module's documentation). Settings that need
    /// a restart keep their running values; the caller is told which, and which values set at
    /// run time were replaced or kept. Nothing is applied if the file does not parse.
    pub fn reload(&self) -> anyhow::Result<Reloaded> {
        let _g = self.change.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.path else {
            bail!("the proxy was started without a config file");
        };
        let file = Config::from_file(path)?;
        let cur = self.get();
        let seen = self
            .file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| (*cur).clone());
        let plan = reload_plan(&seen, &file, &cur);
        let mut next = (*cur).clone();
        let file_table = file.to_table()?;
        for &name in &plan.applied {
            if let Some(v) = file_table.get(name) {
                next = next.with(name, &config::display_value(v))?;
            }
        }
        // Certificates are renewed in place, under the same file names: always re-read them.
        self.install(&cur, next, true)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
        Ok(plan)
    }

    /// Applies `new` whole, or nothing: TLS files that do not load refuse the change before
    /// anything else is touched. `reread_tls`: rebuild the TLS configurations even when their
    /// file names did not change (SIGHUP).
    fn install(&self, cur: &Config, new: Config, reread_tls: bool) -> anyhow::Result<()> {
        if reread_tls || crate::net::tls::settings_differ(cur, &new) {
            self.tls
                .install(&new)
                .context("TLS configuration not reloaded")?;
            if !new.tls_listen.is_empty() || new.backend_tls {
                tracing::info!("TLS certificates (re)loaded; new connections use them");
            }
        }
        if new.log_level != cur.log_level {
            crate::logging::set_level(&new.log_level)?;
        }
        for name in cur.diff(&new) {
            tracing::info!(
                setting = name,
                from = %cur.get(name).unwrap_or_default(),
                to = %new.get(name).unwrap_or_default(),
                "setting changed"
            );
        }
        self.mirror(&new);
        self.current.store(Arc::new(new));
        self.generation.fetch_add(1, Relaxed);
        Ok(())
    }

    /// `PROXY CONFIG REWRITE`: writes the live settings that differ from the file into it,
    /// keeping its comments and layout; settings that need a restart are left as the file has
    /// them. Returns the names written.
    pub fn rewrite(&self) -> anyhow::Result<Vec<&'static str>> {
        let _g = self.change.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.path else {
            bail!("the proxy was started without a config file; there is nothing to rewrite");
        };
        let written = rewrite_file(path, &self.get())?;
        // The file now holds the running values: a later SIGHUP compares with it.
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Config::from_file(path).ok();
        Ok(written)
    }
}

/// What a SIGHUP does with the settings (see [`Live::reload`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Live settings whose line changed in the file: they take the file's value.
    pub applied: Vec<&'static str>,
    /// Settings whose line changed but that need a restart: the running values stay.
    pub needs_restart: Vec<&'static str>,
    /// Of `applied`, those whose running value had been set at run time (CONFIG SET, `PROXY
    /// CONFIG SET`, a command-line flag): the file's new value replaced it.
    pub replaced: Vec<&'static str>,
    /// Live settings whose running value differs from the file's, which did not change:
    /// values set at run time, kept.
    pub kept: Vec<&'static str>,
}

/// Decides a SIGHUP from the file as last seen (`seen`), the file now (`file`) and the
/// running settings (`cur`): a setting is reloaded when its line changed, never because the
/// running value differs from an unchanged line.
pub fn reload_plan(seen: &Config, file: &Config, cur: &Config) -> Reloaded {
    let mut r = Reloaded::default();
    let changed = seen.diff(file);
    for name in &changed {
        if !config::setting(name).is_some_and(|s| s.live) {
            r.needs_restart.push(name);
            continue;
        }
        r.applied.push(name);
        if cur.get(name) != seen.get(name) && cur.get(name) != file.get(name) {
            r.replaced.push(name);
        }
    }
    for name in cur.diff(file) {
        if !changed.contains(&name) && config::setting(name).is_some_and(|s| s.live) {
            r.kept.push(name);
        }
    }
    r
}

/// Writes `cfg`'s live settings into the TOML file at `path` where they differ from it.
pub fn rewrite_file(path: &Path, cfg: &Config) -> anyhow::Result<Vec<&'static str>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("parsing config file {}", path.display()))?;
    let file = Config::from_toml(&text).unwrap_or_default();
    let table = cfg.to_table()?;
    let mut written = Vec::new();
    for name in file.diff(cfg) {
        if !config::setting(name).is_some_and(|s| s.live) {
            continue;
        }
        let value = match table.get(name) {
            Some(toml::Value::String(s)) => toml_edit::value(s.as_str()),
            Some(toml::Value::Integer(n)) => toml_edit::value(*n),
            Some(toml::Value::Boolean(b)) => toml_edit::value(*b),
            Some(toml::Value::Array(a)) => toml_edit::value(
                a.iter()
                    .filter_map(toml::Value::as_str)
                    .collect::<toml_edit::Array>(),
            ),
            _ => continue,
        };
        doc[name] = value;
        written.push(name);
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, doc.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::Tls;

    #[test]
    fn set_refuses_restart_settings_and_applies_live_ones() {
        let live = Live::new(Config::default(), None, Arc::new(Tls::off()));
        let e = live.set("listen", "127.0.0.1:1").unwrap_err().to_string();
        assert!(e.contains("restart"), "{e}");
        live.set("request_timeout", "2s").unwrap();
        assert_eq!(live.request_timeout(), Duration::from_secs(2));
        assert_eq!(live.generation(), 1);
        assert!(live.set("max_pipeline", "0").is_err());
        assert_eq!(live.generation(), 1);
    }

    #[test]
    fn set_all_applies_every_pair_or_none() {
        let live = Live::new(Config::default(), None, Arc::new(Tls::off()));
        live.set_all(&[("slowlog_max_len", "5"), ("slowlog_threshold", "off")])
            .unwrap();
        assert_eq!(live.slowlog_max_len(), 5);
        assert_eq!(live.slowlog_threshold_us(), u64::MAX);
        assert_eq!(live.generation(), 1);
        assert!(live
            .set_all(&[("slowlog_max_len", "9"), ("slowlog_threshold", "169h")])
            .is_err());
        assert_eq!(live.slowlog_max_len(), 5);
        assert_eq!(live.generation(), 1);
        live.set("slowlog_threshold", "0us").unwrap();
        assert_eq!(live.slowlog_threshold_us(), 0);
    }

    #[test]
    fn sighup_applies_changed_lines_and_keeps_run_time_values() {
        let seen = Config::default();
        // Set at run time: the slow log's length and threshold, and the log level.
        let cur = Config {
            slowlog_max_len: 5,
            slowlog_threshold: None,
            log_level: "debug".into(),
            ..Config::default()
        };
        // The file's edit: the threshold, the request timeout and the worker count.
        let file = Config {
            slowlog_threshold: Some(Duration::from_millis(1)),
            request_timeout: Duration::from_secs(2),
            workers: 3,
            ..Config::default()
        };
        let r = reload_plan(&seen, &file, &cur);
        assert_eq!(r.applied, vec!["request_timeout", "slowlog_threshold"]);
        assert_eq!(r.needs_restart, vec!["workers"]);
        assert_eq!(r.replaced, vec!["slowlog_threshold"]);
        assert_eq!(r.kept, vec!["log_level", "slowlog_max_len"]);
        // Nothing changed in the file: nothing is reloaded, every run-time value is kept.
        let r = reload_plan(&seen, &seen, &cur);
        assert!(r.applied.is_empty() && r.replaced.is_empty());
        assert_eq!(r.kept.len(), 3);
    }

    #[test]
    fn sighup_and_rewrite_compare_with_the_file_as_last_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "slowlog_max_len = 10\n").unwrap();
        let cfg = Config::from_file(&path).unwrap();
        let live = Live::new(cfg, Some(path.clone()), Arc::new(Tls::off()));
        live.set("slowlog_max_len", "3").unwrap();
        // The file did not change: the run-time value stays.
        let r = live.reload().unwrap();
        assert_eq!(r.kept, vec!["slowlog_max_len"]);
        assert_eq!(live.slowlog_max_len(), 3);
        // Its line changed: the file wins, and says it replaced a run-time value.
        std::fs::write(&path, "slowlog_max_len = 20\n").unwrap();
        let r = live.reload().unwrap();
        assert_eq!(r.replaced, vec!["slowlog_max_len"]);
        assert_eq!(live.slowlog_max_len(), 20);
        // REWRITE writes the running value; the next SIGHUP sees nothing new.
        live.set("slowlog_max_len", "4").unwrap();
        live.rewrite().unwrap();
        let r = live.reload().unwrap();
        assert_eq!(r, Reloaded::default());
        assert_eq!(live.slowlog_max_len(), 4);
    }

    #[test]
    fn rewrite_keeps_comments_and_restart_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "# my proxy\nlisten = \"127.0.0.1:7000\"\n# how long\nrequest_timeout = \"5s\"\n",
        )
        .unwrap();
        let cfg = Config::from_file(&path).unwrap();
        let live = Live::new(cfg, Some(path.clone()), Arc::new(Tls::off()));
        live.set("request_timeout", "750ms").unwrap();
        live.set("max_pipeline", "9").unwrap();
        let written = live.rewrite().unwrap();
        assert_eq!(written, vec!["request_timeout", "max_pipeline"]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# my proxy") && text.contains("# how long"),
            "{text}"
        );
        let back = Config::from_file(&path).unwrap();
        assert_eq!(back.request_timeout, Duration::from_millis(750));
        assert_eq!(back.max_pipeline, 9);
        assert_eq!(back.listen, "127.0.0.1:7000");
    }
}
