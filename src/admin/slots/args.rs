//! The arguments of `PROXY REBALANCE SLOTS` and `PROXY FIX`, parsed into plain data (the shared
//! words `DRYRUN`, `ASYNC`, `TIMEOUT` through [`CommonOptions`]; the mover's knobs `BATCH`,
//! `PIPELINE`, `MIGRATE-TIMEOUT` are the same in both).

use super::migrate::{DEFAULT_BATCH, DEFAULT_MIGRATE_TIMEOUT_MS, DEFAULT_PIPELINE};
use super::plan::DEFAULT_THRESHOLD_PCT;
use super::settings::DEFAULT_PARALLEL;
use crate::admin::options::{self, Accepts, CommonOptions, OptionError};
use bytes::Bytes;
use std::time::Duration;

/// Largest `BATCH` (keys in one MIGRATE).
pub const MAX_BATCH: usize = 10_000;
/// Largest `PIPELINE` (MIGRATEs in flight).
pub const MAX_PIPELINE: usize = 64;
/// Largest `PARALLEL` (slots moved at once).
pub const MAX_PARALLEL: usize = 32;
/// Largest `WEIGHT`.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// The mover's knobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Knobs {
    /// Keys per MIGRATE.
    pub batch: usize,
    /// MIGRATEs in flight.
    pub pipeline: usize,
    /// MIGRATE's own timeout (ms).
    pub migrate_timeout_ms: u64,
    /// Slots moved at once.
    pub parallel: usize,
    /// Deadline of one slot's move (`TIMEOUT`), if given.
    pub slot_timeout: Option<Duration>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            batch: DEFAULT_BATCH,
            pipeline: DEFAULT_PIPELINE,
            migrate_timeout_ms: DEFAULT_MIGRATE_TIMEOUT_MS,
            parallel: DEFAULT_PARALLEL,
            slot_timeout: None,
        }
    }
}

/// `PROXY REBALANCE SLOTS ...`.
#[derive(Clone, Debug, PartialEq)]
pub struct RebalanceArgs {
    /// `WEIGHT <node> <w>` pairs, as given.
    pub weights: Vec<(String, u32)>,
    /// `THRESHOLD pct`.
    pub threshold_pct: f64,
    /// `MAXSLOTS n`.
    pub max_slots: Option<usize>,
    /// The mover's knobs.
    pub knobs: Knobs,
    /// `DRYRUN`.
    pub dry_run: bool,
    /// `ASYNC`.
    pub detach: bool,
}

/// `PROXY FIX ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixArgs {
    /// The mover's knobs.
    pub knobs: Knobs,
    /// `DRYRUN`.
    pub dry_run: bool,
    /// `ASYNC`.
    pub detach: bool,
}

/// Why the arguments were refused; `Display` is the reply's text after `ERR `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// A numeric option without a valid value: (option, what it takes).
    Value(&'static str, String),
    /// `WEIGHT` without a node and weight.
    Weight,
    /// A word that is no option (as given), with the command's usage.
    Unknown(String, &'static str),
}

/// `PROXY REBALANCE SLOTS` usage.
pub const REBALANCE_USAGE: &str = "usage: PROXY REBALANCE SLOTS [WEIGHT <node> <w> ...] \
     [THRESHOLD pct] [MAXSLOTS n] [BATCH n] [PIPELINE n] [PARALLEL n] [MIGRATE-TIMEOUT ms] \
     [DRYRUN] [ASYNC] [TIMEOUT s]";
/// `PROXY FIX` usage.
pub const FIX_USAGE: &str = "usage: PROXY FIX [DRYRUN] [ASYNC] [TIMEOUT s] [BATCH n] \
     [PIPELINE n] [MIGRATE-TIMEOUT ms]";

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgError::Value(name, what) => write!(f, "{name} needs {what}"),
            ArgError::Weight => write!(
                f,
                "WEIGHT needs a node (ip:port or node ID) and a weight from 0 to {MAX_WEIGHT}"
            ),
            // Capped: the word is the client's and lands in a reply and a log line.
            ArgError::Unknown(word, usage) => write!(
                f,
                "unknown option '{}'; {usage}",
                word.to_ascii_uppercase()
                    .chars()
                    .take(64)
                    .collect::<String>()
            ),
        }
    }
}

