//! Tokenisation of mission text into word ids for the policy's instruction encoder.
//!
//! Invariants:
//! - The vocabulary is fixed and ordered ([`WORDS`]), so host, GPU and device agree on ids
//!   without shipping a learned dictionary; id 0 is padding, id 1 is an unknown word.
//! - Tokenisation lowercases ASCII, splits on whitespace and treats `,` as its own word.
//! - Output has a fixed capacity [`MAX_TOKENS`]; longer missions are an error, never truncated
//!   silently.

use crate::error::Error;

/// Padding id (never produced for a word).
pub const PAD: u16 = 0;
/// Id of any word outside [`WORDS`].
pub const UNK: u16 = 1;
/// Most tokens a mission may have.
pub const MAX_TOKENS: usize = 48;

/// The vocabulary; the word at index `i` has id `i + 2`. Covers the BabyAI grammar and the
/// fixed MiniGrid missions of every registered level.
pub const WORDS: [&str; 55] = [
    // BabyAI grammar
    "go", "to", "pick", "up", "open", "put", "next", "the", "a", "red", "green", "blue", "purple",
    "yellow", "grey", "door", "key", "ball", "box", "object", "in", "front", "of", "you", "behind",
    "on", "your", "left", "right", "and", "then", ",", "after",
    // MiniGrid fixed missions
    "get", "goal", "square", "use", "reach", "avoid", "lava", "traverse", "rooms", "unlock",
    "corridor", "find", "wall", "floor", "is", "at", "end", "this", "room", "other", "that", "it",
];

/// Size of the id space (padding, unknown, then [`WORDS`]).
pub const VOCAB_SIZE: usize = WORDS.len() + 2;

/// The id of `word` (already lowercase), [`UNK`] if it is not in the vocabulary.
pub fn word_id(word: &str) -> u16 {
    WORDS
        .iter()
        .position(|w| w.eq_ignore_ascii_case(word))
        .map(|i| i as u16 + 2)
        .unwrap_or(UNK)
}

/// Tokenise `text` into `out`, returning the number of tokens; the rest of `out` is set to
/// [`PAD`]. Errors when the mission has more tokens than `out` holds.
pub fn tokenize(text: &str, out: &mut [u16]) -> Result<usize, Error> {
    let cap = out.len();
    let mut n = 0usize;
    let mut push = |id: u16, n: &mut usize| -> Result<(), Error> {
        let slot = out.get_mut(*n).ok_or(Error::BufferTooSmall {
            needed: *n + 1,
            got: cap,
        })?;
        *slot = id;
        *n += 1;
        Ok(())
    };
    for raw in text.split_ascii_whitespace() {
        let (word, comma) = match raw.strip_suffix(',') {
            Some(w) => (w, true),
            None => (raw, false),
        };
        if !word.is_empty() {
            push(word_id(word), &mut n)?;
        }
        if comma {
            push(word_id(","), &mut n)?;
        }
    }
    for slot in out.iter_mut().skip(n) {
        *slot = PAD;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_unique() {
        assert_eq!(word_id("go"), 2);
        assert_eq!(word_id("GO"), 2);
        assert_eq!(word_id("dragon"), UNK);
        for (i, a) in WORDS.iter().enumerate() {
            for b in &WORDS[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn tokenizes_with_commas_and_padding() {
        let mut out = [9u16; 12];
        let n = tokenize("go to the red ball, then open a door", &mut out).unwrap();
        assert_eq!(n, 10);
        assert_eq!(out[5], word_id(","));
        assert_eq!(out[6], word_id("then"));
        assert_eq!(&out[10..], &[PAD, PAD]);
        let mut tiny = [0u16; 3];
        assert!(tokenize("go to the red ball", &mut tiny).is_err());
    }
}
