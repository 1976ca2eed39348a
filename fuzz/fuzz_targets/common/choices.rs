//! The input of a structured fuzz target read as a stream of choices (shared by the `network`
//! and `adapt` targets, each of which adds its own kinds of choice).

/// The input as a stream of choices; zeros once it runs out.
pub struct Choices<'a>(pub &'a [u8]);

impl Choices<'_> {
    /// The next byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next byte's lowest bit.
    pub fn bit(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// The next four bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}
