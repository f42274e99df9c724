//! What the router does after an attempt whose outcome is unknown, against a scripted
//! node that answers the first request `Ambiguous` and every later one with success.
//!
//! Regression for a Jepsen finding: a put, ambiguous across a kill -9 of the leader, was
//! sent again by the router; its first copy had committed, its second landed after two
//! later writes to the key and brought back an overwritten value.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_raftstore::keyspace::{initial_ranges, user_key};
use flotilla_raftstore::{
    callback, Command, Error as StoreError, Request, Response, ResponseReceiver, WriteOp,
};
use flotilla_router::{Error, NodeClient, RetryPolicy, Router};

/// Answers the first request `Ambiguous`, later ones as the command asks; counts them.
#[derive(Clone, Default)]
struct FirstAmbiguous {
    sent: Arc<AtomicUsize>,
}

impl NodeClient for FirstAmbiguous {
    fn send(&self, _node_id: u64, req: Request) -> ResponseReceiver {
        let (cb, rx) = callback();
        let answer = if self.sent.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(StoreError::Ambiguous {
                range_id: req.range_id,
                reason: "node 3 stopped before answering".into(),
            })
        } else {
            Ok(match req.command {
                Command::Get { .. } => Response::Value(Some(b"v".to_vec())),
                Command::CompareAndSwap { .. } => Response::Swapped {
                    succeeded: true,
                    previous: None,
                },
                _ => Response::Done,
            })
        };
        let _ = cb.send(answer);
        rx
    }
}

fn router() -> (Router<FirstAmbiguous>, Arc<AtomicUsize>) {
    let ranges = initial_ranges(1, 3);
    let client = FirstAmbiguous::default();
    let sent = client.sent.clone();
    let policy = RetryPolicy {
        initial_backoff: Duration::from_millis(1),
        ..RetryPolicy::default()
    };
    let router = Router::new(client, ranges[0].clone(), policy);
    router.learn_range(ranges[1].clone());
    (router, sent)
}

#[tokio::test]
async fn writes_report_an_ambiguous_attempt_instead_of_repeating_it() {
    let key = user_key(b"k");
    let writes = [
        Command::Put {
            key: key.clone(),
            value: b"v".to_vec(),
        },
        Command::Delete { key: key.clone() },
        Command::Batch {
            ops: vec![WriteOp::put(key.clone(), "v")],
        },
        Command::CompareAndSwap {
            key: key.clone(),
            expected: None,
            new: Some(b"v".to_vec()),
        },
    ];
    for command in writes {
        let (router, sent) = router();
        let err = router.execute(&key, command.clone()).await.unwrap_err();
        assert!(matches!(err, Error::Ambiguous(_)), "{command:?}: {err}");
        assert_eq!(
            sent.load(Ordering::SeqCst),
            1,
            "{command:?} was sent again after an ambiguous attempt"
        );
    }
}

#[tokio::test]
async fn reads_are_retried_after_an_ambiguous_attempt() {
    let key = user_key(b"k");
    let (router, sent) = router();
    let (_, resp) = router
        .execute(&key, Command::Get { key: key.clone() })
        .await
        .unwrap();
    assert_eq!(resp, Response::Value(Some(b"v".to_vec())));
    assert_eq!(sent.load(Ordering::SeqCst), 2);
}
