//! Conversions between the store's Rust types and their wire form: range requests and
//! answers (a gateway's router sends them to other nodes), store errors with their
//! routing hints, and Raft envelopes.
//!
//! Every decode of bytes from the network returns an error instead of panicking: a
//! malformed frame is refused, never trusted.

use flotilla_raftstore::{Command, Error as StoreError, RaftEnvelope, Request, Response};
use protobuf::Message as _;

use crate::proto::{self, range_request, range_response, store_error::Kind};

/// The wire form of a range request.
pub fn request_to_proto(req: Request) -> proto::RangeRequest {
    use range_request::Command as C;
    let command = match req.command {
        Command::Get { key } => C::Get(proto::GetRequest { key }),
        Command::Scan {
            start,
            end,
            limit,
            max_bytes,
        } => C::Scan(proto::ScanRequest {
            start,
            end,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            max_bytes: max_bytes as u64,
        }),
        Command::Put { key, value } => C::Put(proto::PutRequest { key, value }),
        Command::Delete { key } => C::Delete(proto::DeleteRequest { key }),
        Command::Batch { ops } => C::Batch(proto::BatchRequest { ops }),
        Command::CompareAndSwap { key, expected, new } => {
            C::CompareAndSwap(proto::CompareAndSwapRequest {
                key,
                expected,
                new_value: new,
            })
        }
        Command::Split { split_key } => C::SplitKey(split_key),
        Command::UpdateMeta { entries } => C::UpdateMeta(proto::MetaUpdate { entries }),
        Command::ChangeReplicas { add, remove } => {
            C::ChangeReplicas(proto::ChangeReplicasRequest {
                range_id: req.range_id,
                add,
                remove,
            })
        }
        Command::PreferLeader { node_id } => C::PreferLeader(node_id),
    };
    proto::RangeRequest {
        range_id: req.range_id,
        epoch: Some(req.epoch),
        command: Some(command),
    }
}

/// The first key after `key`: where a scan that stopped at `key` resumes.
pub fn resume_after(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    k
}

/// A range request from the wire; `None` when it names no command.
pub fn request_from_proto(req: proto::RangeRequest) -> Option<Request> {
    use range_request::Command as C;
    let command = match req.command? {
        C::Get(g) => Command::Get { key: g.key },
        C::Scan(s) => Command::Scan {
            start: s.start,
            end: s.end,
            limit: s.limit as usize,
            max_bytes: usize::try_from(s.max_bytes).unwrap_or(usize::MAX),
        },
        C::Put(p) => Command::Put {
            key: p.key,
            value: p.value,
        },
        C::Delete(d) => Command::Delete { key: d.key },
        C::Batch(b) => Command::Batch { ops: b.ops },
        C::CompareAndSwap(c) => Command::CompareAndSwap {
            key: c.key,
            expected: c.expected,
            new: c.new_value,
        },
        C::SplitKey(split_key) => Command::Split { split_key },
        C::UpdateMeta(m) => Command::UpdateMeta { entries: m.entries },
        C::ChangeReplicas(c) => Command::ChangeReplicas {
            add: c.add,
            remove: c.remove,
        },
        C::PreferLeader(node_id) => Command::PreferLeader { node_id },
    };
    Some(Request {
        range_id: req.range_id,
        epoch: req.epoch.unwrap_or_default(),
        command,
    })
}

/// The wire form of a store's answer.
pub fn response_to_proto(answer: Result<Response, StoreError>) -> proto::RangeResponse {
    use range_response::Result as R;
    let result = match answer {
        Ok(Response::Value(v)) => R::Value(proto::GetResponse {
            found: v.is_some(),
            value: v.unwrap_or_default(),
        }),
        Ok(Response::Pairs { pairs, more }) => {
            let resume_key = if more {
                pairs.last().map(|(k, _)| resume_after(k))
            } else {
                None
            };
            let pairs = pairs
                .into_iter()
                .map(|(key, value)| proto::KvPair { key, value })
                .collect();
            R::Pairs(proto::ScanResponse { pairs, resume_key })
        }
        Ok(Response::Done) => R::Done(proto::Done {}),
        Ok(Response::Swapped {
            succeeded,
            previous,
        }) => R::Swapped(proto::CompareAndSwapResponse {
            succeeded,
            previous,
        }),
        Ok(Response::Split { left, right }) => R::Split(proto::SplitResponse {
            left: Some(left),
            right: Some(right),
        }),
        Ok(Response::Replicas(desc)) => R::Replicas(desc),
        Err(e) => R::Error(error_to_proto(&e)),
    };
    proto::RangeResponse {
        result: Some(result),
    }
}

