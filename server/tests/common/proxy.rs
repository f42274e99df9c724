//! A TCP proxy for one directed link between two nodes, able to blackhole it.
//!
//! The proxy listens on an ephemeral 127.0.0.1 port and forwards every accepted
//! connection to a fixed target, bytes both ways. While its blackhole is on, bytes read
//! in either direction are silently dropped and connections stay open (a network that
//! loses packets, not one that refuses connections, as in etcd's functional tester);
//! new connections are still accepted but nothing reaches the target. Turning the
//! blackhole off resumes forwarding for new data. The nodes' HTTP/2 keepalives notice
//! the stuck connections and replace them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running proxy. Dropping it stops accepting and closes its connections.
pub struct Proxy {
    addr: SocketAddr,
    blackhole: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `target` (host:port) on the current tokio runtime.
    pub async fn start(target: String) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let blackhole = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(accept_loop(listener, target, blackhole.clone()));
        Ok(Proxy {
            addr,
            blackhole,
            task,
        })
    }

    /// The address to dial instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Turns the blackhole on (drop every byte) or off (forward again).
    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }

    /// Whether bytes are being dropped.
    pub fn is_blackholed(&self) -> bool {
        self.blackhole.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections until aborted; aborting it drops (and so aborts) every
/// connection task it started.
async fn accept_loop(listener: TcpListener, target: String, blackhole: Arc<AtomicBool>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((inbound, _)) = accepted else { continue };
                connections.spawn(forward(inbound, target.clone(), blackhole.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Carries one connection: connects to the target and pumps both directions.
async fn forward(inbound: TcpStream, target: String, blackhole: Arc<AtomicBool>) {
    let Ok(outbound) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let up = pump(in_read, out_write, blackhole.clone());
    let down = pump(out_read, in_write, blackhole);
    // When either side closes, close the whole connection.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Copies bytes from `from` to `to` until EOF or an error, dropping them while the
/// blackhole is on.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, blackhole: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if blackhole.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
