//! A server-side websocket on an upgraded connection: a [`Sender`] that queues messages and
//! writes a batch with one vectored write, the payload bytes never copied (a fragment shared
//! by a thousand viewers goes from the frame's buffer to each socket), and a [`Receiver`] that
//! reads the client's frames with a small buffer.
//!
//! Belongs here: moving frames between the socket and the callers. Does not belong here: frame
//! bytes (`frame`), the handshake (`upgrade`), what a session sends.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::frame::{self, Decoder, Inbound, Violation};

/// A message for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Text(String),
    /// One binary message made of these parts, sent back to back without copying them.
    Binary(Vec<Bytes>),
    Ping(Bytes),
    Pong(Bytes),
    /// The close code and reason; the connection ends after it.
    Close(u16, String),
}

impl Message {
    /// A binary message of one buffer.
    pub fn binary(b: Bytes) -> Message {
        Message::Binary(vec![b])
    }
}

/// Why the socket stopped.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("websocket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("websocket protocol: {0}")]
    Protocol(#[from] Violation),
}

/// Byte buffers waiting to be written, in order: a [`Buf`] whose chunks go to one `writev`.
#[derive(Debug, Default)]
struct Queue {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl Queue {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.remaining += b.len();
            self.parts.push_back(b);
        }
    }
}

impl Buf for Queue {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |b| &b[..])
    }

    fn advance(&mut self, mut n: usize) {
        self.remaining -= n.min(self.remaining);
        while n > 0 {
            let Some(front) = self.parts.front_mut() else {
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.parts.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(&self.parts) {
            *slot = IoSlice::new(part);
            n += 1;
        }
        n
    }
}

/// Buffers handed to one `writev` at most (Linux takes 1024; a batch of frames needs about
/// three per frame).
const MAX_SLICES: usize = 64;

/// The writing half.
#[derive(Debug)]
pub struct Sender<W> {
    io: W,
    /// Frame headers are written here and split off: one allocation, reused once sent.
    headers: BytesMut,
    queue: Queue,
    closed: bool,
}

impl<W: AsyncWrite + Unpin> Sender<W> {
    pub fn new(io: W) -> Self {
        Sender {
            io,
            headers: BytesMut::with_capacity(256),
            queue: Queue::default(),
            closed: false,
        }
    }

    /// Queues a message; nothing is written until [`Sender::flush`]. Nothing is queued after
    /// a close.
    pub fn feed(&mut self, msg: Message) {
        if self.closed {
            return;
        }
        let (opcode, parts) = match msg {
            Message::Text(t) => (frame::OP_TEXT, vec![Bytes::from(t)]),
            Message::Binary(parts) => (frame::OP_BINARY, parts),
            Message::Ping(b) => (
                frame::OP_PING,
                vec![b.slice(..b.len().min(frame::MAX_CONTROL))],
            ),
            Message::Pong(b) => (
                frame::OP_PONG,
                vec![b.slice(..b.len().min(frame::MAX_CONTROL))],
            ),
            Message::Close(code, reason) => {
                self.closed = true;
                (frame::OP_CLOSE, vec![frame::close_payload(code, &reason)])
            }
        };
        let len = parts.iter().map(Bytes::len).sum();
        frame::put_header(&mut self.headers, opcode, len);
        self.queue.push(self.headers.split().freeze());
        for p in parts {
            self.queue.push(p);
        }
    }

    /// Writes what is queued for as long as the socket takes it: `Ready` once everything is
    /// written, `Pending` (with the rest still queued, and `cx` woken when the socket can take
    /// more) when it is full. For a writer serving many sockets from one task.
    pub fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        while self.queue.has_remaining() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = self.queue.chunks_vectored(&mut slices);
            match std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(
                        std::io::Error::from(std::io::ErrorKind::WriteZero).into()
                    ))
                }
                Poll::Ready(Ok(k)) => self.queue.advance(k),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Whether nothing is waiting to be written.
    pub fn is_drained(&self) -> bool {
        !self.queue.has_remaining()
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), WsError> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await?;
        self.io.flush().await?;
        if self.closed {
            // Half-close: the client reads the close frame, then end of stream.
            self.io.shutdown().await?;
        }
        Ok(())
    }

    /// Queues and writes one message.
    pub async fn send(&mut self, msg: Message) -> Result<(), WsError> {
        self.feed(msg);
        self.flush().await
    }
}

/// The reading half.
#[derive(Debug)]
pub struct Receiver<R> {
    io: R,
    buf: BytesMut,
    decoder: Decoder,
}

/// Bytes read from the client at a time.
const READ_CHUNK: usize = 4096;

impl<R: AsyncRead + Unpin> Receiver<R> {
    pub fn new(io: R, max_message: usize) -> Self {
        Receiver {
            io,
            buf: BytesMut::new(),
            decoder: Decoder::new(max_message),
        }
    }