impl std::error::Error for ArgError {}

const ACCEPTS: Accepts = Accepts {
    json: false,
    dryrun: true,
    detach: true,
    timeout_min_secs: Some(1),
    host: None,
};

/// The words every option takes: a value for each knob (`None`: not a knob).
fn knob(words: &[String], i: usize, k: &mut Knobs) -> Result<Option<usize>, ArgError> {
    let value = words.get(i + 1);
    let int = |name: &'static str, min: u64, max: u64| {
        value
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| ArgError::Value(name, format!("an integer from {min} to {max}")))
    };
    match words[i].to_ascii_uppercase().as_str() {
        "BATCH" => k.batch = int("BATCH", 1, MAX_BATCH as u64)? as usize,
        "PIPELINE" => k.pipeline = int("PIPELINE", 1, MAX_PIPELINE as u64)? as usize,
        "MIGRATE-TIMEOUT" => k.migrate_timeout_ms = int("MIGRATE-TIMEOUT", 1, 3_600_000)?,
        "PARALLEL" => k.parallel = int("PARALLEL", 1, MAX_PARALLEL as u64)? as usize,
        _ => return Ok(None),
    }
    Ok(Some(2))
}

fn common(
    common: &mut CommonOptions,
    words: &[String],
    i: usize,
) -> Result<Option<usize>, ArgError> {
    common.take(&ACCEPTS, words, i).map_err(|e| match e {
        OptionError::TooShort(min) => ArgError::Value(
            "TIMEOUT",
            format!("a whole number of seconds, at least {min}"),
        ),
        _ => ArgError::Value("TIMEOUT", "a whole number of seconds".into()),
    })
}

/// Whether a word is one of the options (ends a `WEIGHT` list).
fn is_option(word: &str) -> bool {
    matches!(
        word.to_ascii_uppercase().as_str(),
        "WEIGHT"
            | "THRESHOLD"
            | "MAXSLOTS"
            | "BATCH"
            | "PIPELINE"
            | "MIGRATE-TIMEOUT"
            | "PARALLEL"
            | "DRYRUN"
            | "ASYNC"
            | "TIMEOUT"
    )
}

/// Parses the words after `PROXY REBALANCE SLOTS`.
pub fn parse_rebalance(args: &[Bytes]) -> Result<RebalanceArgs, ArgError> {
    let words = options::words(args);
    let mut c = CommonOptions::default();
    let mut out = RebalanceArgs {
        weights: Vec::new(),
        threshold_pct: DEFAULT_THRESHOLD_PCT,
        max_slots: None,
        knobs: Knobs::default(),
        dry_run: false,
        detach: false,
    };
    let mut i = 0;
    while i < words.len() {
        if let Some(n) = common(&mut c, &words, i)? {
            i += n;
            continue;
        }
        if let Some(n) = knob(&words, i, &mut out.knobs)? {
            i += n;
            continue;
        }
        match words[i].to_ascii_uppercase().as_str() {
            "WEIGHT" => {
                i += 1;
                let mut pairs = 0;
                while i < words.len() && !is_option(&words[i]) {
                    let w = words
                        .get(i + 1)
                        .and_then(|w| w.parse::<u32>().ok())
                        .filter(|&w| w <= MAX_WEIGHT)
                        .ok_or(ArgError::Weight)?;
                    out.weights.push((words[i].clone(), w));
                    pairs += 1;
                    i += 2;
                }
                if pairs == 0 {
                    return Err(ArgError::Weight);
                }
            }
            "THRESHOLD" => {
                out.threshold_pct = words
                    .get(i + 1)
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| {
                        ArgError::Value("THRESHOLD", "a percentage (0 or more)".into())
                    })?;
                i += 2;
            }
            "MAXSLOTS" => {
                out.max_slots = Some(
                    words
                        .get(i + 1)
                        .and_then(|v| v.parse::<usize>().ok())
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| {
                            ArgError::Value("MAXSLOTS", "an integer of 1 or more".into())
                        })?,
                );
                i += 2;
            }
            _ => return Err(ArgError::Unknown(words[i].clone(), REBALANCE_USAGE)),
        }
    }
    out.dry_run = c.dryrun;
    out.detach = c.detach;
    out.knobs.slot_timeout = c.timeout;
    Ok(out)
}

