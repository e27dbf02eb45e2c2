//! Admin jobs: every engine run (create, check, rebalance) is a job with an ID, progress and a
//! log, listed by `PROXY JOBS` and shown by `PROXY JOB <id>`.
//!
//! The registry is shared by all workers (a client may ask about a job another client started)
//! and is touched only by admin commands, never by the data path. Finished jobs are kept, up to
//! [`KEEP_FINISHED`], so an operator can read how a run ended.

use crate::admin::report::Report;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Finished jobs kept for `PROXY JOB`.
pub const KEEP_FINISHED: usize = 100;

/// Where a job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Still running.
    Running,
    /// Finished; the engine's verdict line.
    Done(String),
    /// Stopped on an error.
    Failed(String),
}

/// A job's changing state.
#[derive(Debug)]
pub struct Progress {
    /// Running, done or failed.
    pub status: Status,
    /// Steps finished.
    pub steps_done: usize,
    /// Steps planned (0 while unknown).
    pub steps_total: usize,
    /// One line per event, oldest first.
    pub log: Vec<String>,
    /// The full report of a finished job.
    pub report: Vec<String>,
    /// The engine's latest progress figures (slot moves: slots, keys, keys/s, ETA), if any.
    pub detail: String,
}

/// One engine run.
#[derive(Debug)]
pub struct Job {
    /// Unique within the process.
    pub id: u64,
    /// `create`, `check`, `rebalance-masters`, ...
    pub engine: String,
    /// The command line that started it.
    pub command: String,
    /// Wall-clock start (seconds since the epoch).
    pub started_unix: u64,
    started: Instant,
    progress: Mutex<Progress>,
    /// The registry's finished-run tally, counted into when the job ends.
    tally: Arc<Tally>,
}

