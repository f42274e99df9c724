//! Routing hints: how a client learns to send each key straight to its range's leader
//! and skip the gateway's forwarding hop (TiKV's client keeps a region cache for the
//! same reason; issue 13 measured the hop as most of the server's CPU per request).
//!
//! **Server side.** A node that served a `Kv` call by forwarding it to the leader on
//! another node attaches, in the response's metadata, that leader's address and the
//! user-key span of its range ([`attach`]). Nothing is attached when the node led the
//! range itself, so a well-routed client pays nothing.
//!
//! **Client side.** [`Routes`] remembers those spans and, for a key inside one, hands out
//! the channel to its leader. A hint is only ever a hint: every node still checks and
//! forwards whatever it receives, so a stale span (the range split, its leader moved)
//! costs one hop and brings a fresh hint, never a wrong answer. A leader that cannot be
//! reached is forgotten ([`Routes::forget`]) and the client falls back to its endpoints.
//!
//! **Streams.** A `Kv.Commands` stream carries the same hint in each result rather than
//! in metadata ([`Hint`] on the server; a client learns it with [`Routes::learn_span`]).

use std::collections::{BTreeMap, HashMap};

use parking_lot::RwLock;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;

/// The leader's gRPC address (ASCII).
pub const LEADER_HEADER: &str = "flotilla-leader";
/// The span's first user key (binary).
pub const START_HEADER: &str = "flotilla-range-start-bin";
/// The span's end user key (binary; absent: the span is unbounded).
pub const END_HEADER: &str = "flotilla-range-end-bin";

/// One hint: keys in `[start, end)` (user keys; `end` `None`: unbounded) are led by the
/// node at `leader` (its gRPC address, as the node that forwarded reaches it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub leader: String,
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

/// Adds a hint to `md`: keys in `[start, end)` (`end` `None`: unbounded) are led at
/// `leader`. A value that cannot be a header (an address with odd bytes) adds nothing.
pub fn attach(md: &mut MetadataMap, leader: &str, start: &[u8], end: Option<&[u8]>) {
    let Ok(address) = leader.parse() else { return };
    md.insert(LEADER_HEADER, address);
    md.insert_bin(START_HEADER, MetadataValue::from_bytes(start));
    if let Some(end) = end {
        md.insert_bin(END_HEADER, MetadataValue::from_bytes(end));
    }
}

/// One learned span: where it ends (`None`: unbounded) and who leads it.
#[derive(Debug, Clone)]
struct Span {
    end: Option<Vec<u8>>,
    leader: String,
}

/// The spans a client has learned, and a channel per leader address.
#[derive(Default)]
pub struct Routes {
    spans: RwLock<BTreeMap<Vec<u8>, Span>>,
    channels: RwLock<HashMap<String, Channel>>,
    dialer: crate::tls::dial::Dialer,
}

impl Routes {
    /// Routes whose channels `dialer` opens (the default dials plaintext).
    pub fn with_dialer(dialer: crate::tls::dial::Dialer) -> Routes {
        Routes {
            dialer,
            ..Routes::default()
        }
    }

