//! CLIENT PAUSE / UNPAUSE: the proxy-wide pause state that every session reads.
//!
//! The pause concerns the proxy's own clients on every worker, not the nodes: a node is never
//! paused by it. As in Redis 7.0, `ALL` holds every command of every client (the pausing one
//! and CLIENT UNPAUSE included: only the timeout ends an ALL pause, as on Redis), and `WRITE`
//! holds the commands that may write or replicate (writes, EVAL/EVALSHA/FCALL, PUBLISH,
//! PFCOUNT, ...) and an EXEC whose transaction queued one; reads go on. A held client's later
//! commands wait behind the held one, so each client's order is kept. A new pause while one is
//! in force keeps the stricter mode and the later end, as Redis does. The proxy's own `PROXY`
//! commands are never held, so an operator can always reach the proxy.
//!
//! Invariants: the state is one atomic word (mode and end), so a session reads it with one
//! relaxed load per batch of requests; whoever ends or shortens a pause (UNPAUSE) wakes every
//! waiter, and a waiter re-reads the state after arming its wake-up, so no release is missed.

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// What a pause holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// Commands that may write (`WRITE`).
    Write = 1,
    /// Every command (`ALL`, the default).
    All = 2,
}

/// The pause in force: [`Mode`] in the low two bits, the end (milliseconds since the proxy
/// started) above them; 0 when there is none.
#[derive(Debug, Default)]
pub struct ClientPause {
    state: AtomicU64,
    /// Woken (all waiters) when the pause is lifted.
    lifted: tokio::sync::Notify,
}

/// The largest end kept, in milliseconds: far beyond any real pause, and small enough that the
/// shift cannot overflow.
const MAX_END_MS: u64 = u64::MAX >> 3;

fn unpack(state: u64, now_ms: u64) -> Option<(Mode, u64)> {
    let mode = match state & 3 {
        1 => Mode::Write,
        2 => Mode::All,
        _ => return None,
    };
    let end = state >> 2;
    (end > now_ms).then_some((mode, end))
}

impl ClientPause {
    /// The raw state, read once per batch on the data path: 0 means no pause (the common
    /// case, which needs nothing more).
    pub fn word(&self) -> u64 {
        self.state.load(Relaxed)
    }

    /// The pause in force at `now_ms` (milliseconds since the proxy started), given a state
    /// read with [`ClientPause::word`]: its mode and end.
    pub fn in_force(word: u64, now_ms: u64) -> Option<(Mode, u64)> {
        unpack(word, now_ms)
    }

    /// Pauses for `ms` milliseconds from `now_ms`; merged with a pause in force (the stricter
    /// mode, the later end).
    pub fn pause(&self, mode: Mode, ms: u64, now_ms: u64) {
        let end = now_ms.saturating_add(ms).min(MAX_END_MS);
        let _ = self.state.fetch_update(Relaxed, Relaxed, |cur| {
            let (mode, end) = match unpack(cur, now_ms) {
                Some((m, e)) => (m.max(mode), e.max(end)),
                None => (mode, end),
            };
            Some((end << 2) | mode as u64)
        });
        // A shorter pause cannot replace a longer one, so nobody needs waking here.
    }

    /// Ends the pause (CLIENT UNPAUSE) and releases every held client.
    pub fn unpause(&self) {
        self.state.store(0, Relaxed);
        self.lifted.notify_waiters();
    }

    /// Waits until no pause of a mode that holds `write` (whether the held command may write)
    /// is in force. `now_ms` reads the proxy's clock (milliseconds since it started).
    pub async fn released(&self, write: bool, now_ms: impl Fn() -> u64) {
        loop {
            let lifted = self.lifted.notified();
            tokio::pin!(lifted);
            // Armed before the state is read: an UNPAUSE after the read still wakes it.
            lifted.as_mut().enable();
            let now = now_ms();
            let end = match unpack(self.word(), now) {
                Some((mode, end)) if holds(mode, write) => end,
                _ => return,
            };
            tokio::select! {
                _ = &mut lifted => {}
                _ = tokio::time::sleep(Duration::from_millis(end - now)) => {}
            }
        }
    }
}

/// Whether a pause of `mode` holds a command (`write`: it may write or replicate).
pub fn holds(mode: Mode, write: bool) -> bool {
    mode == Mode::All || write
}

/// Reads CLIENT PAUSE's arguments (after `CLIENT`, from the subcommand as typed): the timeout
/// in milliseconds and the mode, with Redis's checks in Redis's order (the mode first) and its
/// error texts.
pub fn parse(args: &[Bytes]) -> Result<(u64, Mode), String> {
    let (timeout, mode) = match args {
        [_, t] => (t, Mode::All),
        [_, t, m] if m.eq_ignore_ascii_case(b"write") => (t, Mode::Write),
        [_, t, m] if m.eq_ignore_ascii_case(b"all") => (t, Mode::All),
        [_, _, _] => return Err("ERR CLIENT PAUSE mode must be WRITE or ALL".into()),
        _ => return Err(crate::session::clients::syntax_error(&args[0])),
    };
    let ms = std::str::from_utf8(timeout)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or("ERR timeout is not an integer or out of range")?;
    let ms = u64::try_from(ms).map_err(|_| "ERR timeout is negative")?;
    Ok((ms, mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::resp::test_args as args;

    #[test]
    fn arguments_and_errors_are_redis_s() {
        let p = |a: &[&str]| parse(&args(a)).map_err(|e| e.to_string());
        assert_eq!(p(&["PAUSE", "100"]), Ok((100, Mode::All)));
        assert_eq!(p(&["pause", "0", "write"]), Ok((0, Mode::Write)));
        assert_eq!(p(&["pause", "5", "ALL"]), Ok((5, Mode::All)));
        let bad_int = Err("ERR timeout is not an integer or out of range".to_string());
        assert_eq!(p(&["pause", "abc"]), bad_int);
        assert_eq!(p(&["pause", "1.5"]), bad_int);
        assert_eq!(p(&["pause", "-1"]), Err("ERR timeout is negative".into()));
        assert_eq!(
            p(&["pause", "x", "foo"]),
            Err("ERR CLIENT PAUSE mode must be WRITE or ALL".into())
        );
        assert_eq!(
            p(&["Pause", "1", "write", "x"]),
            Err(
                "ERR unknown subcommand or wrong number of arguments for 'Pause'. Try CLIENT HELP."
                    .into()
            )
        );
    }

    #[test]
    fn pauses_merge_to_the_stricter_mode_and_later_end() {
        let p = ClientPause::default();
        assert_eq!(ClientPause::in_force(p.word(), 0), None);
        p.pause(Mode::All, 1000, 100);
        assert_eq!(
            ClientPause::in_force(p.word(), 100),
            Some((Mode::All, 1100))
        );
        p.pause(Mode::Write, 5000, 200);
        assert_eq!(
            ClientPause::in_force(p.word(), 300),
            Some((Mode::All, 5200))
        );
        assert_eq!(ClientPause::in_force(p.word(), 5200), None, "ended");
        // Once ended, a new pause replaces it whole.
        p.pause(Mode::Write, 10, 6000);
        assert_eq!(
            ClientPause::in_force(p.word(), 6000),
            Some((Mode::Write, 6010))
        );
        p.unpause();
        assert_eq!(p.word(), 0);
        assert!(holds(Mode::All, false) && holds(Mode::Write, true) && !holds(Mode::Write, false));
        // A huge timeout is kept, not wrapped.
        p.pause(Mode::All, u64::MAX, 1);
        assert!(ClientPause::in_force(p.word(), u64::MAX >> 4).is_some());
    }
}
