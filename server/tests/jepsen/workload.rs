//! The clients: concurrent get / put / delete / compare-and-swap on a few register keys,
//! each client bound to one node, every operation recorded; and durability writers that
//! put unique keys in a separate key space and remember every acknowledged one.
//!
//! Every answer is classified by the protocol table (docs/protocol.md). An error the
//! table does not list — an unknown `flotilla-error` name, a name with the wrong gRPC
//! code, an error kind no fault here should cause — is a *finding*: recorded, and the
//! run fails on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_server::client::{not_delivered, Client};
use flotilla_server::proto::{CompareAndSwapRequest, DeleteRequest, GetRequest, PutRequest};
use flotilla_server::tls::dial::Dialer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::{Code, Status};

use super::history::{Entry, History, Op, Outcome, Ret};

/// How long one client call may take before its outcome is unknown.
pub const CALL_DEADLINE: Duration = Duration::from_secs(2);

/// The register key `k` (two spread bytes first, so keys fall in different ranges).
pub fn register_key(k: usize) -> Vec<u8> {
    let spread = (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes();
    let mut key = spread[..2].to_vec();
    key.extend_from_slice(format!("jepsen/reg/{k}").as_bytes());
    key
}

/// What the clients share: the history, the findings, the newest key written (for the
/// split nemesis) and the stop flag.
pub struct Shared {
    pub history: History,
    pub findings: Mutex<Vec<String>>,
    pub newest_key: Mutex<Option<usize>>,
    pub stop: AtomicBool,
}

/// The classification of an error answer.
enum Class {
    Fail(String),
    Unknown(String),
    Finding(String),
}

/// Classifies an error by the protocol table.
fn classify(s: &Status) -> Class {
    let name = s
        .metadata()
        .get("flotilla-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let what = format!(
        "{:?} {}: {}",
        s.code(),
        name.as_deref().unwrap_or("-"),
        flotilla_server::client::with_causes(s)
    );
    match (name.as_deref(), s.code()) {
        (Some("ambiguous"), Code::Unknown) => Class::Unknown(what),
        (Some("unavailable" | "not_initialized" | "stopping"), Code::Unavailable) => {
            Class::Fail(what)
        }
        (Some(_), _) => Class::Finding(format!(
            "an answer the protocol table does not list: {what}"
        )),
        // No server answer: a connect that failed, or a stream the node's HTTP/2
        // connection refused (a graceful shutdown's GOAWAY), never ran the call; anything
        // else (deadline, a connection broken mid-call) may have delivered it.
        (None, _) if not_delivered(s) => Class::Fail(what),
        (None, Code::DeadlineExceeded | Code::Unavailable | Code::Cancelled | Code::Unknown) => {
            Class::Unknown(what)
        }
        (None, _) => Class::Finding(format!("a transport error of an unexpected kind: {what}")),
    }
}

fn encode(v: u64) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn decode(b: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("a value no client wrote: {b:?}"))
}

fn decode_opt(b: Option<Vec<u8>>) -> Result<Option<u64>, String> {
    b.map(|b| decode(&b)).transpose()
}

/// Runs one operation against `client` (bound to one node) with a deadline.
async fn execute(client: &Client, key: &[u8], op: &Op) -> Result<Result<Ret, String>, Status> {
    let mut kv = client.kv_at(0);
    let key = key.to_vec();
    macro_rules! call {
        ($method:ident, $req:expr) => {{
            let mut req = tonic::Request::new($req);
            req.set_timeout(CALL_DEADLINE);
            match tokio::time::timeout(CALL_DEADLINE + Duration::from_secs(1), kv.$method(req))
                .await
            {
                Ok(r) => r.map(|r| r.into_inner()),
                Err(_) => Err(Status::deadline_exceeded(
                    "no answer before the client's deadline",
                )),
            }
        }};
    }
    Ok(match op {
        Op::Get => {
            let r = call!(get, GetRequest { key })?;
            decode_opt(r.found.then_some(r.value)).map(Ret::Value)
        }
        Op::Put(v) => call!(
            put,
            PutRequest {
                key,
                value: encode(*v)
            }
        )
        .map(|_| Ok(Ret::Done))?,
        Op::Delete => call!(delete, DeleteRequest { key }).map(|_| Ok(Ret::Done))?,
        Op::Cas { expected, new } => {
            let req = CompareAndSwapRequest {
                key,
                expected: expected.map(encode),
                new_value: Some(encode(*new)),
            };
            let r = call!(compare_and_swap, req)?;
            decode_opt(r.previous).map(|previous| Ret::Cas {
                succeeded: r.succeeded,
                previous,
            })
        }
    })
}

