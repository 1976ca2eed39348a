//! Reflected CRC-32 checksums: the model blob's (IEEE 802.3, [`crc32`]) and TensorBoard's
//! event records' (Castagnoli, [`crc32c`]) are the same routine with another polynomial.
//!
//! Bitwise, with no table: on the device the blob is checked once at start, and 1 KiB of
//! flash for a table matters more there than speed; on the host the records are a few
//! hundred bytes each.

/// The reflected CRC-32 of `bytes` with the reflected polynomial `poly` (initial value and
/// final xor all ones).
#[inline]
pub fn crc32_reflected(poly: u32, bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (poly & mask);
        }
    }
    !crc
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, as zlib and `crc32fast`): the model
/// blob's checksum.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32_reflected(0xEDB8_8320, bytes)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum of TensorBoard's event
/// records.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32_reflected(0x82F6_3B78, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_match_their_standard_check_values() {
        // The check values of "123456789": IEEE (zlib), and CRC-32C (RFC 3720, appendix B.4).
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32c(b""), 0);
    }
}
