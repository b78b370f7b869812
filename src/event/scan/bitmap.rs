//! Where a line's `"` and `\` are, found for its first [`COVERED`] bytes in one vector
//! pass (with whether it holds control characters at all), so that the scanner finds
//! each string's end with a bit scan. Events have some sixty strings, most of them short
//! (member names, enumerated values): searching each from its start, a word at a time,
//! was half of the scanner's time, most of it in mispredicted loop exits.

use wide::{i8x32, CmpEq, CmpLt};

/// Bytes of a line the bitmap covers; past them strings are searched as before.
const COVERED: usize = 2048;
const WORDS: usize = COVERED / 64;

pub(super) struct Bitmap {
    /// Bit `i % 64` of word `i / 64`: byte `i` is `"` or `\`.
    quotes: [u64; WORDS],
    /// Bytes covered: the line's length, at most [`COVERED`].
    covered: usize,
    /// Whether the line holds a byte below 0x20 anywhere.
    pub(super) controls: bool,
}

impl Bitmap {
    pub(super) fn new(b: &[u8]) -> Self {
        let covered = b.len().min(COVERED);
        let mut quotes = [0u64; WORDS];
        let mut controls = 0u64;
        for (word, block) in quotes.iter_mut().zip(b[..covered].chunks(64)) {
            let (q, c) = if let Ok(full) = <&[u8; 64]>::try_from(block) {
                masks(full)
            } else {
                // The last, partial block, padded with spaces (neither flagged).
                let mut padded = [b' '; 64];
                padded[..block.len()].copy_from_slice(block);
                masks(&padded)
            };
            *word = q;
            controls |= c;
        }
        let rest = &b[covered..];
        Bitmap {
            quotes,
            covered,
            // Counted without an early exit, so that it compiles to vector instructions.
            controls: controls != 0 || rest.iter().fold(0u8, |n, &c| n | u8::from(c < 0x20)) != 0,
        }
    }

    /// The first `"` or `\` of `b` (the line) at or after `from`.
    #[inline(always)]
    pub(super) fn next(&self, b: &[u8], from: usize) -> Option<usize> {
        let mut word = from / 64;
        if from < self.covered {
            let mut bits = self.quotes[word] & (u64::MAX << (from % 64));
            loop {
                if bits != 0 {
                    return Some(word * 64 + bits.trailing_zeros() as usize);
                }
                word += 1;
                if word * 64 >= self.covered {
                    break;
                }
                bits = self.quotes[word];
            }
        }
        let from = from.max(self.covered);
        super::quote_or_backslash(b.get(from..)?).map(|at| from + at)
    }
}

/// For 64 bytes: which are `"` or `\`, and which are below 0x20.
fn masks(block: &[u8; 64]) -> (u64, u64) {
    let (mut quotes, mut controls) = (0u64, 0u64);
    for (half, bytes) in block.chunks_exact(32).enumerate() {
        let v = i8x32::new(std::array::from_fn(|i| bytes[i] as i8));
        let q = v.cmp_eq(i8x32::splat(b'"' as i8)) | v.cmp_eq(i8x32::splat(b'\\' as i8));
        // Signed: bytes from 0x80 are negative, and not control characters.
        let c = v.cmp_lt(i8x32::splat(0x20)) & !v.cmp_lt(i8x32::splat(0));
        quotes |= u64::from(q.move_mask() as u32) << (32 * half);
        controls |= u64::from(c.move_mask() as u32) << (32 * half);
    }
    (quotes, controls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_quote_and_backslash_across_words_and_past_the_covered_part() {
        let mut line = vec![b'a'; 3000];
        let marks = [0, 5, 63, 64, 130, 1000, 2047, 2048, 2500, 2999];
        for (i, &at) in marks.iter().enumerate() {
            line[at] = if i % 2 == 0 { b'"' } else { b'\\' };
        }
        let map = Bitmap::new(&line);
        assert!(!map.controls);
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(at) = map.next(&line, from) {
            found.push(at);
            from = at + 1;
        }
        assert_eq!(found, marks);
        assert_eq!(map.next(&line, 3000), None);
    }

    #[test]
    fn control_characters_are_noticed_wherever_they_are_and_high_bytes_are_not_them() {
        for at in [0, 70, 2100] {
            let mut line = "é€".repeat(600).into_bytes();
            line[at] = b'\t';
            assert!(Bitmap::new(&line).controls, "a tab at {at}");
        }
        let short = "x\"é".as_bytes();
        let map = Bitmap::new(short);
        assert!(!map.controls);
        assert_eq!((map.next(short, 0), map.next(short, 2)), (Some(1), None));
    }
}
