//! Why a slot move stopped ([`MoveError`]), in words that say what state the slot was left in
//! and what the operator can do, and how a key is printed in them.

use std::time::Duration;

/// Why a move stopped. `Display` says what state the slot is in and what to do.
#[derive(Debug)]
pub enum MoveError {
    /// The cluster is not as planned (the slot has another owner now).
    Stale {
        /// The slot.
        slot: u16,
        /// What was found.
        why: String,
    },
    /// A key MIGRATE could not move within its timeout, alone.
    BigKey {
        /// The slot.
        slot: u16,
        /// The key, printable.
        key: String,
        /// Its size per `MEMORY USAGE`, if known.
        bytes: Option<u64>,
        /// Source address.
        from: String,
        /// Target address.
        to: String,
        /// MIGRATE's timeout (ms).
        timeout_ms: u64,
        /// The node's error.
        reply: String,
    },
    /// The target holds a key the source still has, and replacing it is not known to be safe.
    Conflict {
        /// The slot.
        slot: u16,
        /// Source address.
        from: String,
        /// Target address.
        to: String,
    },
    /// The slot's deadline passed with keys left.
    Timeout {
        /// The slot.
        slot: u16,
        /// The deadline.
        after: Duration,
    },
    /// A node failed or answered something unexpected.
    Node(anyhow::Error),
}

impl std::fmt::Display for MoveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MoveError::Stale { slot, why } => write!(
                f,
                "slot {slot}: {why}; the cluster changed under the plan: re-run to plan again"
            ),
            MoveError::BigKey {
                slot,
                key,
                bytes,
                from,
                to,
                timeout_ms,
                reply,
            } => write!(
                f,
                "slot {slot}: key '{key}'{} could not be moved from {from} to {to} within \
                 MIGRATE-TIMEOUT {timeout_ms} ms ({reply}). The slot is left migrating on {from} \
                 and importing on {to}, and clients are still served (through ASK). Re-run with \
                 a larger MIGRATE-TIMEOUT, or move the key by hand (MIGRATE on {from} with a \
                 longer timeout), then re-run or run PROXY FIX",
                bytes.map(|b| format!(" ({b} bytes)")).unwrap_or_default()
            ),
            MoveError::Conflict { slot, from, to } => write!(
                f,
                "slot {slot}: {to} already holds keys that {from} still has, and {to} is not \
                 importing the slot from {from}, so they are not replaced; compare the copies, \
                 delete the wrong one, then run PROXY FIX"
            ),
            MoveError::Timeout { slot, after } => write!(
                f,
                "slot {slot}: keys still left after {after:?}; the slot is left open (clients are \
                 still served through ASK); re-run (with a larger TIMEOUT) to finish it"
            ),
            MoveError::Node(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for MoveError {}

impl From<anyhow::Error> for MoveError {
    fn from(e: anyhow::Error) -> Self {
        MoveError::Node(e)
    }
}

/// A key as text for a report: printable ASCII as is, other bytes as `\xNN`, at most 128 bytes.
pub fn printable(key: &[u8]) -> String {
    let mut out = String::new();
    for &b in key.iter().take(128) {
        if (0x20..0x7f).contains(&b) && b != b'\'' && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if key.len() > 128 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_safely() {
        assert_eq!(printable(b"a b\x00'"), "a b\\x00\\x27");
        assert!(printable(&[b'x'; 200]).ends_with("..."));
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = MoveError::BigKey {
            slot: 7,
            key: "big".into(),
            bytes: Some(50_000_000),
            from: "a:1".into(),
            to: "b:2".into(),
            timeout_ms: 1,
            reply: "IOERR error or timeout writing to target instance".into(),
        };
        let t = e.to_string();
        assert!(t.contains("key 'big' (50000000 bytes)"), "{t}");
        assert!(
            t.contains("larger MIGRATE-TIMEOUT") && t.contains("PROXY FIX"),
            "{t}"
        );
        assert!(t.contains("migrating on a:1 and importing on b:2"), "{t}");
        let t = MoveError::Timeout {
            slot: 1,
            after: Duration::from_secs(3),
        }
        .to_string();
        assert!(t.contains("re-run"), "{t}");
    }
}
