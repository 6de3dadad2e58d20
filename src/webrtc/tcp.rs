//! ICE over TCP (`[webrtc] ice_tcp`): a passive TCP listener on the UDP socket's port number,
//! for browsers behind firewalls that drop UDP. Each connection carries one browser's STUN,
//! DTLS and SRTP as RFC 4571 frames (a 16-bit length, then the packet); frames are routed to
//! sessions exactly as datagrams are (`demux`), and a session's packets to that browser go back
//! through the connection's writer.
//!
//! Belongs here: the listener, the framing, the writers. Does not belong here: sessions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{lock, Inbound, Proto, Shared};

/// Frames queued for one connection's writer at most; more are dropped (as UDP would).
const WRITE_QUEUE: usize = 512;
/// Connections at once.
const MAX_CONNECTIONS: usize = 4096;

/// Writers of the open connections, by the browser's address.
pub(super) type Writers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>>;

/// Cuts RFC 4571 frames out of a TCP byte stream.
#[derive(Debug, Default)]
pub(super) struct Deframer {
    buf: BytesMut,
}

impl Deframer {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, if one is in.
    pub fn next_frame(&mut self) -> Option<Bytes> {
        if self.buf.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
        if self.buf.len() < 2 + len {
            return None;
        }
        self.buf.advance(2);
        Some(self.buf.split_to(len).freeze())
    }
}

/// One packet as an RFC 4571 frame; `None` if it is too long for one.
pub(super) fn frame(packet: &[u8]) -> Option<Bytes> {
    let len = u16::try_from(packet.len()).ok()?;
    let mut b = BytesMut::with_capacity(packet.len() + 2);
    b.put_u16(len);
    b.put_slice(packet);
    Some(b.freeze())
}

/// Accepts connections until `stop`.
pub(super) async fn listen(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let (stream, from) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    debug!(error = %e, "ICE-TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        if lock(&shared.tcp_writers).len() >= MAX_CONNECTIONS {
            continue;
        }
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, from, Arc::clone(&shared), stop.clone()));
    }
}

/// Reads one connection's frames into the sessions, and writes theirs back.
async fn connection(
    stream: TcpStream,
    from: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    lock(&shared.tcp_writers).insert(from, tx);
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if wr.write_all(&f).await.is_err() {
                break;
            }
        }
    });
    let mut frames = Deframer::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.cancelled() => break,
        };
        frames.push(&buf[..n]);
        while let Some(packet) = frames.next_frame() {
            shared.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
            let delivered = {
                let mut routes = lock(&shared.routes);
                routes.route(from, &packet).is_some_and(|tx| {
                    tx.try_send(Inbound {
                        from,
                        proto: Proto::Tcp,
                        data: packet.clone(),
                    })
                    .is_ok()
                })
            };
            if !delivered {
                shared
                    .stats
                    .datagrams_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    lock(&shared.tcp_writers).remove(&from);
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_whole_however_the_bytes_arrive() {
        let mut stream = Vec::new();
        for p in [&b"stun"[..], b"", b"dtls record"] {
            stream.extend_from_slice(&frame(p).expect("fits"));
        }
        let mut d = Deframer::default();
        let mut out = Vec::new();
        for byte in &stream {
            d.push(std::slice::from_ref(byte));
            while let Some(f) = d.next_frame() {
                out.push(f);
            }
        }
        assert_eq!(out, [&b"stun"[..], b"", b"dtls record"]);
        assert!(frame(&vec![0u8; 70_000]).is_none());
    }
}
