//! Returning freed memory to the system after a burst.
//!
//! A slow reader can make the proxy hold hundreds of megabytes of replies for it. When those
//! are freed (the client caught up or left), glibc's allocator keeps the pages for reuse, so
//! the process's RSS stays at its peak for ever (measured: 8 slow readers of 60 x 1 MB replies
//! left 667 MB resident after they disconnected). Sessions that held a large backlog ask for a
//! trim when it is gone; a background task on the main runtime, never a worker, then calls
//! `malloc_trim(0)`, at most once a second, so the data path pays one atomic store per burst
//! and nothing per request.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// A client's pending replies must have reached this many bytes for their release to ask for
/// a trim: smaller backlogs are reused by the allocator soon enough.
pub const TRIM_AFTER_BYTES: usize = 4 << 20;

/// How often the trim task looks for requests.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Trim requests from the workers. Invariant: a request made before the task's check is
/// served by that check or the next one.
#[derive(Default)]
pub struct Trimmer {
    wanted: AtomicBool,
    trims: std::sync::atomic::AtomicU64,
}

impl Trimmer {
    /// Asks for freed memory to be returned to the system soon (cheap; call after freeing a
    /// backlog of at least [`TRIM_AFTER_BYTES`]).
    pub fn request(&self) {
        self.wanted.store(true, Relaxed);
    }

    /// How many trims have run (INFO's `slotproxy_memory_trims`).
    pub fn trims(&self) -> u64 {
        self.trims.load(Relaxed)
    }
}

/// Serves `trimmer`'s requests until the process ends.
pub async fn run(trimmer: Arc<Trimmer>) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if trimmer.wanted.swap(false, Relaxed) {
            trim();
            trimmer.trims.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    let started = std::time::Instant::now();
    // SAFETY: malloc_trim takes no pointers and only touches the allocator's own state,
    // under its own locks.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(
        released = released != 0,
        took_us = started.elapsed().as_micros() as u64,
        "returned freed memory to the system"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
