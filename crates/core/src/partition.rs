//! Which partition of a partitioned topic a message key goes to: `crc32(key) mod N`, where
//! `crc32` is the CRC-32 of zlib, PNG and Ethernet (IEEE 802.3, reflected, polynomial
//! `0xEDB88320`, initial value and final XOR `0xFFFFFFFF`) over the key's UTF-8 bytes. Every
//! language has it (`zlib.crc32` in Python, `crc32` in Go's `hash/crc32`, Java's
//! `java.util.zip.CRC32`), so a producer written in another language puts a key where a
//! Tributary producer would. Test vectors are in `docs/wire-format.md`.
//!
//! ```
//! use tributary_core::partition;
//!
//! assert_eq!(partition::crc32(b"123456789"), 0xCBF4_3926);
//! assert_eq!(partition::of_key("customer-42", 16), partition::crc32(b"customer-42") % 16);
//! ```

/// The most partitions a topic may have. Each is a stream with its own consumer-group
/// state and lease per group: past a thousand, the bookkeeping outweighs what more
/// parallelism could bring (see `docs/partitions.md`).
pub const MAX_PARTITIONS: u32 = 1024;

/// The partition of `key` in a topic of `partitions` partitions: `crc32(key) mod partitions`.
///
/// # Panics
/// When `partitions` is 0.
pub fn of_key(key: &str, partitions: u32) -> u32 {
    assert!(partitions > 0, "a partitioned topic has at least one partition");
    crc32(key.as_bytes()) % partitions
}

/// CRC-32 (IEEE 802.3, as zlib computes it) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The byte-at-a-time table of the reflected polynomial `0xEDB88320`.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of `docs/wire-format.md` ("Partition of a key"); checked against Python's
    /// `zlib.crc32`.
    #[test]
    fn keys_land_where_the_documented_vectors_say() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"a"), 0xE8B7_BE43);
        assert_eq!(crc32(b"customer-42"), 0x49FD_A815);
        assert_eq!(of_key("customer-42", 16), 5);
        assert_eq!(of_key("order-1", 16), 15);
        assert_eq!(crc32(b"order-1"), 0xE0B3_7FEF);
        assert_eq!((of_key("a", 16), of_key("a", 7)), (3, 4));
        assert_eq!(of_key("order-1", 7), 6);
        assert_eq!(of_key("customer-42", 7), 5);
        assert_eq!(of_key("clé", 16), 4);
        assert_eq!(crc32("clé".as_bytes()), 0x06C7_2A74);
        assert_eq!(of_key("clé", 7), 2);
    }

    #[test]
    fn keys_spread_evenly_over_partitions() {
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            counts[of_key(&format!("key-{i}"), 16) as usize] += 1;
        }
        for (p, n) in counts.iter().enumerate() {
            assert!((800..1200).contains(n), "partition {p} got {n} of 16,000 keys");
        }
    }
}
