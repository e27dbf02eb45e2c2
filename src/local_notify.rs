//! A wake-up signal for tasks of one worker thread: the single-thread counterpart of
//! `tokio::sync::Notify`, for the data path's per-request wakes (a reply arrived for a
//! session, a request is queued for a backend writer).
//!
//! `tokio::sync::Notify` is built for many threads: every wait registers in a lock-protected
//! waiter list and every dropped wait unregisters, which callgrind put at about 12% of the
//! worker's instructions per unpipelined request. Here the state is two `Cell`s.
//!
//! Invariants: at most one task waits on a given `LocalNotify` at a time (its owner: the
//! session loop, a connection's writer or reader), which is how every user in this crate uses
//! it; a `notify_one` with no task waiting leaves one permit that the next wait takes at once
//! (Notify's rule, so no wake is lost between a check and a wait); it is `!Send` and `!Sync`,
//! so it cannot be shared with another thread by mistake.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A single-waiter, single-thread wake-up signal with one stored permit.
#[derive(Default)]
pub struct LocalNotify {
    permit: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl LocalNotify {
    /// A signal with no permit stored.
    pub fn new() -> LocalNotify {
        LocalNotify::default()
    }

    /// Wakes the waiting task, or stores a permit for the next wait if none is waiting.
    ///
    /// A permit already stored means the task was woken for it, or was not waiting: either
    /// way it sees the permit at its next poll, so a second wake would only schedule it
    /// twice. The waker is woken by reference and kept, because the same task waits again
    /// right after (a clone and a drop per wake saved); [`LocalNotify::forget_waiter`] lets
    /// an owner that stops waiting for good drop it.
    pub fn notify_one(&self) {
        if self.permit.replace(true) {
            return;
        }
        if let Some(w) = self.waker.take() {
            w.wake_by_ref();
            self.waker.set(Some(w));
        }
    }

    /// Drops the stored waker: the task that waited on this signal is finishing, and a signal
    /// that outlives it (held by a recycled reply slot) must not keep the task's memory.
    pub fn forget_waiter(&self) {
        drop(self.waker.take());
    }

    /// Completes once a permit is available (immediately if one is stored), taking it.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self }
    }

    /// [`LocalNotify::notified`] as a poll, for a task that waits on several things in one
    /// poll: takes the permit if there is one, else keeps the task's waker.
    pub fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.permit.replace(false) {
            return Poll::Ready(());
        }
        // The same task polls again and again: keep its waker rather than clone it each time.
        match self.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => self.waker.set(Some(w)),
            _ => self.waker.set(Some(cx.waker().clone())),
        }
        Poll::Pending
    }
}

/// The future of [`LocalNotify::notified`].
pub struct Notified<'a> {
    notify: &'a LocalNotify,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.notify.poll_notified(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[tokio::test(flavor = "current_thread")]
    async fn a_notify_before_the_wait_is_kept_as_one_permit() {
        let n = LocalNotify::new();
        n.notify_one();
        n.notify_one();
        n.notified().await;
        // Only one permit: a second wait must not complete by itself.
        let second = tokio::time::timeout(std::time::Duration::from_millis(20), n.notified());
        assert!(second.await.is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiting_task_is_woken() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let n = Rc::new(LocalNotify::new());
                let waiter = {
                    let n = Rc::clone(&n);
                    tokio::task::spawn_local(async move { n.notified().await })
                };
                tokio::task::yield_now().await;
                assert!(!waiter.is_finished());
                n.notify_one();
                waiter.await.expect("the waiter finishes");
            })
            .await;
    }
}