    /// The address of the leader of `key`, if a learned span holds it.
    pub fn leader(&self, key: &[u8]) -> Option<String> {
        let spans = self.spans.read();
        let (_, span) = spans
            .range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(key)))
            .next_back()?;
        if span.end.as_deref().is_some_and(|e| key >= e) {
            return None;
        }
        Some(span.leader.clone())
    }

    /// The leader's address and a channel to it for `key`, if a learned span holds it.
    pub fn route(&self, key: &[u8]) -> Option<(String, Channel)> {
        let leader = self.leader(key)?;
        if let Some(ch) = self.channels.read().get(&leader) {
            return Some((leader, ch.clone()));
        }
        let ch = self.dialer.channel(&leader).ok()?;
        self.channels.write().insert(leader.clone(), ch.clone());
        Some((leader, ch))
    }

    /// Learns the hint in a response's metadata, if it carries one: the new span replaces
    /// every learned span it overlaps.
    pub fn learn(&self, md: &MetadataMap) {
        let Some(leader) = md.get(LEADER_HEADER).and_then(|v| v.to_str().ok()) else {
            return;
        };
        let Some(start) = md.get_bin(START_HEADER).and_then(|v| v.to_bytes().ok()) else {
            return;
        };
        let end = md
            .get_bin(END_HEADER)
            .and_then(|v| v.to_bytes().ok())
            .map(|b| b.to_vec());
        self.learn_span(leader, start.to_vec(), end);
    }

    /// Learns that `[start, end)` (`end` `None`: unbounded) is led at `leader`: the span
    /// replaces every learned span it overlaps. An empty leader teaches nothing.
    pub fn learn_span(&self, leader: &str, start: Vec<u8>, end: Option<Vec<u8>>) {
        if leader.is_empty() {
            return;
        }
        let mut spans = self.spans.write();
        // Drop what the new span overlaps: spans starting inside it, and the one before
        // it if it reaches in.
        let inside: Vec<Vec<u8>> = spans
            .range(start.clone()..)
            .take_while(|(s, _)| end.as_ref().is_none_or(|e| *s < e))
            .map(|(s, _)| s.clone())
            .collect();
        for s in inside {
            spans.remove(&s);
        }
        let before = spans
            .range(..start.clone())
            .next_back()
            .map(|(s, span)| (s.clone(), span.end.clone()));
        if let Some((s, before_end)) = before {
            if before_end.is_none_or(|e| e > start) {
                spans.remove(&s);
            }
        }
        spans.insert(
            start,
            Span {
                end,
                leader: leader.to_string(),
            },
        );
    }

    /// Forgets every span led at `leader` (it could not be reached).
    pub fn forget(&self, leader: &str) {
        self.spans.write().retain(|_, span| span.leader != leader);
        self.channels.write().remove(leader);
    }

    /// How many spans are known.
    pub fn len(&self) -> usize {
        self.spans.read().len()
    }

    /// True before anything was learned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(leader: &str, start: &[u8], end: Option<&[u8]>) -> MetadataMap {
        let mut md = MetadataMap::new();
        attach(&mut md, leader, start, end);
        md
    }

    fn leader_of(r: &Routes, key: &[u8]) -> Option<String> {
        r.route(key).map(|(l, _)| l)
    }

    #[tokio::test]
    async fn keys_route_to_the_leader_of_the_newest_span_that_holds_them() {
        let r = Routes::default();
        assert_eq!(leader_of(&r, b"k"), None, "nothing learned: no route");
        r.learn(&hint("127.0.0.1:1", b"", Some(b"m")));
        r.learn(&hint("127.0.0.1:2", b"m", None));
        assert_eq!(leader_of(&r, b"a").as_deref(), Some("127.0.0.1:1"));
        assert_eq!(
            leader_of(&r, b"m").as_deref(),
            Some("127.0.0.1:2"),
            "a span's end belongs to the next"
        );
        assert_eq!(leader_of(&r, b"zzz").as_deref(), Some("127.0.0.1:2"));
        // The first span split and its right half moved: the old span is replaced.
        r.learn(&hint("127.0.0.1:3", b"g", Some(b"m")));
        assert_eq!(leader_of(&r, b"h").as_deref(), Some("127.0.0.1:3"));
        assert_eq!(
            leader_of(&r, b"a"),
            None,
            "the overlapped span was dropped, not trusted"
        );
        assert_eq!(r.len(), 2);
        r.forget("127.0.0.1:2");
        assert_eq!(
            leader_of(&r, b"x"),
            None,
            "an unreachable leader is forgotten"
        );
        // A response without a hint, or with a malformed one, teaches nothing.
        r.learn(&MetadataMap::new());
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_streamed_hint_teaches_the_same_as_the_metadata_one() {
        let (by_metadata, by_stream) = (Routes::default(), Routes::default());
        by_metadata.learn(&hint("127.0.0.1:1", b"c", Some(b"f")));
        by_stream.learn_span("127.0.0.1:1", b"c".to_vec(), Some(b"f".to_vec()));
        for key in [&b"b"[..], b"c", b"e", b"f"] {
            assert_eq!(
                by_metadata.leader(key),
                by_stream.leader(key),
                "key {key:?}"
            );
        }
        assert_eq!(by_stream.leader(b"d").as_deref(), Some("127.0.0.1:1"));
        by_stream.learn_span("", b"a".to_vec(), None);
        assert_eq!(
            by_stream.len(),
            1,
            "a hint without a leader teaches nothing"
        );
    }
}