    /// The next message; `None` when the client closed the connection. Cancel-safe: bytes
    /// read stay in the buffer.
    pub async fn recv(&mut self) -> Option<Result<Inbound, WsError>> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(m)) => return Some(Ok(m)),
                Ok(None) => {}
                Err(v) => return Some(Err(v.into())),
            }
            self.buf.reserve(READ_CHUNK);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}

/// How long a closing server waits for the client's close.
pub const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and drops client messages until its close or end of stream, for at most
/// [`CLOSE_LINGER`].
async fn linger<R: AsyncRead + Unpin>(rx: &mut Receiver<R>) {
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(m)) = rx.recv().await {
            if matches!(m, Inbound::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Both halves, for sessions that read and write from one task: pings are answered as they
/// are read.
#[derive(Debug)]
pub struct Socket<S> {
    pub tx: Sender<WriteHalf<S>>,
    pub rx: Receiver<ReadHalf<S>>,
}

impl<S: AsyncRead + AsyncWrite> Socket<S> {
    pub fn new(io: S, max_message: usize) -> Self {
        let (r, w) = tokio::io::split(io);
        Socket {
            tx: Sender::new(w),
            rx: Receiver::new(r, max_message),
        }
    }

    /// Queues and writes one message.
    pub async fn send(&mut self, msg: Message) -> Result<(), WsError> {
        self.tx.send(msg).await
    }

    /// Sends a close, then reads until the client's close or end of stream (for at most
    /// [`CLOSE_LINGER`]): a connection dropped with the client's bytes unread would be reset,
    /// and a reset can discard the close before the client reads it.
    pub async fn close(&mut self, msg: Message) -> Result<(), WsError> {
        self.tx.send(msg).await?;
        linger(&mut self.rx).await;
        Ok(())
    }

    /// The next text or binary message or close; pings are answered, pongs dropped. A
    /// protocol violation is answered with its close code and ends the socket.
    pub async fn recv(&mut self) -> Option<Result<Inbound, WsError>> {
        loop {
            match self.rx.recv().await? {
                Ok(Inbound::Ping(b)) => {
                    if let Err(e) = self.tx.send(Message::Pong(b)).await {
                        return Some(Err(e));
                    }
                }
                Ok(Inbound::Pong) => {}
                Err(WsError::Protocol(v)) => {
                    let _ = self
                        .tx
                        .send(Message::Close(v.close_code(), v.to_string()))
                        .await;
                    return Some(Err(v.into()));
                }
                other => return Some(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_goes_out_in_order_with_shared_payloads_intact() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut tx = Sender::new(a);
        let shared = Bytes::from(vec![9u8; 70_000]);
        tx.feed(Message::Text("hi".into()));
        tx.feed(Message::Binary(vec![
            Bytes::from_static(b"head"),
            Bytes::new(),
            shared.clone(),
        ]));
        tx.feed(Message::Close(1011, "Stream not found".into()));
        tx.feed(Message::Text("after close".into())); // dropped
        let write = tokio::spawn(async move { tx.flush().await.map(|()| tx) });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        write.await.expect("join").expect("flush");

        let mut want = vec![0x81, 2, b'h', b'i', 0x82, 127];
        want.extend_from_slice(&70_004u64.to_be_bytes());
        want.extend_from_slice(b"head");
        want.extend_from_slice(&shared);
        want.extend_from_slice(&[0x88, 18, 0x03, 0xf3]);
        want.extend_from_slice(b"Stream not found");
        assert_eq!(got.len(), want.len());
        assert!(got == want);
    }

    #[tokio::test]
    async fn a_socket_answers_pings_and_reports_violations_with_a_close() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut s = Socket::new(a, 64);
        // Masked ping "p" (mask 0), then a masked text "ok", then an unmasked frame.
        b.write_all(&[0x89, 0x81, 0, 0, 0, 0, b'p'])
            .await
            .expect("write");
        b.write_all(&[0x81, 0x82, 0, 0, 0, 0, b'o', b'k'])
            .await
            .expect("write");
        b.write_all(&[0x81, 0x01, b'x']).await.expect("write");
        assert_eq!(
            s.recv().await.map(|r| r.ok()),
            Some(Some(Inbound::Text("ok".into())))
        );
        assert!(matches!(
            s.recv().await,
            Some(Err(WsError::Protocol(Violation::Unmasked)))
        ));
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("pong and close");
        let mut want = vec![0x8A, 1, b'p', 0x88, 25, 0x03, 0xea];
        want.extend_from_slice(b"client frame not masked");
        assert_eq!(got, want, "pong, then close 1002 and end of stream");
    }
}
