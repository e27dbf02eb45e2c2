//! `PROXY CHECK [JSON]`: a read-only consistency and placement check of the whole cluster.
//!
//! [`findings`] is pure: it judges a [`Survey`] (what every node said) and never talks to a node,
//! so every finding is unit-tested from hand-built surveys. [`answer`] only surveys and prints.
//! Invariant: CHECK never sends a command that changes a node.
//!
//! Where nodes disagree, the *consensus topology* decides what a node is: a reachable node's own
//! line (`myself`) says its role, master and slots; a node that did not answer is taken from the
//! first view that lists it. Slot coverage counts only what reachable masters claim for
//! themselves (plus the claims others make for unreachable masters), so a DELSLOTS on an owner
//! shows up as uncovered even while other nodes still remember the old owner.
//!
//! The files: this one has the command, the findings' types and the reports; `rules.rs` the
//! consensus topology and one function per rule; `tests.rs` the unit tests.

mod rules;
#[cfg(test)]
mod tests;

pub use rules::{findings, outsiders};

use super::options::{self, Accepts, CommonOptions, HostAddr, OptionError};
use super::survey::{self, HostLabels, Survey};
use crate::admin::jobs;
use crate::admin::report::{Json, Report};
use crate::net::dialer::Dialer;
use crate::shared::Shared;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The cluster is broken or one failure away from losing data or availability.
    Error,
    /// Worth fixing; the cluster works.
    Warn,
}

impl Severity {
    /// `ERROR` or `WARN`.
    pub fn word(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Warn => "WARN",
        }
    }
}

/// One problem found. `code` is stable (tools match on it); `message` is for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// ERROR or WARN.
    pub severity: Severity,
    /// Stable identifier, e.g. `open-slot`.
    pub code: &'static str,
    /// What is wrong, naming nodes by `ip:port`.
    pub message: String,
    /// The nodes involved (`ip:port`), the offending one first.
    pub nodes: Vec<String>,
}

/// A [`Finding`] from its parts.
fn finding(severity: Severity, code: &'static str, message: String, nodes: Vec<String>) -> Finding {
    Finding {
        severity,
        code,
        message,
        nodes,
    }
}

/// Replication offset gap (bytes) above which a replica counts as lagging.
pub const LAG_BYTES: u64 = 1024 * 1024;
/// Seconds without traffic from the master above which a replica counts as lagging (masters
/// ping replicas every 10 s by default, so less is normal on an idle cluster).
pub const LAG_IO_SECONDS: u64 = 30;

/// Compact `a-b` ranges of a sorted slot list.
pub fn ranges_text(slots: &[u16]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < slots.len() {
        let mut j = i;
        while j + 1 < slots.len() && slots[j + 1] == slots[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            slots[i].to_string()
        } else {
            format!("{}-{}", slots[i], slots[j])
        });
        i = j + 1;
    }
    const SHOWN: usize = 8;
    if out.len() > SHOWN {
        let more = out.len() - SHOWN;
        out.truncate(SHOWN);
        out.push(format!("and {more} more range(s)"));
    }
    out.join(",")
}

/// `OK` or `ERRORS n WARNINGS m`.
pub fn verdict(f: &[Finding]) -> String {
    let errors = f.iter().filter(|x| x.severity == Severity::Error).count();
    let warnings = f.len() - errors;
    if f.is_empty() {
        "OK".to_string()
    } else {
        format!("ERRORS {errors} WARNINGS {warnings}")
    }
}

/// The redis-cli form: the verdict, a summary, then one line per finding.
pub fn report_lines(s: &Survey, f: &[Finding]) -> Vec<String> {
    let mut out = vec![verdict(f)];
    let reachable = s.reachable().count();
    out.push(format!(
        "nodes {} reachable {reachable} findings {}",
        s.nodes.len(),
        f.len()
    ));
    out.extend(
        f.iter()
            .map(|x| format!("{} {} {}", x.severity.word(), x.code, x.message)),
    );
    out
}

/// The JSON form: `{"verdict", "errors", "warnings", "nodes", "reachable", "findings": [...]}`.
pub fn report_value(s: &Survey, f: &[Finding]) -> Json {
    let errors = f.iter().filter(|x| x.severity == Severity::Error).count();
    let findings = f
        .iter()
        .map(|x| {
            Json::Object(vec![
                (
                    "severity",
                    Json::str(x.severity.word().to_ascii_lowercase()),
                ),
                ("code", Json::str(x.code)),
                ("message", Json::str(&x.message)),
                ("nodes", Json::strs(&x.nodes)),
            ])
        })
        .collect();
    Json::Object(vec![
        ("verdict", Json::str(verdict(f))),
        ("errors", Json::num(errors)),
        ("warnings", Json::num(f.len() - errors)),
        ("nodes", Json::num(s.nodes.len())),
        ("reachable", Json::num(s.reachable().count())),
        ("findings", Json::List(findings)),
    ])
}

