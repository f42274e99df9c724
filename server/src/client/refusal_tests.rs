//! Which failed calls are certainly not run, against a stand-in node that speaks just
//! enough HTTP/2 to end a call's stream the way a real server can: a graceful shutdown's
//! `GOAWAY` that does not let the stream through, a `RST_STREAM`, or a connection closed
//! after the stream was let through. Only the first two kinds of refusal promise that the
//! call was not processed (RFC 9113, section 8.7).

use std::sync::Arc;
use std::time::Duration;

use flotilla_raftstore::{Command, Epoch, Error as StoreError, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Status;

use super::{not_delivered, refused_unprocessed, unreachable};
use crate::peers::Peers;
use crate::proto::kv_client::KvClient;
use crate::proto::GetRequest;
use crate::tls::dial::Dialer;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const NO_ERROR: u32 = 0x0;
const INTERNAL_ERROR: u32 = 0x2;
const REFUSED_STREAM: u32 = 0x7;

/// How the stand-in ends the first call's stream.
#[derive(Clone, Copy)]
enum End {
    /// `GOAWAY` whose last stream id is below the call's: refused, not processed.
    GoAwayBefore,
    /// `GOAWAY` that lets the call through, then the connection closes mid-call.
    GoAwayAfterThenClose,
    /// `RST_STREAM` with this error code.
    Reset(u32),
}

fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, 0];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn two_words(a: u32, b: u32) -> Vec<u8> {
    [a.to_be_bytes(), b.to_be_bytes()].concat()
}

/// Reads frames until the client's first `HEADERS`; returns its stream id.
async fn first_call(sock: &mut TcpStream) -> std::io::Result<u32> {
    let mut preface = [0u8; PREFACE.len()];
    sock.read_exact(&mut preface).await?;
    assert_eq!(preface, PREFACE, "the client spoke HTTP/2");
    loop {
        let mut head = [0u8; 9];
        sock.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        sock.read_exact(&mut payload).await?;
        if head[3] == HEADERS {
            return Ok(u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff);
        }
    }
}

/// Serves one connection: settings, then the first call's stream ended by `end`.
async fn serve_one(mut sock: TcpStream, end: End) -> std::io::Result<()> {
    sock.write_all(&frame(SETTINGS, 0, &[])).await?;
    let stream = first_call(&mut sock).await?;
    let ending = match end {
        End::GoAwayBefore => frame(GOAWAY, 0, &two_words(stream.saturating_sub(2), NO_ERROR)),
        End::GoAwayAfterThenClose => frame(GOAWAY, 0, &two_words(stream, NO_ERROR)),
        End::Reset(code) => frame(RST_STREAM, stream, &code.to_be_bytes()),
    };
    sock.write_all(&ending).await?;
    if let End::GoAwayAfterThenClose = end {
        // The connection ends with the call let through and unanswered: a FIN after the
        // GOAWAY (so the client reads it), not a reset.
        sock.shutdown().await?;
    }
    // Keep reading until the client closes, so only the frames above end the call.
    let mut sink = Vec::new();
    sock.read_to_end(&mut sink).await.map(|_| ())
}

/// A stand-in node ending each connection's first call by `end`; its address.
async fn stand_in(end: End) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve_one(sock, end));
        }
    });
    address
}

/// The status of one `Get` sent to a stand-in ending it by `end`.
async fn get_ended_by(end: End) -> Status {
    let address = stand_in(end).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    let mut kv = KvClient::new(channel);
    let call = kv.get(GetRequest { key: b"k".to_vec() });
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Err(status)) => status,
        Ok(Ok(_)) => panic!("the stand-in answers no call"),
        Err(_) => panic!("the call did not end within 10 s"),
    }
}

/// The HTTP/2 error under `s`, which says how the stand-in's frames ended the call.
fn h2_error(s: &Status) -> &h2::Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = cause {
        if let Some(err) = e.downcast_ref::<h2::Error>() {
            return err;
        }
        cause = e.source();
    }
    panic!("no HTTP/2 error under {s:?}")
}

#[tokio::test]
async fn a_call_a_graceful_shutdown_did_not_let_through_was_not_run() {
    let s = get_ended_by(End::GoAwayBefore).await;
    assert!(!unreachable(&s), "it connected: {s:?}");
    assert!(refused_unprocessed(&s), "refused by GOAWAY: {s:?}");
    assert!(not_delivered(&s), "{s:?}");
}

#[tokio::test]
async fn a_call_reset_with_refused_stream_was_not_run() {
    let s = get_ended_by(End::Reset(REFUSED_STREAM)).await;
    assert!(refused_unprocessed(&s), "refused by RST_STREAM: {s:?}");
    assert!(not_delivered(&s), "{s:?}");
}

#[tokio::test]
async fn a_call_reset_for_another_reason_may_have_run() {
    let s = get_ended_by(End::Reset(INTERNAL_ERROR)).await;
    assert_eq!(
        h2_error(&s).reason(),
        Some(h2::Reason::INTERNAL_ERROR),
        "{s:?}"
    );
    assert!(
        !refused_unprocessed(&s),
        "an internal error promises nothing: {s:?}"
    );
    assert!(!not_delivered(&s), "{s:?}");
}

#[tokio::test]
async fn a_call_let_through_and_then_cut_off_may_have_run() {
    let s = get_ended_by(End::GoAwayAfterThenClose).await;
    let text = super::with_causes(&s);
    assert!(
        text.contains("broken pipe"),
        "the connection closed under the call: {s:?}"
    );
    assert!(!refused_unprocessed(&s), "the GOAWAY let it through: {s:?}");
    assert!(!not_delivered(&s), "{s:?}");
}

/// A request the gateway forwards to node 9 at `address`, and how it ended.
async fn forward_to(address: String) -> Result<flotilla_raftstore::Response, StoreError> {
    let peers = Arc::new(Peers::new(
        1,
        "127.0.0.1:1".into(),
        [(9, address)].into(),
        Duration::from_secs(60),
        Dialer::insecure(),
    ));
    let req = Request {
        range_id: 7,
        epoch: Epoch::default(),
        command: Command::Get { key: b"k".to_vec() },
    };
    crate::gateway::execute_remote(&peers, 9, req).await
}

#[tokio::test]
async fn a_forward_the_node_refused_is_certainly_not_applied() {
    let refused = forward_to(stand_in(End::GoAwayBefore).await).await;
    assert!(
        matches!(refused, Err(StoreError::NodeUnreachable { node_id: 9, .. })),
        "a refused forward is retried elsewhere, not reported of unknown outcome: {refused:?}"
    );
    let cut_off = forward_to(stand_in(End::GoAwayAfterThenClose).await).await;
    assert!(
        matches!(cut_off, Err(StoreError::Ambiguous { range_id: 7, .. })),
        "a forward cut off after it was let through may have been applied: {cut_off:?}"
    );
}