/// A store's answer from the wire.
pub fn response_from_proto(
    resp: proto::RangeResponse,
    node_id: u64,
) -> Result<Response, StoreError> {
    use range_response::Result as R;
    let malformed = || StoreError::Ambiguous {
        range_id: 0,
        reason: format!("node {node_id} sent an empty answer"),
    };
    match resp.result.ok_or_else(malformed)? {
        R::Value(v) => Ok(Response::Value(v.found.then_some(v.value))),
        R::Pairs(p) => Ok(Response::Pairs {
            more: p.resume_key.is_some(),
            pairs: p.pairs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        }),
        R::Done(_) => Ok(Response::Done),
        R::Swapped(s) => Ok(Response::Swapped {
            succeeded: s.succeeded,
            previous: s.previous,
        }),
        R::Split(s) => Ok(Response::Split {
            left: s.left.unwrap_or_default(),
            right: s.right.unwrap_or_default(),
        }),
        R::Replicas(desc) => Ok(Response::Replicas(desc)),
        R::Error(e) => Err(error_from_proto(e)),
    }
}

/// The wire form of a store error: its kind, its message, and its hints.
pub fn error_to_proto(e: &StoreError) -> proto::StoreError {
    let mut out = proto::StoreError {
        message: e.to_string(),
        ..Default::default()
    };
    let kind = match e.clone() {
        StoreError::NotLeader { range_id, leader } => {
            (out.range_id, out.leader) = (range_id, leader);
            Kind::NotLeader
        }
        StoreError::RangeNotFound { range_id, node_id } => {
            (out.range_id, out.node_id) = (range_id, node_id);
            Kind::RangeNotFound
        }
        StoreError::EpochNotMatch {
            range_id,
            requested,
            current,
        } => {
            (out.range_id, out.requested, out.current) = (range_id, Some(requested), current);
            Kind::EpochNotMatch
        }
        StoreError::KeyNotInRange {
            key,
            range_id,
            start,
            end,
        } => {
            (out.key, out.range_id, out.start, out.end) = (key, range_id, start, end);
            Kind::KeyNotInRange
        }
        StoreError::StaleCommand { range_id } => {
            out.range_id = range_id;
            Kind::StaleCommand
        }
        StoreError::ProposalDropped { range_id, .. } => {
            out.range_id = range_id;
            Kind::ProposalDropped
        }
        StoreError::Timeout { range_id, ticks } => {
            (out.range_id, out.ticks) = (range_id, ticks);
            Kind::Timeout
        }
        StoreError::Ambiguous { range_id, .. } => {
            out.range_id = range_id;
            Kind::Ambiguous
        }
        StoreError::ConfChangeInProgress { range_id } => {
            out.range_id = range_id;
            Kind::ConfChangeInProgress
        }
        StoreError::InvalidMembership { range_id, .. } => {
            out.range_id = range_id;
            Kind::InvalidMembership
        }
        StoreError::EmptyKey => Kind::EmptyKey,
        StoreError::KeyTooLarge { size, limit } => {
            (out.size, out.limit) = (size as u64, limit as u64);
            Kind::KeyTooLarge
        }
        StoreError::ValueTooLarge { size, limit } => {
            (out.size, out.limit) = (size as u64, limit as u64);
            Kind::ValueTooLarge
        }
        StoreError::InvalidRequest(_) => Kind::InvalidRequest,
        // Never sent between nodes (the gateway makes it), but a node-level refusal all
        // the same: nothing ran.
        StoreError::StoreStopped { node_id } | StoreError::NodeUnreachable { node_id, .. } => {
            out.node_id = node_id;
            Kind::StoreStopped
        }
        StoreError::Engine(_)
        | StoreError::Snapshot(_)
        | StoreError::Corrupt { .. }
        | StoreError::VersionTooNew { .. }
        | StoreError::Raft(_) => Kind::Storage,
    };
    out.set_kind(kind);
    out
}

