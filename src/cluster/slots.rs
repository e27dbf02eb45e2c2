//! Hash slots: which of Redis Cluster's 16384 slots a key belongs to.
//!
//! The rule must match Redis bit for bit (CRC16-XMODEM of the key, or of its hash tag, modulo
//! 16384), or the proxy would send keys to nodes that do not own them. The tests pin it to
//! values `CLUSTER KEYSLOT` returns, and the routing integration test checks 10 000 keys
//! against a live cluster.

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: usize = 16384;

/// The part of `key` that is hashed: the content of the first `{...}` when it is non-empty,
/// otherwise the whole key. An empty tag `{}` hashes the whole key, as in Redis.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = find_byte(key, b'{') {
        if let Some(len) = find_byte(&key[open + 1..], b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The first position of `byte` in `hay`, eight bytes at a time. Every key of every request
/// is searched for `{`: a byte loop cost as much as the CRC itself for a 16-byte key, and
/// the `memchr` crate's vector search has a set-up cost that keys this short do not repay.
fn find_byte(hay: &[u8], byte: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES * u64::from(byte);
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // A zero byte in `v` is a match. The lowest flagged byte is always a real zero (a
        // false flag can only sit above a real one), and little-endian order makes the
        // lowest byte the first.
        let v = u64::from_le_bytes(word) ^ pattern;
        let zeros = v.wrapping_sub(ONES) & !v & HIGHS;
        if zeros != 0 {
            return Some(base + (zeros.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == byte)
        .map(|i| base + i)
}

/// CRC16-XMODEM (polynomial 0x1021, initial value 0, no reflection) lookup tables, built at
/// compile time: `CRC16_TABLES[k][x]` is the CRC of byte `x` followed by `k` zero bytes. Every
/// request hashes its keys; a byte-at-a-time walk (table 0 alone) costs about a third of the
/// instructions of the general-purpose `crc16` crate, and four bytes at a time (four
/// independent lookups, 2 KiB of tables) cost about half of that again on a 16-byte key.
const CRC16_TABLES: [[u16; 256]; 4] = {
    let mut tables = [[0u16; 256]; 4];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 4 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev << 8) ^ tables[0][(prev >> 8) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
};

/// CRC16-XMODEM of `data`, as Redis's `crc16()`.
pub fn crc16(data: &[u8]) -> u16 {
    let [t0, t1, t2, t3] = &CRC16_TABLES;
    let mut words = data.chunks_exact(4);
    let mut crc = 0u16;
    for w in &mut words {
        // The register's two bytes fold into the first two; the four lookups are independent.
        let [hi, lo] = crc.to_be_bytes();
        crc = t3[usize::from(hi ^ w[0])]
            ^ t2[usize::from(lo ^ w[1])]
            ^ t1[usize::from(w[2])]
            ^ t0[usize::from(w[3])];
    }
    words.remainder().iter().fold(crc, |crc, &b| {
        (crc << 8) ^ t0[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The hash slot of `key`.
#[inline]
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOT_COUNT as u16 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.0.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn crc16_check_value() {
        // The standard check value of CRC-16/XMODEM.
        assert_eq!(crc16(b"123456789"), 0x31c3);
    }

    #[test]
    fn four_bytes_at_a_time_agree_with_the_bit_by_bit_definition() {
        fn bitwise(data: &[u8]) -> u16 {
            let mut crc = 0u16;
            for &b in data {
                crc ^= u16::from(b) << 8;
                for _ in 0..8 {
                    crc = if crc & 0x8000 != 0 {
                        (crc << 1) ^ 0x1021
                    } else {
                        crc << 1
                    };
                }
            }
            crc
        }
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..8 {
            for end in start..data.len() {
                assert_eq!(
                    crc16(&data[start..end]),
                    bitwise(&data[start..end]),
                    "{start}..{end}"
                );
            }
        }
    }

    #[test]
    fn find_byte_finds_the_first_match_anywhere() {
        for len in 0..40 {
            for at in 0..len {
                for other in [None, Some(at + 1), Some(len - 1)] {
                    let mut hay = vec![b'a'; len];
                    // Bytes next to the target's value: the word trick must not flag them.
                    hay.iter_mut()
                        .enumerate()
                        .for_each(|(i, b)| *b = [b'z', b'|', 0x7a, 0xfb][i % 4]);
                    hay[at] = b'{';
                    if let Some(o) = other.filter(|&o| o < len) {
                        hay[o] = b'{';
                    }
                    assert_eq!(find_byte(&hay, b'{'), Some(at), "len {len} at {at}");
                }
            }
            assert_eq!(find_byte(&vec![b'}'; len], b'{'), None);
        }
        assert_eq!(find_byte(&[0x00, 0x01, 0x7b], b'{'), Some(2));
        assert_eq!(find_byte(&[0xff; 9], 0xff), Some(0));
    }

    #[test]
    fn hash_tags_follow_redis_rule() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"no-tag"), b"no-tag");
        assert_eq!(hash_tag(b"open{only"), b"open{only");
        assert_eq!(key_slot(b"{user1000}.a"), key_slot(b"{user1000}.b"));
    }
}