/// Parses the words after `PROXY FIX`.
pub fn parse_fix(args: &[Bytes]) -> Result<FixArgs, ArgError> {
    let words = options::words(args);
    let mut c = CommonOptions::default();
    let mut knobs = Knobs::default();
    let mut i = 0;
    while i < words.len() {
        if let Some(n) = common(&mut c, &words, i)? {
            i += n;
            continue;
        }
        match knob(&words, i, &mut knobs)? {
            Some(n) => i += n,
            None => return Err(ArgError::Unknown(words[i].clone(), FIX_USAGE)),
        }
    }
    knobs.slot_timeout = c.timeout;
    Ok(FixArgs {
        knobs,
        dry_run: c.dryrun,
        detach: c.detach,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Vec<Bytes> {
        s.split_whitespace()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn rebalance_arguments() {
        let r = parse_rebalance(&a(
            "weight 127.0.0.1:7000 0 abcdef12 2 THRESHOLD 1.5 MAXSLOTS 10 BATCH 20 PIPELINE 3 \
             PARALLEL 5 MIGRATE-TIMEOUT 500 DRYRUN ASYNC TIMEOUT 9 WEIGHT x 1",
        ))
        .expect("valid");
        assert_eq!(
            r.weights,
            vec![
                ("127.0.0.1:7000".to_string(), 0),
                ("abcdef12".to_string(), 2),
                ("x".to_string(), 1)
            ]
        );
        assert_eq!(r.threshold_pct, 1.5);
        assert_eq!(r.max_slots, Some(10));
        assert_eq!(
            r.knobs,
            Knobs {
                batch: 20,
                pipeline: 3,
                migrate_timeout_ms: 500,
                parallel: 5,
                slot_timeout: Some(Duration::from_secs(9)),
            }
        );
        assert!(r.dry_run && r.detach);
        let d = parse_rebalance(&[]).expect("defaults");
        assert_eq!(d.threshold_pct, DEFAULT_THRESHOLD_PCT);
        assert_eq!(d.knobs, Knobs::default());
    }

    #[test]
    fn bad_arguments() {
        let e = |s: &str| parse_rebalance(&a(s)).expect_err(s).to_string();
        assert!(e("WEIGHT").contains("WEIGHT needs"));
        assert!(e("WEIGHT n").contains("WEIGHT needs"));
        assert!(e("WEIGHT n -1").contains("WEIGHT needs"));
        assert!(e("WEIGHT DRYRUN").contains("WEIGHT needs"));
        assert!(e("THRESHOLD x").contains("THRESHOLD needs"));
        assert!(e("MAXSLOTS 0").contains("MAXSLOTS needs"));
        assert!(e("BATCH 0").contains("BATCH needs an integer from 1 to 10000"));
        assert!(e("PIPELINE 65").contains("PIPELINE needs"));
        assert!(e("PARALLEL 0").contains("PARALLEL needs"));
        assert!(e("MIGRATE-TIMEOUT").contains("MIGRATE-TIMEOUT needs"));
        assert!(e("TIMEOUT 0").contains("at least 1"));
        assert!(e("NOPE").contains("unknown option 'NOPE'; usage: PROXY REBALANCE SLOTS"));
        let f = parse_fix(&a("dryrun migrate-timeout 5 timeout 2")).expect("valid");
        assert!(f.dry_run && !f.detach);
        assert_eq!(f.knobs.migrate_timeout_ms, 5);
        assert!(parse_fix(&a("WEIGHT a 1"))
            .expect_err("no weights in FIX")
            .to_string()
            .contains("usage: PROXY FIX"));
    }
}
