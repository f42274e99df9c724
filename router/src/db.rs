//! [`Db`]: the embeddable key-value API over a [`Router`].
//!
//! Single-key operations go to the key's range. `batch` is atomic, and so must stay within
//! one range: a batch whose keys span ranges is refused with `InvalidRequest` (split it
//! per range; cross-range atomicity needs transactions, which Flotilla does not have).
//! `scan` walks the ranges in key order, continuing at each range's end, so it sees each
//! range at a different moment: every pair returned was current when its range was read,
//! but the scan as a whole is not one snapshot.

use flotilla_raftstore::{Command, Response, WriteOp};

use crate::error::{Error, Result};
use crate::router::{NodeClient, RangeSource, Router};

/// Pairs asked of one range per scan request.
const SCAN_CHUNK: usize = 1000;

/// The key-value API.
pub struct Db<C, S> {
    router: Router<C, S>,
}

fn unexpected(resp: Response) -> Error {
    Error::InvalidRequest(flotilla_raftstore::Error::InvalidRequest(format!("unexpected answer {resp:?}")))
}

impl<C: NodeClient, S: RangeSource> Db<C, S> {
    /// A handle over `router`.
    pub fn new(router: Router<C, S>) -> Self {
        Db { router }
    }

    /// The value of `key`, read linearizably.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.router.execute(key, Command::Get { key: key.to_vec() }).await? {
            (_, Response::Value(v)) => Ok(v),
            (_, other) => Err(unexpected(other)),
        }
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let cmd = Command::Put { key: key.to_vec(), value: value.to_vec() };
        self.router.execute(key, cmd).await.map(|_| ())
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        self.router.execute(key, Command::Delete { key: key.to_vec() }).await.map(|_| ())
    }

    /// Sets `key` to `new` (deletes it for `None`) if it holds `expected` (is absent for
    /// `None`). Returns whether it swapped and the value the key held.
    pub async fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(bool, Option<Vec<u8>>)> {
        let cmd = Command::CompareAndSwap {
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.map(<[u8]>::to_vec),
        };
        match self.router.execute(key, cmd).await? {
            (_, Response::Swapped { succeeded, previous }) => Ok((succeeded, previous)),
            (_, other) => Err(unexpected(other)),
        }
    }

    /// Applies `ops` atomically. All keys must lie in one range.
    pub async fn batch(&self, ops: Vec<WriteOp>) -> Result<()> {
        let Some(first) = ops.first().map(|op| op.key.clone()) else {
            return Err(Error::InvalidRequest(flotilla_raftstore::Error::InvalidRequest(
                "a batch needs at least one write".into(),
            )));
        };
        self.router.execute(&first, Command::Batch { ops }).await.map(|_| ())
    }

    /// Up to `limit` pairs with keys in `[start, end)` (empty `end`: no bound), in key
    /// order, across ranges.
    pub async fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut cursor = start.to_vec();
        if cursor.is_empty() {
            cursor.push(0);
        }
        while out.len() < limit {
            let want = (limit - out.len()).min(SCAN_CHUNK);
            let cmd = Command::Scan { start: cursor.clone(), end: end.to_vec(), limit: want };
            let (desc, resp) = self.router.execute(&cursor, cmd).await?;
            let Response::Pairs(pairs) = resp else { return Err(unexpected(resp)) };
            let full = pairs.len() == want;
            let last_key = pairs.last().map(|(k, _)| k.clone());
            out.extend(pairs);
            cursor = match (full, last_key) {
                // The range may have more: continue right after the last key, unless that
                // is already the end of the scan.
                (true, Some(mut k)) => {
                    k.push(0);
                    if !end.is_empty() && k.as_slice() >= end {
                        break;
                    }
                    k
                }
                // The range is done: continue at its end, unless that is past ours.
                _ if desc.end.is_empty() => break,
                _ if !end.is_empty() && desc.end.as_slice() >= end => break,
                _ => desc.end.clone(),
            };
        }
        Ok(out)
    }
}
