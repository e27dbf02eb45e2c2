//! The proxy's one shutdown state: whether a graceful stop has begun, and whether its deadline
//! has passed.
//!
//! Every part that must stop holds a clone of the same [`Shutdown`]: the accept loop waits on
//! it, `PROXY SHUTDOWN` and the signal handler start it, workers drain by it and sessions read
//! it at the top of each loop turn. Invariants: the phase only moves forward (running,
//! stopping, aborting; never back); reading it is one atomic load (no lock, no allocation), so
//! the data path may look at it as often as it likes; a waiter never misses the change, however
//! late it starts waiting.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

const RUNNING: u8 = 0;
const STOPPING: u8 = 1;
const ABORTING: u8 = 2;

/// A cloneable handle on the proxy's shutdown state; every clone sees the same state.
#[derive(Clone, Debug)]
pub struct Shutdown(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// The phase, for readers: one load.
    phase: AtomicU8,
    /// The same phase, for waiters.
    changed: watch::Sender<u8>,
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A proxy that is running.
    pub fn new() -> Shutdown {
        Shutdown(Arc::new(Inner {
            phase: AtomicU8::new(RUNNING),
            changed: watch::Sender::new(RUNNING),
        }))
    }

    /// Begins the graceful stop (SIGTERM, SIGINT, `PROXY SHUTDOWN`): no new clients, no new
    /// requests read; what was read is answered. Idempotent.
    pub fn stop(&self) {
        self.advance(STOPPING);
    }

    /// The graceful stop's deadline (`shutdown_timeout`) passed: requests still unanswered
    /// get an error now. Implies [`Shutdown::stop`]. Idempotent.
    pub fn abort(&self) {
        self.advance(ABORTING);
    }

    fn advance(&self, to: u8) {
        if self.0.phase.fetch_max(to, Ordering::AcqRel) < to {
            self.0.changed.send_if_modified(|p| {
                let moved = *p < to;
                *p = (*p).max(to);
                moved
            });
        }
    }

    /// Whether the graceful stop has begun (also true once aborting).
    pub fn is_stopping(&self) -> bool {
        self.0.phase.load(Ordering::Acquire) >= STOPPING
    }

    /// Whether the graceful stop's deadline has passed.
    pub fn is_aborting(&self) -> bool {
        self.0.phase.load(Ordering::Acquire) >= ABORTING
    }

    /// Completes once the graceful stop has begun (at once if it already has).
    pub async fn wait(&self) {
        let mut rx = self.0.changed.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|p| *p >= STOPPING).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn phases_only_move_forward_and_every_clone_sees_them() {
        let s = Shutdown::new();
        let other = s.clone();
        assert!(!other.is_stopping() && !other.is_aborting());
        s.stop();
        assert!(other.is_stopping() && !other.is_aborting());
        other.abort();
        assert!(s.is_stopping() && s.is_aborting());
        s.stop();
        assert!(s.is_aborting(), "stop after abort must not go back");
    }

    #[test]
    fn waiters_wake_whether_they_start_before_or_after_the_stop() {
        block_on(async {
            let s = Shutdown::new();
            let waiter = tokio::spawn({
                let s = s.clone();
                async move { s.wait().await }
            });
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished());
            s.stop();
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("woken")
                .expect("task");
            // A late waiter returns at once.
            tokio::time::timeout(std::time::Duration::from_secs(5), s.wait())
                .await
                .expect("already stopping");
        });
    }

    #[test]
    fn abort_alone_wakes_waiters() {
        block_on(async {
            let s = Shutdown::new();
            let w = s.clone();
            let waiter = tokio::spawn(async move { w.wait().await });
            tokio::task::yield_now().await;
            s.abort();
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("woken")
                .expect("task");
        });
    }
}
