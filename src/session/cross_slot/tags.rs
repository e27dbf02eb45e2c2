//! Names for temporary keys in a chosen slot: a hash tag per slot.
//!
//! A key's slot is decided by its hash tag, so `{<tag>}anything` lands in the tag's slot. The
//! table maps each of the 16384 slots to the shortest decimal number (as text) that hashes
//! to it; it is built once, on the first emulated command (about 170,000 CRC16s of a few
//! bytes, a few milliseconds), and never changes. Invariant: `key_slot(tag(s)) == s` for every slot `s`.

use crate::cluster::slots::{key_slot, SLOT_COUNT};
use std::sync::OnceLock;

static TAGS: OnceLock<Vec<String>> = OnceLock::new();

/// A hash tag (without braces) whose slot is `slot` (`slot` < 16384).
pub fn tag(slot: u16) -> &'static str {
    let tags = TAGS.get_or_init(build);
    &tags[usize::from(slot) % tags.len()]
}

fn build() -> Vec<String> {
    let mut tags: Vec<Option<String>> = vec![None; SLOT_COUNT];
    let mut missing = SLOT_COUNT;
    let mut n: u64 = 0;
    // The digits of `n`, written without allocating (only the winners become strings).
    let mut digits = [0u8; 20];
    while missing > 0 {
        let text = crate::route::resp::decimal_digits(n, &mut digits);
        let s = usize::from(key_slot(text));
        if tags[s].is_none() {
            tags[s] = Some(String::from_utf8_lossy(text).into_owned());
            missing -= 1;
        }
        n += 1;
    }
    tags.into_iter().map(Option::unwrap_or_default).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        for s in 0..SLOT_COUNT as u16 {
            let t = tag(s);
            assert_eq!(key_slot(t.as_bytes()), s);
            assert_eq!(key_slot(format!("{{{t}}}slotproxy:tmp:x").as_bytes()), s);
        }
    }
}
