//! [`Db`]: the embeddable key-value API over a [`Router`].
//!
//! User keys are stored under the user prefix of the key space (`keyspace::user_key`), so
//! they can never collide with the meta range; callers never see the prefix. Single-key
//! operations go to the key's range. `batch` is atomic, and so must stay within
//! one range: a batch whose keys span ranges is refused with `InvalidRequest` (split it
//! per range; cross-range atomicity needs transactions, which Flotilla does not have).
//! `scan` walks the ranges in key order, continuing at each range's end, in pages of
//! bounded size (`scan_page` hands one page and its resume key to the caller), so it sees each
//! range at a different moment: every pair returned was current when its range was read,
//! but the scan as a whole is not one snapshot.

use flotilla_raftstore::keyspace::{decode_user_key, user_end, user_key};
use flotilla_raftstore::{Command, Error as StoreError, RangeDescriptor, Response, WriteOp};

use crate::error::{Error, Result};
use crate::router::{NodeClient, Router};

/// Pairs asked of one range per scan request.
const SCAN_CHUNK: usize = 1000;

/// The byte budget of a scan page when the caller names none.
pub const DEFAULT_SCAN_BYTES: usize = 4 << 20;

/// One page of a scan: pairs in key order, and where the rest begins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The user key to scan from (with the same end) for the rest; `None`: the scan
    /// reached its end.
    pub resume_key: Option<Vec<u8>>,
}

/// The key-value API.
pub struct Db<C> {
    router: Router<C>,
}

fn unexpected(resp: Response) -> Error {
    Error::InvalidRequest(StoreError::InvalidRequest(format!(
        "unexpected answer {resp:?}"
    )))
}

/// The stored form of a user key; empty keys are refused here, where the caller can still
/// see that the key is empty (stored, it has the prefix).
fn stored(key: &[u8]) -> Result<Vec<u8>> {
    if key.is_empty() {
        return Err(Error::InvalidRequest(StoreError::EmptyKey));
    }
    Ok(user_key(key))
}

/// Speaks of user keys in errors: stored keys and their limit carry the one-byte prefix.
fn user_error(e: Error) -> Error {
    match e {
        Error::InvalidRequest(StoreError::KeyTooLarge { size, limit }) => {
            Error::InvalidRequest(StoreError::KeyTooLarge {
                size: size.saturating_sub(1),
                limit: limit.saturating_sub(1),
            })
        }
        other => other,
    }
}

impl<C: NodeClient> Db<C> {
    /// A handle over `router`.
    pub fn new(router: Router<C>) -> Self {
        Db { router }
    }

    /// The router underneath (for stored keys: the meta range's records).
    pub fn router(&self) -> &Router<C> {
        &self.router
    }

    async fn run(&self, key: &[u8], command: Command) -> Result<(RangeDescriptor, Response)> {
        self.router.execute(key, command).await.map_err(user_error)
    }

    /// Changes the replicas of the range holding user key `key`: every node of `add`
    /// ends up holding a voter, no node of `remove` holds any replica. Returns the
    /// range's descriptor after the change. Safe to call again after an error of unknown
    /// outcome: the repeat continues whatever the first call left half-done.
    pub async fn change_replicas(
        &self,
        key: &[u8],
        add: Vec<u64>,
        remove: Vec<u64>,
    ) -> Result<RangeDescriptor> {
        self.router
            .change_replicas(&stored(key)?, add, remove)
            .await
    }

    /// [`Db::change_replicas`] for the range `desc` names (any range, the meta range too).
    pub async fn change_range_replicas(
        &self,
        desc: &RangeDescriptor,
        add: Vec<u64>,
        remove: Vec<u64>,
    ) -> Result<RangeDescriptor> {
        self.router.learn_range(desc.clone());
        self.router.change_replicas(&desc.start, add, remove).await
    }

