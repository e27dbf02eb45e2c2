//! Log output: `tracing` to stderr, as text or JSON lines, with a filter that `PROXY CONFIG SET
//! log_level` and SIGHUP can replace while the proxy runs.
//!
//! Invariant: at most one subscriber is installed per process (the first [`init`] wins); the
//! reload handle is kept beside it so [`set_level`] always changes the installed filter.

use anyhow::{anyhow, Context};
use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

type Handle = reload::Handle<EnvFilter, Registry>;

static RELOAD: OnceLock<Handle> = OnceLock::new();

fn filter(level: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(level).map_err(|e| anyhow!("bad log_level {level:?}: {e}"))
}

/// Installs the process's subscriber: `format` is `text` or `json`; an unparsable `level`
/// falls back to `info` (and says so), so a typo in the file cannot silence the proxy.
pub fn init(level: &str, format: &str) {
    let (f, bad) = match filter(level) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let (layer, handle) = reload::Layer::new(f);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(layer);
    let installed = if format == "json" {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init()
            .is_ok()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init()
            .is_ok()
    };
    if installed {
        let _ = RELOAD.set(handle);
    }
    if let Some(e) = bad {
        tracing::warn!(error = %e, "using log level info");
    }
}

/// Replaces the log filter of the installed subscriber (no-op when none was installed, as in
/// library tests).
pub fn set_level(level: &str) -> anyhow::Result<()> {
    let f = filter(level)?;
    if let Some(h) = RELOAD.get() {
        h.reload(f).context("replacing the log filter")?;
    }
    Ok(())
}
