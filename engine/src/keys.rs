//! Key encodings for the `raft` and `meta` column families.
//!
//! All integers are big-endian so that byte order equals numeric order: a range's log
//! entries sort by index, and all records of one range are adjacent. User keys in the
//! `data` column family are stored as they are and need no encoding.

/// Meta key prefix: a range's Raft hard state, as data directories before stop 28 kept it
/// (read once at load, then replaced by the replica state).
pub const HARD_STATE_PREFIX: u8 = b'h';
/// Meta key prefix: a range's apply state, as data directories before stop 28 kept it.
pub const APPLY_STATE_PREFIX: u8 = b'a';
/// Meta key prefix: a range's replica state — its Raft state and its apply state in one
/// record, rewritten by every round that changes either.
pub const REPLICA_STATE_PREFIX: u8 = b'r';
/// Meta key prefix: a range's descriptor as this replica knows it.
pub const DESCRIPTOR_PREFIX: u8 = b'd';
/// Meta key prefix: the tombstone of a replica this node destroyed (`Tombstone`).
pub const TOMBSTONE_PREFIX: u8 = b't';
/// Meta key prefix: a snapshot whose files are being ingested for a range
/// (`PendingIngest`); present only between the synced write that installs a snapshot's
/// state and the ingestion of its files.
pub const PENDING_INGEST_PREFIX: u8 = b's';
/// Meta key: this store's identity (cluster id, node id).
pub const STORE_IDENT_KEY: &[u8] = b"\x01store_ident";

/// The key of log entry `index` of range `range_id`.
pub fn raft_log_key(range_id: u64, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&range_id.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Decodes a key made by [`raft_log_key`]; `None` for a key of another shape.
pub fn decode_raft_log_key(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != 16 {
        return None;
    }
    let range_id = u64::from_be_bytes(key[..8].try_into().ok()?);
    let index = u64::from_be_bytes(key[8..].try_into().ok()?);
    Some((range_id, index))
}

fn meta_key(prefix: u8, range_id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&range_id.to_be_bytes());
    k
}

/// The meta key of a range's hard state.
pub fn hard_state_key(range_id: u64) -> [u8; 9] {
    meta_key(HARD_STATE_PREFIX, range_id)
}

/// The meta key of a range's replica state (Raft state and apply state).
pub fn replica_state_key(range_id: u64) -> [u8; 9] {
    meta_key(REPLICA_STATE_PREFIX, range_id)
}

/// The meta key of a range's apply state.
pub fn apply_state_key(range_id: u64) -> [u8; 9] {
    meta_key(APPLY_STATE_PREFIX, range_id)
}

/// The meta key of a range's descriptor.
pub fn descriptor_key(range_id: u64) -> [u8; 9] {
    meta_key(DESCRIPTOR_PREFIX, range_id)
}

/// The meta key of a destroyed replica's tombstone.
pub fn tombstone_key(range_id: u64) -> [u8; 9] {
    meta_key(TOMBSTONE_PREFIX, range_id)
}

/// The meta key of a range's pending snapshot ingestion.
pub fn pending_ingest_key(range_id: u64) -> [u8; 9] {
    meta_key(PENDING_INGEST_PREFIX, range_id)
}

/// The span `[start, end)` of all pending-ingestion keys.
pub fn pending_ingest_span() -> ([u8; 1], [u8; 1]) {
    ([PENDING_INGEST_PREFIX], [PENDING_INGEST_PREFIX + 1])
}

/// The span `[start, end)` of all tombstone keys.
pub fn tombstone_span() -> ([u8; 1], [u8; 1]) {
    ([TOMBSTONE_PREFIX], [TOMBSTONE_PREFIX + 1])
}

/// The span `[start, end)` of all descriptor keys, for recovery.
pub fn descriptor_span() -> ([u8; 1], [u8; 1]) {
    ([DESCRIPTOR_PREFIX], [DESCRIPTOR_PREFIX + 1])
}

/// Decodes the range id from a key made by [`descriptor_key`].
pub fn decode_descriptor_key(key: &[u8]) -> Option<u64> {
    if key.len() != 9 || key[0] != DESCRIPTOR_PREFIX {
        return None;
    }
    Some(u64::from_be_bytes(key[1..].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_range_then_index() {
        let mut keys = [
            raft_log_key(2, 1),
            raft_log_key(1, 256),
            raft_log_key(1, 2),
            raft_log_key(1, u64::MAX),
        ];
        keys.sort();
        let decoded: Vec<_> = keys
            .iter()
            .map(|k| decode_raft_log_key(k).unwrap())
            .collect();
        assert_eq!(decoded, vec![(1, 2), (1, 256), (1, u64::MAX), (2, 1)]);
    }

    #[test]
    fn descriptor_keys_round_trip_and_stay_in_span() {
        let (lo, hi) = descriptor_span();
        for id in [0, 1, 77, u64::MAX] {
            let k = descriptor_key(id);
            assert_eq!(decode_descriptor_key(&k), Some(id));
            assert!(k.as_slice() >= lo.as_slice() && k.as_slice() < hi.as_slice());
        }
        assert_eq!(decode_descriptor_key(&hard_state_key(3)), None);
    }
}
