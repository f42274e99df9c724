//! Publishing meta records: the store reports its ranges' new shapes (after splits) and
//! new leaders; [`publish_meta`] writes them into the meta range with
//! `Command::UpdateMeta`, whose apply keeps whichever record is fresher (newer epoch, then
//! later term), so publishers on different nodes never need to coordinate and a late,
//! stale record never overwrites a newer one.
//!
//! Records are coalesced per range (the freshest wins) and written in chunks. A chunk that
//! fails is kept and retried after a pause: meta records are hints, and a router that
//! finds a stale one is corrected by the `EpochNotMatch` it gets from the range itself.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_raftstore::keyspace::meta_key;
use flotilla_raftstore::{Command, MetaEntry};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::router::{NodeClient, Router};

/// Records per `UpdateMeta` command (about 100 bytes each). Large, so that the records of
/// one split nearly always land together.
const CHUNK: usize = 4096;

/// Publishes every batch of records arriving on `updates` until the channel closes.
pub async fn publish_meta<C: NodeClient>(
    router: &Router<C>,
    mut updates: UnboundedReceiver<Vec<MetaEntry>>,
) {
    let mut pending: BTreeMap<u64, MetaEntry> = BTreeMap::new();
    loop {
        if pending.is_empty() {
            match updates.recv().await {
                Some(batch) => merge(&mut pending, batch),
                None => return,
            }
        }
        while let Ok(batch) = updates.try_recv() {
            merge(&mut pending, batch);
        }
        let chunk: Vec<MetaEntry> = pending.values().take(CHUNK).cloned().collect();
        let Some(first) = chunk
            .first()
            .and_then(|e| e.descriptor.as_ref())
            .map(|d| meta_key(&d.end))
        else {
            continue;
        };
        match router
            .execute(
                &first,
                Command::UpdateMeta {
                    entries: chunk.clone(),
                },
            )
            .await
        {
            Ok(_) => {
                for e in &chunk {
                    let id = e
                        .descriptor
                        .as_ref()
                        .map(|d| d.range_id)
                        .unwrap_or_default();
                    if pending.get(&id) == Some(e) {
                        pending.remove(&id);
                    }
                }
            }
            Err(e) => {
                if updates.is_closed() {
                    return; // the nodes are gone
                }
                tracing::warn!(error = %e, records = chunk.len(), "meta update failed; will retry");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Adds `batch` to `pending`, keeping the freshest record per range.
fn merge(pending: &mut BTreeMap<u64, MetaEntry>, batch: Vec<MetaEntry>) {
    for e in batch {
        let Some(id) = e.descriptor.as_ref().map(|d| d.range_id) else {
            continue;
        };
        if pending
            .get(&id)
            .is_none_or(|old| old.freshness() < e.freshness())
        {
            pending.insert(id, e);
        }
    }
}
