//! The data path's clock: monotonic time as plain `u64` microseconds.
//!
//! Every request is stamped when it arrives and timed when its reply goes out, on the client's
//! side and again per backend connection. `Instant` arithmetic (normalising seconds and
//! nanoseconds, then dividing down to microseconds) cost more per request than reading the
//! clock; a `u64` stamp subtracts in one instruction. Invariant: every stamp comes from the one
//! clock `Instant` also uses (`CLOCK_MONOTONIC`), so stamps taken on any thread compare, and a
//! stamp converts to an [`Instant`] for a timer with [`instant_at`].

use std::time::{Duration, Instant};

/// Microseconds on the monotonic clock (an arbitrary origin, the same for the whole machine).
#[inline]
pub fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration, and CLOCK_MONOTONIC
    // exists on every platform the proxy builds for; the call cannot fail with these arguments.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000)
        .wrapping_add(ts.tv_nsec as u64 / 1_000)
}

/// The instant a stamp stands for, given a pair `(now, now_us)` read together: for arming a
/// timer at a stamp plus a timeout. Stamps in the past give instants in the past.
pub fn instant_at(stamp_us: u64, now: Instant, now_us: u64) -> Instant {
    if stamp_us >= now_us {
        now + Duration::from_micros(stamp_us - now_us)
    } else {
        now.checked_sub(Duration::from_micros(now_us - stamp_us))
            .unwrap_or(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_advance_with_instant() {
        let (i0, u0) = (Instant::now(), now_us());
        std::thread::sleep(Duration::from_millis(20));
        let (i1, u1) = (Instant::now(), now_us());
        let by_instant = i1.duration_since(i0).as_micros() as i64;
        let by_stamp = (u1 - u0) as i64;
        // The same clock: the two measures of one interval agree to within the gap between
        // two clock reads.
        assert!(by_stamp >= 20_000, "{by_stamp}");
        assert!(
            (by_instant - by_stamp).abs() < 5_000,
            "{by_instant} {by_stamp}"
        );
    }

    #[test]
    fn a_stamp_converts_to_the_instant_it_stands_for() {
        let (now, us) = (Instant::now(), now_us());
        assert_eq!(
            instant_at(us + 1_500, now, us),
            now + Duration::from_micros(1_500)
        );
        assert_eq!(instant_at(us, now, us), now);
        assert!(instant_at(us - 1_000, now, us) < now);
    }
}
