//! The transfer's data: a deterministic pseudo-random byte stream the receiver can check at
//! any offset without keeping a copy.

/// 64-bit word `k` of the stream `key` (SplitMix64 of the word index).
#[inline]
fn word(key: u64, k: u64) -> u64 {
    let mut z = key ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `buf` with the stream `key` from byte `offset` on.
pub(crate) fn fill(key: u64, offset: u64, buf: &mut [u8]) {
    let mut off = offset;
    let mut i = 0;
    while i < buf.len() {
        let w = word(key, off / 8).to_le_bytes();
        let start = (off % 8) as usize;
        let n = (8 - start).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&w[start..start + n]);
        i += n;
        off += n as u64;
    }
}

/// Checks `data` against the stream `key` at `offset`; returns the offset of the first wrong
/// byte.
pub(crate) fn check(key: u64, offset: u64, data: &[u8]) -> Option<u64> {
    let mut off = offset;
    let mut i = 0;
    while i < data.len() {
        let w = word(key, off / 8).to_le_bytes();
        let start = (off % 8) as usize;
        let n = (8 - start).min(data.len() - i);
        if data[i..i + n] != w[start..start + n] {
            let bad = (0..n).find(|&j| data[i + j] != w[start + j]).unwrap_or(0);
            return Some(off + bad as u64);
        }
        i += n;
        off += n as u64;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_and_check_at_any_offset() {
        let mut whole = vec![0; 100];
        fill(7, 0, &mut whole);
        let mut part = vec![0; 50];
        fill(7, 13, &mut part);
        assert_eq!(&whole[13..63], &part[..]);
        assert_eq!(check(7, 13, &part), None);
        part[20] ^= 1;
        assert_eq!(check(7, 13, &part), Some(33));
        assert_ne!(check(8, 0, &whole), None);
    }
}
