//! A slot-move run's progress figures for `PROXY JOB`: slots done of planned, keys moved, keys
//! per second and the estimated time left (from the pace of the slots done so far).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counters of one run, updated by the mover after every `MIGRATE` round and every slot. A
/// clone shares the counters (the slots moved in parallel all count in one run).
#[derive(Clone, Debug)]
pub struct Progress {
    /// Slot moves planned.
    pub slots_total: usize,
    /// (slot moves finished, keys moved).
    done: Arc<Mutex<(usize, u64)>>,
    started: Instant,
}

impl Progress {
    /// A run of `slots_total` slot moves starting now.
    pub fn new(slots_total: usize) -> Progress {
        Progress {
            slots_total,
            done: Arc::new(Mutex::new((0, 0))),
            started: Instant::now(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, (usize, u64)> {
        // Plain counters: one a panicking holder left are still right.
        self.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Slot moves finished.
    pub fn slots_done(&self) -> usize {
        self.counts().0
    }

    /// Keys moved.
    pub fn keys(&self) -> u64 {
        self.counts().1
    }

    /// One more slot move finished.
    pub fn slot_done(&self) {
        self.counts().0 += 1;
    }

    /// `n` more keys moved.
    pub fn add_keys(&self, n: u64) {
        self.counts().1 += n;
    }

    /// The figures as one line.
    pub fn line(&self) -> String {
        let (slots, keys) = *self.counts();
        line(slots, self.slots_total, keys, self.started.elapsed())
    }
}

/// `slots 10/100 keys 2000 keys/s 400 eta 45s`: the ETA assumes the remaining slots take as
/// long as the ones done (unknown before the first slot is done).
pub fn line(done: usize, total: usize, keys: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        (keys as f64 / secs).round() as u64
    } else {
        0
    };
    let eta = if done == 0 {
        "?".to_string()
    } else {
        let left = secs * total.saturating_sub(done) as f64 / done as f64;
        format!("{}s", left.ceil() as u64)
    };
    format!("slots {done}/{total} keys {keys} keys/s {rate} eta {eta}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures() {
        assert_eq!(
            line(10, 100, 2000, Duration::from_secs(5)),
            "slots 10/100 keys 2000 keys/s 400 eta 45s"
        );
        assert_eq!(
            line(0, 100, 0, Duration::ZERO),
            "slots 0/100 keys 0 keys/s 0 eta ?"
        );
        assert_eq!(
            line(100, 100, 7, Duration::from_millis(3500)),
            "slots 100/100 keys 7 keys/s 2 eta 0s"
        );
    }
}
