//! `slotproxy_cross_slot_emulated_total{command}`: the multi-key commands across slots the
//! proxy carried out itself (`cross_slot = "emulate"`), by command.
//!
//! Invariant: one counter per name in [`COMMANDS`], the commands the emulation knows; a name
//! outside the list is never counted (the emulation only runs listed commands), so the series
//! set is fixed and known before any command runs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The commands the emulation carries out, lowercase, as the metric's `command` label.
pub const COMMANDS: &[&str] = &[
    "bitop",
    "blmove",
    "brpoplpush",
    "copy",
    "georadius",
    "georadiusbymember",
    "geosearchstore",
    "lcs",
    "lmove",
    "pfcount",
    "pfmerge",
    "rename",
    "renamenx",
    "rpoplpush",
    "sdiff",
    "sdiffstore",
    "sinter",
    "sintercard",
    "sinterstore",
    "smove",
    "sort",
    "sort_ro",
    "sunion",
    "sunionstore",
    "zdiff",
    "zdiffstore",
    "zinter",
    "zintercard",
    "zinterstore",
    "zrangestore",
    "zunion",
    "zunionstore",
];

/// Emulated commands so far, one counter per name of [`COMMANDS`].
pub struct Emulated {
    counts: Vec<AtomicU64>,
}

impl Default for Emulated {
    fn default() -> Self {
        Emulated {
            counts: COMMANDS.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Emulated {
    /// Counts one emulated run of `command` (a name of [`COMMANDS`]; others are ignored).
    pub fn bump(&self, command: &str) {
        if let Ok(i) = COMMANDS.binary_search(&command) {
            self.counts[i].fetch_add(1, Relaxed);
        }
    }

    /// Every command with its count, in [`COMMANDS`] order.
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        COMMANDS
            .iter()
            .zip(&self.counts)
            .map(|(name, c)| (*name, c.load(Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sorted_for_the_search_and_unknown_ones_are_ignored() {
        assert!(COMMANDS.windows(2).all(|w| w[0] < w[1]));
        let e = Emulated::default();
        e.bump("sunionstore");
        e.bump("sunionstore");
        e.bump("get");
        let t = e.totals();
        assert_eq!(t.iter().map(|(_, n)| n).sum::<u64>(), 2);
        assert!(t.contains(&("sunionstore", 2)));
    }
}
