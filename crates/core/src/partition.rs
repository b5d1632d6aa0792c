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

/// Which member of a group consumes each partition: the owner's name for each of `partitions`
/// partitions, given the group's live members (any order; repeats count once). Every member
/// computes it from the same list, so they agree without talking.
///
/// Each partition goes to the member it ranks highest ([`rank`]), as far as balance allows:
/// every member gets `partitions / m` or one more. Pairs are taken best first, a pair skipped
/// when its partition has an owner or its member has its share. So a member that joins takes
/// about its share and little else moves, and a member that leaves frees only its own (unlike
/// dealing partitions out by position, where most would move). Empty when `members` is.
///
/// ```
/// use tributary_core::partition::owners;
///
/// let owned = owners(&["a", "b", "c"], 16);
/// assert_eq!(owned.len(), 16);
/// for m in ["a", "b", "c"] {
///     let n = owned.iter().filter(|o| **o == m).count();
///     assert!(n == 5 || n == 6);
/// }
/// ```
pub fn owners<'a>(members: &[&'a str], partitions: u32) -> Vec<&'a str> {
    let mut members = members.to_vec();
    members.sort_unstable();
    members.dedup();
    if members.is_empty() {
        return Vec::new();
    }
    let (n, m) = (partitions as usize, members.len());
    let (share, extra) = (n / m, n % m);
    let mut pairs: Vec<(u64, u32, usize)> =
        (0..partitions).flat_map(|p| members.iter().enumerate().map(move |(i, name)| (rank(name, p), p, i))).collect();
    // Best first; ties by partition, then member, so every member sorts alike.
    pairs.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut owner: Vec<Option<usize>> = vec![None; n];
    let mut load = vec![0usize; m];
    let mut with_extra = 0;
    for (_, p, i) in pairs {
        let p = p as usize;
        let cap = if with_extra < extra { share + 1 } else { share };
        if owner[p].is_some() || load[i] >= cap {
            continue;
        }
        owner[p] = Some(i);
        load[i] += 1;
        if load[i] == share + 1 {
            with_extra += 1;
        }
    }
    owner.into_iter().map(|o| members[o.expect("the shares add up to every partition")]).collect()
}

/// How much `member` wants `partition`, for [`owners`]: FNV-1a (64 bits) over the UTF-8 bytes
/// of `<member>#<partition>` (the partition in decimal), then MurmurHash3's 64-bit finalizer.
pub fn rank(member: &str, partition: u32) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in member.bytes().chain(std::iter::once(b'#')).chain(partition.to_string().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
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

    /// Every partition has one owner, shares differ by one at most, and a join or a leave
    /// moves little more than the joiner's or leaver's share (dealing by position moved most).
    #[test]
    fn owners_are_balanced_and_a_join_or_a_leave_moves_about_one_share() {
        assert!(owners(&[], 4).is_empty());
        assert_eq!(owners(&["a", "a"], 3), ["a", "a", "a"]);
        let (mut moved_join, mut moved_leave, mut trials) = (0, 0, 0);
        for seed in 0..200u32 {
            let names: Vec<String> = (0..5).map(|i| format!("host-{}-{i}", crc32(&seed.to_le_bytes()))).collect();
            let three: Vec<&str> = names[..3].iter().map(String::as_str).collect();
            let four: Vec<&str> = names[..4].iter().map(String::as_str).collect();
            for n in [1, 4, 16, 64] {
                let (before, after) = (owners(&three, n), owners(&four, n));
                assert_eq!(before.len(), n as usize);
                for set in [&three, &four] {
                    let owned = owners(set, n);
                    let shares: Vec<usize> = set.iter().map(|m| owned.iter().filter(|o| *o == m).count()).collect();
                    let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                    assert!(hi - lo <= 1, "{shares:?}");
                }
                let mut reversed = four.clone();
                reversed.reverse();
                assert_eq!(owners(&reversed, n), after, "the order members are listed in does not matter");
                if n == 16 {
                    trials += 1;
                    moved_join += before.iter().zip(&after).filter(|(b, a)| b != a).count();
                    moved_leave += after.iter().zip(&owners(&four[1..], n)).filter(|(b, a)| b != a).count();
                }
            }
        }
        let (join, leave) = (moved_join as f64 / trials as f64, moved_leave as f64 / trials as f64);
        eprintln!("16 partitions, 3 -> 4 members: {join:.2} move on average; 4 -> 3: {leave:.2}");
        // The least possible: 4 (the joiner's share) and 4 (the leaver's share).
        assert!(join < 6.0 && leave < 6.0, "join {join}, leave {leave}");
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