    /// The value of `key`, read linearizably.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = stored(key)?;
        match self.run(&key, Command::Get { key: key.clone() }).await? {
            (_, Response::Value(v)) => Ok(v),
            (_, other) => Err(unexpected(other)),
        }
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let key = stored(key)?;
        let cmd = Command::Put {
            key: key.clone(),
            value: value.to_vec(),
        };
        self.run(&key, cmd).await.map(|_| ())
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        let key = stored(key)?;
        self.run(&key, Command::Delete { key: key.clone() })
            .await
            .map(|_| ())
    }

    /// Splits the range holding `key` so that a range starts at `key` (an admin
    /// operation; ranges also split by themselves as they grow). Returns the ranges on
    /// either side, with their spans in stored form. Splitting where a range already
    /// starts succeeds without change.
    pub async fn split(&self, key: &[u8]) -> Result<(RangeDescriptor, RangeDescriptor)> {
        let key = stored(key)?;
        match self
            .run(
                &key,
                Command::Split {
                    split_key: key.clone(),
                },
            )
            .await?
        {
            (_, Response::Split { left, right }) => {
                self.router.learn_range(left.clone());
                self.router.learn_range(right.clone());
                Ok((left, right))
            }
            (_, other) => Err(unexpected(other)),
        }
    }

    /// Sets `key` to `new` (deletes it for `None`) if it holds `expected` (is absent for
    /// `None`). Returns whether it swapped and the value the key held.
    pub async fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(bool, Option<Vec<u8>>)> {
        let key = stored(key)?;
        let cmd = Command::CompareAndSwap {
            key: key.clone(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.map(<[u8]>::to_vec),
        };
        match self.run(&key, cmd).await? {
            (
                _,
                Response::Swapped {
                    succeeded,
                    previous,
                },
            ) => Ok((succeeded, previous)),
            (_, other) => Err(unexpected(other)),
        }
    }

    /// Applies `ops` atomically. All keys must lie in one range.
    pub async fn batch(&self, ops: Vec<WriteOp>) -> Result<()> {
        let Some(first) = ops.first().map(|op| op.key.clone()) else {
            return Err(Error::InvalidRequest(StoreError::InvalidRequest(
                "a batch needs at least one write".into(),
            )));
        };
        let first = stored(&first)?;
        let ops = ops
            .into_iter()
            .map(|op| {
                Ok(WriteOp {
                    key: stored(&op.key)?,
                    ..op
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.run(&first, Command::Batch { ops }).await.map(|_| ())
    }

    /// Up to `limit` pairs with keys in `[start, end)` (empty `end`: no bound), in key
    /// order, across ranges (pages of [`DEFAULT_SCAN_BYTES`] each, so memory is bounded by
    /// what the caller asked for).
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut from = start.to_vec();
        while out.len() < limit {
            let page = self.scan_page(&from, end, limit - out.len(), 0).await?;
            out.extend(page.pairs);
            match page.resume_key {
                Some(k) => from = k,
                None => break,
            }
        }
        Ok(out)
    }

    /// One page of a scan of `[start, end)`: pairs in key order, across ranges, until
    /// `limit` pairs (0: no count limit) or about `max_bytes` of keys and values (0:
    /// [`DEFAULT_SCAN_BYTES`]; a page holds at least one pair when any is left), and the
    /// key to continue from. Reading a span to its end takes pages of bounded size.
    pub async fn scan_page(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        max_bytes: usize,
    ) -> Result<ScanPage> {
        let limit = if limit == 0 { usize::MAX } else { limit };
        let budget = if max_bytes == 0 {
            DEFAULT_SCAN_BYTES
        } else {
            max_bytes
        };
        let (mut page, mut bytes) = (ScanPage::default(), 0usize);
        let mut cursor = user_key(start);
        let end = user_end(end);
        loop {
            if page.pairs.len() >= limit || bytes >= budget {
                page.resume_key = decode_user_key(&cursor).map(<[u8]>::to_vec);
                return Ok(page);
            }
            let want = (limit - page.pairs.len()).min(SCAN_CHUNK);
            let cmd = Command::Scan {
                start: cursor.clone(),
                end: end.clone(),
                limit: want,
                max_bytes: budget - bytes,
            };
            let (desc, resp) = self.run(&cursor, cmd).await?;
            let Response::Pairs { pairs, more } = resp else {
                return Err(unexpected(resp));
            };
            let last_key = pairs.last().map(|(k, _)| k.clone());
            for (k, v) in pairs {
                bytes += k.len() + v.len();
                if let Some(user) = decode_user_key(&k) {
                    page.pairs.push((user.to_vec(), v));
                }
            }
            cursor = match (more, last_key) {
                // The range may have more: continue right after the last key, unless that
                // is already the end of the scan.
                (true, Some(mut k)) => {
                    k.push(0);
                    if !end.is_empty() && k >= end {
                        return Ok(page);
                    }
                    k
                }
                // The range is done: continue at its end, unless that is past ours.
                _ if desc.end.is_empty() => return Ok(page),
                _ if !end.is_empty() && desc.end >= end => return Ok(page),
                _ => desc.end.clone(),
            };
        }
    }
}