/// A store error from the wire. Kinds this build does not know become `Ambiguous`: the
/// caller cannot tell whether a write applied.
pub fn error_from_proto(e: proto::StoreError) -> StoreError {
    let range_id = e.range_id;
    match e.kind() {
        Kind::NotLeader => StoreError::NotLeader {
            range_id,
            leader: e.leader,
        },
        Kind::RangeNotFound => StoreError::RangeNotFound {
            range_id,
            node_id: e.node_id,
        },
        Kind::EpochNotMatch => StoreError::EpochNotMatch {
            range_id,
            requested: e.requested.unwrap_or_default(),
            current: e.current,
        },
        Kind::KeyNotInRange => StoreError::KeyNotInRange {
            key: e.key,
            range_id,
            start: e.start,
            end: e.end,
        },
        Kind::StaleCommand => StoreError::StaleCommand { range_id },
        Kind::ProposalDropped => StoreError::ProposalDropped {
            range_id,
            reason: e.message,
        },
        Kind::Timeout => StoreError::Timeout {
            range_id,
            ticks: e.ticks,
        },
        Kind::ConfChangeInProgress => StoreError::ConfChangeInProgress { range_id },
        Kind::InvalidMembership => StoreError::InvalidMembership {
            range_id,
            reason: strip_prefix(e.message, &format!("range {range_id}: ")),
        },
        Kind::EmptyKey => StoreError::EmptyKey,
        Kind::KeyTooLarge => StoreError::KeyTooLarge {
            size: e.size as usize,
            limit: e.limit as usize,
        },
        Kind::ValueTooLarge => StoreError::ValueTooLarge {
            size: e.size as usize,
            limit: e.limit as usize,
        },
        Kind::InvalidRequest => {
            StoreError::InvalidRequest(strip_prefix(e.message, "invalid request: "))
        }
        Kind::StoreStopped => StoreError::StoreStopped { node_id: e.node_id },
        Kind::Storage => StoreError::Raft(format!("remote storage failure: {}", e.message)),
        Kind::Ambiguous | Kind::Unknown => StoreError::Ambiguous {
            range_id,
            reason: e.message,
        },
    }
}

fn strip_prefix(s: String, prefix: &str) -> String {
    s.strip_prefix(prefix).map(str::to_string).unwrap_or(s)
}

/// The wire form of a Raft envelope.
pub fn envelope_to_proto(env: &RaftEnvelope) -> proto::RaftEnvelope {
    proto::RaftEnvelope {
        range_id: env.range_id,
        from: Some(env.from),
        to: Some(env.to),
        message: env.message.write_to_bytes().unwrap_or_default(),
    }
}

/// A Raft envelope from the wire, checked to come from `from_node` and to be addressed
/// to `to_node`.
pub fn envelope_from_proto(
    env: proto::RaftEnvelope,
    from_node: u64,
    to_node: u64,
) -> Result<RaftEnvelope, String> {
    let (Some(from), Some(to)) = (env.from, env.to) else {
        return Err(format!(
            "range {}: envelope without sender or receiver",
            env.range_id
        ));
    };
    if from.node_id != from_node || to.node_id != to_node {
        return Err(format!(
            "range {}: envelope from node {} to node {} arrived on a stream from node {from_node} to node {to_node}",
            env.range_id, from.node_id, to.node_id
        ));
    }
    let message = raft::prelude::Message::parse_from_bytes(&env.message)
        .map_err(|e| format!("range {}: undecodable Raft message: {e}", env.range_id))?;
    if !sent_between_nodes(message.get_msg_type()) {
        return Err(format!(
            "range {}: {:?} is local to a node, never sent",
            env.range_id,
            message.get_msg_type()
        ));
    }
    Ok(RaftEnvelope {
        range_id: env.range_id,
        from,
        to,
        message,
    })
}

