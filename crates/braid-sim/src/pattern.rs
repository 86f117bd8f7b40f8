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

#[inline]
fn byte(key: u64, off: u64) -> u8 {
    word(key, off / 8).to_le_bytes()[(off % 8) as usize]
}

/// Fills `buf` with the stream `key` from byte `offset` on.
pub(crate) fn fill(key: u64, offset: u64, buf: &mut [u8]) {
    // Bytewise up to a word boundary, then whole words (fixed-size copies), then the tail.
    let head = (((8 - offset % 8) % 8) as usize).min(buf.len());
    for (i, b) in buf[..head].iter_mut().enumerate() {
        *b = byte(key, offset + i as u64);
    }
    let mut k = (offset + head as u64) / 8;
    let mut words = buf[head..].chunks_exact_mut(8);
    for chunk in &mut words {
        chunk.copy_from_slice(&word(key, k).to_le_bytes());
        k += 1;
    }
    let tail = words.into_remainder();
    let tail_off = k * 8;
    for (i, b) in tail.iter_mut().enumerate() {
        *b = byte(key, tail_off + i as u64);
    }
}

/// Checks `data` against the stream `key` at `offset`; returns the offset of the first wrong
/// byte.
pub(crate) fn check(key: u64, offset: u64, data: &[u8]) -> Option<u64> {
    let head = (((8 - offset % 8) % 8) as usize).min(data.len());
    for (i, &b) in data[..head].iter().enumerate() {
        if b != byte(key, offset + i as u64) {
            return Some(offset + i as u64);
        }
    }
    let first_word = (offset + head as u64) / 8;
    let mut words = data[head..].chunks_exact(8);
    for (n, chunk) in (&mut words).enumerate() {
        let k = first_word + n as u64;
        let got = u64::from_le_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        let want = word(key, k);
        if got != want {
            let diff = (got ^ want).trailing_zeros() / 8;
            return Some(k * 8 + u64::from(diff));
        }
    }
    let tail = words.remainder();
    let tail_off = offset + (data.len() - tail.len()) as u64;
    for (i, &b) in tail.iter().enumerate() {
        if b != byte(key, tail_off + i as u64) {
            return Some(tail_off + i as u64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alignment() {
        let mut whole = vec![0; 64];
        fill(3, 0, &mut whole);
        for start in 0..20 {
            for len in 0..30 {
                let mut part = vec![0; len];
                fill(3, start as u64, &mut part);
                assert_eq!(&whole[start..start + len], &part[..]);
                assert_eq!(check(3, start as u64, &part), None);
                if len > 0 {
                    let bad = len / 2;
                    part[bad] ^= 0x80;
                    assert_eq!(check(3, start as u64, &part), Some((start + bad) as u64));
                }
            }
        }
    }

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