/// Finished engine runs by (engine, result), for `slotproxy_admin_jobs_total`. Unlike the job
/// list it never forgets: a counter must not go down when old jobs are dropped.
#[derive(Debug, Default)]
struct Tally(Mutex<BTreeMap<(String, &'static str), u64>>);

impl Job {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an event.
    pub fn log(&self, line: impl Into<String>) {
        let line = format!(
            "+{:.1}s {}",
            self.started.elapsed().as_secs_f64(),
            line.into()
        );
        tracing::info!(job = self.id, engine = %self.engine, "{line}");
        self.lock().log.push(line);
    }

    /// Sets how many steps the plan has.
    pub fn set_total(&self, steps: usize) {
        self.lock().steps_total = steps;
    }

    /// Records a finished step.
    pub fn step_done(&self, line: impl Into<String>) {
        self.lock().steps_done += 1;
        self.log(line);
    }

    /// Records `n` finished steps without a log line (engines with thousands of small steps
    /// log groups of them).
    pub fn advance(&self, n: usize) {
        self.lock().steps_done += n;
    }

    /// Replaces the progress figures shown by `PROXY JOB`.
    pub fn set_detail(&self, detail: impl Into<String>) {
        self.lock().detail = detail.into();
    }

    /// Whether the job is still running.
    pub fn running(&self) -> bool {
        self.lock().status == Status::Running
    }

    /// A snapshot of the job's state.
    pub fn snapshot(&self) -> (Status, usize, usize, Vec<String>, Vec<String>) {
        let p = self.lock();
        (
            p.status.clone(),
            p.steps_done,
            p.steps_total,
            p.log.clone(),
            p.report.clone(),
        )
    }

    fn finish(&self, result: &Result<Vec<String>, String>) {
        let outcome = if result.is_ok() { "done" } else { "failed" };
        *self
            .tally
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((self.engine.clone(), outcome))
            .or_default() += 1;
        match result {
            Ok(_) => tracing::info!(job = self.id, engine = %self.engine, "admin job done"),
            Err(e) => {
                tracing::warn!(job = self.id, engine = %self.engine, error = %e, "admin job failed")
            }
        }
        let mut p = self.lock();
        match result {
            Ok(report) => {
                p.status = Status::Done(report.first().cloned().unwrap_or_else(|| "OK".into()));
                p.report = report.clone();
            }
            Err(e) => p.status = Status::Failed(e.clone()),
        }
    }

    /// One line for `PROXY JOBS`.
    pub fn summary(&self) -> String {
        let (status, done, total, _, _) = self.snapshot();
        let status = match status {
            Status::Running => "running".to_string(),
            Status::Done(v) => format!("done: {v}"),
            Status::Failed(e) => format!("failed: {e}"),
        };
        format!(
            "job {} {} steps {done}/{total} {status} ({})",
            self.id, self.engine, self.command
        )
    }

    /// The lines of `PROXY JOB <id>`.
    pub fn details(&self) -> Vec<String> {
        let (_, _, _, log, report) = self.snapshot();
        let detail = self.lock().detail.clone();
        let mut out = vec![
            self.summary(),
            format!("started_unix {}", self.started_unix),
        ];
        if !detail.is_empty() {
            out.push(format!("progress {detail}"));
        }
        out.extend(log.into_iter().map(|l| format!("log {l}")));
        out.extend(report.into_iter().map(|l| format!("report {l}")));
        out
    }
}

/// All jobs of this proxy.
#[derive(Debug, Default)]
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
    tally: Arc<Tally>,
    /// Slots the admin engines moved since start (`slotproxy_admin_slots_moved_total`).
    slots_moved: AtomicU64,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new running job.
    pub fn start(&self, engine: &str, command: &str) -> Arc<Job> {
        let id = self.next.fetch_add(1, Relaxed) + 1;
        let job = Arc::new(Job {
            id,
            engine: engine.to_string(),
            command: command.to_string(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            started: Instant::now(),
            progress: Mutex::new(Progress {
                status: Status::Running,
                steps_done: 0,
                steps_total: 0,
                log: Vec::new(),
                report: Vec::new(),
                detail: String::new(),
            }),
            tally: Arc::clone(&self.tally),
        });
        let mut jobs = self.lock();
        jobs.insert(id, Arc::clone(&job));
        // Forget the oldest finished jobs beyond the limit.
        let finished: Vec<u64> = jobs
            .iter()
            .filter(|(_, j)| !j.running())
            .map(|(id, _)| *id)
            .collect();
        for id in finished
            .iter()
            .take(finished.len().saturating_sub(KEEP_FINISHED))
        {
            jobs.remove(id);
        }
        job
    }

    /// A job by ID.
    pub fn get(&self, id: u64) -> Option<Arc<Job>> {
        self.lock().get(&id).cloned()
    }

    /// All jobs, oldest first.
    pub fn list(&self) -> Vec<Arc<Job>> {
        self.lock().values().cloned().collect()
    }

    /// (engine, result, runs) of every finished run since start, `result` being `done` or
    /// `failed`: the series of `slotproxy_admin_jobs_total`. Engine names are the engines'
    /// own constants, so the label set stays small.
    pub fn finished(&self) -> Vec<(String, &'static str, u64)> {
        self.tally
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((engine, result), n)| (engine.clone(), *result, *n))
            .collect()
    }

    /// Counts one slot moved by an engine (REBALANCE SLOTS, FIX, a drain).
    pub fn count_slot_moved(&self) {
        self.slots_moved.fetch_add(1, Relaxed);
    }

    /// Slots moved by the engines since start: the value of `slotproxy_admin_slots_moved_total`.
    pub fn slots_moved(&self) -> u64 {
        self.slots_moved.load(Relaxed)
    }

    /// Whether a job of `engine` is running (engines that change a cluster run one at a time).
    pub fn running(&self, engine: &str) -> Option<Arc<Job>> {
        self.lock()
            .values()
            .find(|j| j.engine == engine && j.running())
            .cloned()
    }
}

/// Runs an engine as a job. With `detach` (the ASYNC option) the reply is `OK job <id>` at
/// once and the engine goes on in the background on this worker; otherwise the reply is the
/// engine's [`Report`] (or its error) when it finishes: its JSON document when `json` (the
/// JSON option) and the engine has one, else its lines. The job keeps the lines, verdict
/// first, for `PROXY JOB`.
pub async fn run<F, Fut>(
    jobs: &Jobs,
    engine: &str,
    command: &str,
    detach: bool,
    json: bool,
    body: F,
) -> Bytes
where
    F: FnOnce(Arc<Job>) -> Fut,
    Fut: Future<Output = anyhow::Result<Report>> + 'static,
{
    let job = jobs.start(engine, command);
    let fut = body(Arc::clone(&job));
    let finish = {
        let job = Arc::clone(&job);
        async move {
            let result = fut.await.map_err(|e| format!("{e:#}"));
            job.finish(&match &result {
                Ok(report) => Ok(report.text().to_vec()),
                Err(e) => Err(e.clone()),
            });
            result
        }
    };
    if detach {
        tokio::task::spawn_local(finish);
        return crate::route::resp::lines_reply(&[format!("OK job {}", job.id)]);
    }
    match finish.await {
        Ok(report) => report.reply(json),
        Err(e) => crate::route::resp::error(&format!("ERR job {} failed: {e}", job.id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_and_progress() {
        let jobs = Jobs::default();
        let a = jobs.start("check", "PROXY CHECK");
        a.set_total(3);
        a.step_done("read nodes");
        a.advance(1);
        a.set_detail("slots 2/3");
        assert!(a.details().iter().any(|l| l == "progress slots 2/3"));
        a.set_total(2);
        a.lock().steps_done = 1;
        assert!(jobs.running("check").is_some());
        a.finish(&Ok(vec!["OK".into()]));
        assert!(jobs.running("check").is_none());
        assert!(a.summary().contains("steps 1/2 done: OK"));
        assert_eq!(jobs.get(a.id).map(|j| j.id), Some(a.id));
        assert!(a.details().iter().any(|l| l.contains("read nodes")));
        let b = jobs.start("check", "PROXY CHECK");
        b.finish(&Err("no node answered".into()));
        let c = jobs.start("create", "PROXY CREATE");
        c.finish(&Ok(vec!["OK".into()]));
        assert_eq!(
            jobs.finished(),
            vec![
                ("check".to_string(), "done", 1),
                ("check".to_string(), "failed", 1),
                ("create".to_string(), "done", 1),
            ]
        );
        // Another registry (another proxy in the process) counts its own runs.
        assert!(Jobs::default().finished().is_empty());
    }
}