/// One register client: `id` picks its node (`endpoints[id % n]`) and its value space.
pub async fn register_client(
    id: u64,
    endpoints: Vec<String>,
    dialer: Dialer,
    keys: usize,
    seed: u64,
    shared: Arc<Shared>,
) {
    let node = id as usize % endpoints.len();
    let client = Client::with_dialer(&[endpoints[node].clone()], &dialer).expect("client");
    let mut rng = StdRng::seed_from_u64(seed ^ id.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut process = id << 20;
    let mut seq = 0u64;
    let mut last_seen: Vec<Option<u64>> = vec![None; keys];
    while !shared.stop.load(Ordering::Relaxed) {
        let key = rng.gen_range(0..keys);
        seq += 1;
        let value = (id << 32) | seq;
        let op = match rng.gen_range(0..10) {
            0..=3 => Op::Get,
            4..=6 => Op::Put(value),
            7 => Op::Delete,
            _ => Op::Cas {
                expected: last_seen[key],
                new: value,
            },
        };
        if op.is_write() {
            *shared.newest_key.lock().unwrap() = Some(key);
        }
        let invoke = shared.history.now();
        let answer = execute(&client, &register_key(key), &op).await;
        let complete = shared.history.now();
        let outcome = match answer {
            Ok(Ok(ret)) => {
                last_seen[key] = match &ret {
                    Ret::Value(v) => *v,
                    Ret::Cas {
                        succeeded: true, ..
                    } => match op {
                        Op::Cas { new, .. } => Some(new),
                        _ => None,
                    },
                    Ret::Cas { previous, .. } => *previous,
                    Ret::Done => match op {
                        Op::Put(v) => Some(v),
                        _ => None,
                    },
                };
                Outcome::Ok(ret)
            }
            Ok(Err(bad)) => {
                shared
                    .findings
                    .lock()
                    .unwrap()
                    .push(format!("client {id}: {bad}"));
                Outcome::Unknown(bad)
            }
            Err(status) => match classify(&status) {
                Class::Fail(why) => Outcome::Fail(why),
                Class::Unknown(why) => Outcome::Unknown(why),
                Class::Finding(why) => {
                    shared
                        .findings
                        .lock()
                        .unwrap()
                        .push(format!("client {id} {op:?}: {why}"));
                    Outcome::Unknown(why)
                }
            },
        };
        // A read that did not complete had no effect: it is a definite failure.
        let outcome = match (outcome, &op) {
            (Outcome::Unknown(why), Op::Get) => Outcome::Fail(why),
            (o, _) => o,
        };
        let unknown = matches!(outcome, Outcome::Unknown(_));
        if matches!(outcome, Outcome::Fail(_)) {
            // Pacing, not synchronisation: a client of a dead node should not spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shared.history.record(Entry {
            process,
            node: node as u64 + 1,
            key,
            op,
            invoke,
            complete,
            outcome,
        });
        if unknown {
            process += 1;
        }
    }
}

/// A durability writer: unique keys `dur/{id}/{seq}` through every node in turn; returns
/// the acknowledged pairs.
pub async fn durability_writer(
    id: u64,
    endpoints: Vec<String>,
    dialer: Dialer,
    stop: Arc<Shared>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let clients: Vec<Client> = endpoints
        .iter()
        .map(|e| Client::with_dialer(std::slice::from_ref(e), &dialer).expect("client"))
        .collect();
    let mut acked = Vec::new();
    let mut seq = 0u64;
    while !stop.stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = format!("jepsen/dur/{id}/{seq:08}").into_bytes();
        let value = format!("{id}-{seq}").into_bytes();
        let client = &clients[seq as usize % clients.len()];
        let mut kv = client.kv_at(0);
        let mut req = tonic::Request::new(PutRequest {
            key: key.clone(),
            value: value.clone(),
        });
        req.set_timeout(CALL_DEADLINE);
        match tokio::time::timeout(CALL_DEADLINE + Duration::from_secs(1), kv.put(req)).await {
            Ok(Ok(_)) => acked.push((key, value)),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    acked
}