/// [`report_value`] as text.
pub fn report_json(s: &Survey, f: &[Finding]) -> String {
    report_value(s, f).render()
}

/// CHECK's whole report: [`report_lines`], with [`report_value`] as its JSON form.
pub fn report(s: &Survey, f: &[Finding]) -> Report {
    Report::lines(report_lines(s, f)).with_json(report_value(s, f))
}

/// Per-node deadline of the admin engines' reads.
pub fn node_timeout(shared: &Shared) -> Duration {
    shared
        .settings
        .live
        .connect_timeout()
        .max(Duration::from_secs(1))
}

/// The nodes CHECK starts from: the proxy's masters, their replicas, and the seeds; the survey
/// then follows every node those know about.
pub fn start_nodes(shared: &Shared) -> Vec<String> {
    let map = shared.topology.map.load();
    let mut out: Vec<String> = Vec::new();
    for n in &map.nodes {
        out.push(n.addr.to_string());
        out.extend(n.replicas.iter().map(|r| r.to_string()));
    }
    out.extend(shared.settings.config.seeds.iter().cloned());
    survey::dedup(&out)
}

/// Surveys the cluster and judges it (what CREATE runs at its end too, with its host labels).
pub async fn run_check(
    dialer: &Arc<Dialer>,
    start: &[String],
    timeout: Duration,
    hosts: &HostLabels,
) -> (Survey, Vec<Finding>) {
    let s = survey::survey_closure(dialer, start, timeout).await;
    let f = findings(&s, hosts);
    (s, f)
}

const USAGE: &str = "usage: PROXY CHECK [JSON] [HOST <ip:port> <label>] ...";

/// Why `PROXY CHECK`'s arguments were refused. `Display` is the reply's text after
/// `ERR PROXY CHECK: ` (every CHECK usage error, in one place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// A word that is no option, or an option without its values (as given).
    Unknown(String),
    /// `HOST`'s address has no port (as given).
    HostWithoutPort(String),
}

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Capped: the word is the client's and lands in a reply and a log line.
            ArgError::Unknown(word) => write!(
                f,
                "unknown or incomplete option '{}'; {USAGE}",
                word.to_ascii_uppercase()
                    .chars()
                    .take(64)
                    .collect::<String>()
            ),
            ArgError::HostWithoutPort(addr) => {
                write!(f, "HOST wants ip:port, got '{addr}'; {USAGE}")
            }
        }
    }
}

impl std::error::Error for ArgError {}

/// Answers `PROXY CHECK [JSON]` (args after CHECK). Registered as a job, always synchronous.
/// Parses `[JSON] [HOST <ip:port> <label>] ...`: the JSON flag and the operator's host labels
/// (a node's host is its IP unless labelled, as in CREATE and REBALANCE).
pub fn parse_args(args: &[Bytes]) -> Result<(bool, HostLabels), ArgError> {
    const ACCEPTS: Accepts = Accepts {
        json: true,
        dryrun: false,
        detach: false,
        timeout_min_secs: None,
        host: Some(HostAddr::IpPort),
    };
    let words = options::words(args);
    let mut common = CommonOptions::default();
    let mut i = 0;
    while i < words.len() {
        match common.take(&ACCEPTS, &words, i) {
            Ok(Some(n)) => i += n,
            Err(OptionError::HostWithoutPort(addr)) => return Err(ArgError::HostWithoutPort(addr)),
            Ok(None) | Err(_) => return Err(ArgError::Unknown(words[i].clone())),
        }
    }
    Ok((common.json, common.hosts))
}

/// Answers `PROXY CHECK [JSON] [HOST <ip:port> <label>] ...`.
pub async fn answer(args: &[Bytes], shared: &Arc<Shared>) -> Bytes {
    let (json, hosts) = match parse_args(args) {
        Ok(x) => x,
        Err(e) => return crate::route::resp::error(&format!("ERR PROXY CHECK: {e}")),
    };
    let start = start_nodes(shared);
    if start.is_empty() {
        return crate::route::resp::error("ERR PROXY CHECK: no nodes known (no seeds configured)");
    }
    let timeout = node_timeout(shared);
    let dialer = Arc::clone(&shared.settings.dialer);
    let command = if json {
        "PROXY CHECK JSON"
    } else {
        "PROXY CHECK"
    };
    jobs::run(
        &shared.registries.jobs,
        "check",
        command,
        false,
        json,
        |job| async move {
            job.set_total(2);
            let (s, f) = run_check(&dialer, &start, timeout, &hosts).await;
            job.step_done(format!("surveyed {} node(s)", s.nodes.len()));
            let report = report(&s, &f);
            job.step_done(report.verdict().to_string());
            Ok(report)
        },
    )
    .await
}