/// True for the Raft message types one node sends another. The others (campaign, beat,
/// propose, unreachable, snapshot status, check quorum) are steps a node gives itself;
/// stepping them from the network would let a peer drive this node's replicas.
fn sent_between_nodes(t: raft::prelude::MessageType) -> bool {
    use raft::prelude::MessageType::*;
    matches!(
        t,
        MsgAppend
            | MsgAppendResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
            | MsgSnapshot
            | MsgHeartbeat
            | MsgHeartbeatResponse
            | MsgTransferLeader
            | MsgTimeoutNow
            | MsgReadIndex
            | MsgReadIndexResp
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_raftstore::{Epoch, RangeDescriptor, Replica, WriteOp};

    #[test]
    fn requests_survive_the_wire() {
        let epoch = Epoch {
            version: 3,
            conf_ver: 1,
        };
        let commands = vec![
            Command::Get { key: b"k".to_vec() },
            Command::Scan {
                start: b"a".to_vec(),
                end: Vec::new(),
                limit: 7,
                max_bytes: 4096,
            },
            Command::Put {
                key: b"k".to_vec(),
                value: Vec::new(),
            },
            Command::Delete { key: b"k".to_vec() },
            Command::Batch {
                ops: vec![WriteOp::put("a", "1"), WriteOp::delete("b")],
            },
            Command::CompareAndSwap {
                key: b"k".to_vec(),
                expected: None,
                new: Some(Vec::new()),
            },
            Command::Split {
                split_key: b"m".to_vec(),
            },
        ];
        for command in commands {
            let req = Request {
                range_id: 9,
                epoch,
                command,
            };
            assert_eq!(request_from_proto(request_to_proto(req.clone())), Some(req));
        }
    }

    #[test]
    fn errors_keep_their_hints() {
        let desc = RangeDescriptor {
            range_id: 4,
            start: b"a".to_vec(),
            ..Default::default()
        };
        let errors = vec![
            StoreError::NotLeader {
                range_id: 4,
                leader: Some(Replica::voter(2, 2)),
            },
            StoreError::NotLeader {
                range_id: 4,
                leader: None,
            },
            StoreError::epoch_not_match(
                &desc,
                Epoch {
                    version: 1,
                    conf_ver: 1,
                },
            ),
            StoreError::key_not_in_range(&desc, b"0"),
            StoreError::KeyTooLarge {
                size: 9000,
                limit: 8192,
            },
            StoreError::InvalidRequest("bad".into()),
            StoreError::StoreStopped { node_id: 3 },
            StoreError::Timeout {
                range_id: 4,
                ticks: 50,
            },
        ];
        for e in errors {
            assert_eq!(error_from_proto(error_to_proto(&e)), e);
        }
    }

    #[test]
    fn a_forged_envelope_is_refused() {
        let mut beat = raft::prelude::Message::default();
        beat.set_msg_type(raft::prelude::MessageType::MsgHeartbeat);
        let env = RaftEnvelope {
            range_id: 1,
            from: Replica::voter(2, 2),
            to: Replica::voter(1, 1),
            message: beat,
        };
        let wire = envelope_to_proto(&env);
        assert_eq!(envelope_from_proto(wire.clone(), 2, 1), Ok(env));
        assert!(
            envelope_from_proto(wire.clone(), 3, 1).is_err(),
            "sender must match the stream"
        );
        let garbage = proto::RaftEnvelope {
            message: vec![0xff; 9],
            ..wire.clone()
        };
        assert!(envelope_from_proto(garbage, 2, 1).is_err());
        let mut hup = raft::prelude::Message::default();
        hup.set_msg_type(raft::prelude::MessageType::MsgHup);
        let local = proto::RaftEnvelope {
            message: hup.write_to_bytes().unwrap(),
            ..wire
        };
        assert!(
            envelope_from_proto(local, 2, 1).is_err(),
            "a local-only step is refused"
        );
    }
}
