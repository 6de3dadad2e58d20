//! The stream writers: a few tasks per stream that send each new frame to every caught-up
//! viewer of that stream, instead of one task wake-up per viewer per frame.
//!
//! A viewer's sending state (`sending::Viewer`) lives in its session task while the session
//! has something of its own to do (the GOP catch-up, a slow socket, a pong, an event, the
//! close) and in its stream's [`Pool`] the rest of the time ([`Writers::park`]). On a new frame
//! every writer of the stream wakes and they share the pool out in chunks: each takes a few
//! viewers, reads, muxes and writes for each with non-blocking writes, puts them back and
//! takes the next few, so a thousand viewers' writes run on every core and a core that is
//! also busy with something else simply does fewer of them. A viewer whose socket will not
//! take a whole batch goes back to its session at once ([`Why::Blocked`]), which finishes the
//! write with its own timeout, so one slow viewer never delays the others; a session that
//! needs to write something itself asks for its viewer back ([`Parked::recall`]).
//!
//! Belongs here: who holds a parked viewer, and the writers. Does not belong here: what is
//! sent (`sending`, `viewer`), the session's client messages and events (`super`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;
use uuid::Uuid;

use super::sending::{Taken, Viewer, BATCH};
use super::viewer::Out;
use crate::hub::StreamHub;
use crate::media::Frame;
use crate::wsproto::WsError;

/// Viewers a writer takes from the pool at a time: small, so the cores finish together.
const CHUNK: usize = 8;
/// A stream gets another writer (up to one per runtime worker) for every this many parked
/// viewers: below it, one core writes a frame to all of them in well under a millisecond.
const VIEWERS_PER_WRITER: usize = 32;
/// Frames in a row with no viewer in the pool after which a writer stops waking for frames.
const IDLE_ROUNDS: u32 = 50;
/// Commands waiting for one writer at most (joins and recalls; each session has at most one
/// outstanding, so senders wait only while the writer is busy with a frame).
const COMMANDS: usize = 256;

/// Why a writer gave a viewer back.
#[derive(Debug, PartialEq, Eq)]
pub enum Why {
    /// Its session asked.
    Recalled,
    /// Its socket did not take the whole batch: the rest is queued.
    Blocked,
    /// Writing failed: the connection is gone.
    Failed,
    /// The stream was removed.
    Closed,
}

/// A viewer handed back by its writer.
#[derive(Debug)]
pub struct Back<W> {
    pub viewer: Box<Viewer<W>>,
    pub why: Why,
}

/// A parked viewer, in the pool or being written to by a writer.
struct Held<W> {
    viewer: Box<Viewer<W>>,
    back: oneshot::Sender<Back<W>>,
    /// Set by the session when it wants the viewer back.
    recall: Arc<AtomicBool>,
}

impl<W> Held<W> {
    fn give_back(self, why: Why) {
        // A session that is gone dropped its receiver; its viewer is dropped here.
        let _ = self.back.send(Back {
            viewer: self.viewer,
            why,
        });
    }
}

/// A stream's parked viewers, shared by its writers.
struct Pool<W> {
    state: Mutex<PoolState<W>>,
}

struct PoolState<W> {
    /// Viewers still to be given a turn since the newest frame.
    todo: Vec<Held<W>>,
    /// Viewers given their turn since the newest frame.
    done: Vec<Held<W>>,
    /// The newest publish (the hub's version) turns were started for.
    round: u64,
}

impl<W> PoolState<W> {
    fn len(&self) -> usize {
        self.todo.len() + self.done.len()
    }
}

impl<W> Default for Pool<W> {
    fn default() -> Self {
        Pool {
            state: Mutex::new(PoolState {
                todo: Vec::new(),
                done: Vec::new(),
                round: 0,
            }),
        }
    }
}

impl<W: AsyncWrite + Unpin> Pool<W> {
    fn lock(&self) -> MutexGuard<'_, PoolState<W>> {
        // Nothing in here panics while holding the lock; recover the data if something did.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Viewers in the pool (not counting those a writer is serving right now).
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// A new frame (the hub's version `round`): every viewer needs a turn again. Returns the
    /// viewers in the pool.
    fn start_round(&self, round: u64) -> usize {
        let mut st = self.lock();
        if round > st.round {
            st.round = round;
            let done = std::mem::take(&mut st.done);
            st.todo.extend(done);
        }
        st.len()
    }

    /// Puts viewers back after their turns, which started in round `round`: a viewer that
    /// missed a frame published meanwhile needs another turn.
    fn put_back(&self, chunk: &mut Vec<Held<W>>, round: u64) {
        let mut st = self.lock();
        let again = st.round != round;
        for h in chunk.drain(..) {
            if h.recall.load(Ordering::Acquire) {
                h.give_back(Why::Recalled);
            } else if again {
                st.todo.push(h);
            } else {
                st.done.push(h);
            }
        }
    }

    /// Gives back every viewer whose session asked for it.
    fn recall(&self) {
        let mut st = self.lock();
        let st = &mut *st;
        for list in [&mut st.todo, &mut st.done] {
            let mut i = 0;
            while i < list.len() {
                if list[i].recall.load(Ordering::Acquire) {
                    list.swap_remove(i).give_back(Why::Recalled);
                } else {
                    i += 1;
                }
            }
        }
    }

    /// Gives every viewer in the pool back.
    fn close(&self) {
        let mut st = self.lock();
        let st = &mut *st;
        for h in st.todo.drain(..).chain(st.done.drain(..)) {
            h.give_back(Why::Closed);
        }
    }

    /// Gives turns, a chunk at a time, until no viewer in the pool needs one.
    fn work(&self, s: &mut Scratch<W>, cx: &mut Context<'_>) {
        loop {
            let round = {
                let mut st = self.lock();
                let from = st.todo.len().saturating_sub(CHUNK);
                s.chunk.extend(st.todo.drain(from..));
                st.round
            };
            if s.chunk.is_empty() {
                return;
            }
            // One wall-clock read per chunk: a turn only compares it with frames' times to
            // find a viewer seconds behind.
            let now_ms = crate::media::unix_ms_now();
            let mut i = 0;
            while i < s.chunk.len() {
                let h = &mut s.chunk[i];
                let why = if h.back.is_closed() {
                    // Its session is gone (it ended without asking for the viewer back).
                    Some(Why::Closed)
                } else {
                    turn(&mut h.viewer, &mut s.frames, &mut s.outs, now_ms, cx)
                };
                match why {
                    Some(why) => s.chunk.swap_remove(i).give_back(why),
                    None => i += 1,
                }
            }
            self.put_back(&mut s.chunk, round);
        }
    }
}

/// A writer's scratch space.
struct Scratch<W> {
    frames: Vec<Frame>,
    outs: Vec<Out>,
    chunk: Vec<Held<W>>,
}

impl<W> Scratch<W> {
    fn new() -> Self {
        Scratch {
            frames: Vec::with_capacity(BATCH),
            outs: Vec::with_capacity(BATCH + 4),
            chunk: Vec::with_capacity(CHUNK),
        }
    }
}

/// One turn for one viewer: everything new in the ring, muxed and written. `None` while it
/// stays; `Some(why)` when it goes back to its session.
fn turn<W: AsyncWrite + Unpin>(
    v: &mut Viewer<W>,
    frames: &mut Vec<Frame>,
    outs: &mut Vec<Out>,
    now_ms: i64,
    cx: &mut Context<'_>,
) -> Option<Why> {
    loop {
        let r = v.sub.try_recv(frames, BATCH);
        // Fewer than a batch: that was everything, and a frame published since starts
        // another round in which this viewer gets a turn again (`Pool::put_back`), so the ring
        // is not read a second time just to find it empty.
        let all = matches!(r, Ok(n) if n < BATCH);
        if r == Ok(0) {
            return None;
        }
        let (oldest_live, all) = match v.take(r, frames, outs, now_ms) {
            Taken::Queued(oldest_live) => (oldest_live, all),
            Taken::Resynced => (None, false),
            Taken::Closed => return Some(Why::Closed),
        };
        match v.tx.poll_drain(cx) {
            Poll::Ready(Ok(())) => {
                v.sent(oldest_live);
                if all {
                    return None;
                }
            }
            Poll::Ready(Err(e)) => {
                if let WsError::Io(e) = e {
                    debug!(error = %e, "viewer write failed");
                }
                return Some(Why::Failed);
            }
            Poll::Pending => {
                v.unsent_since = oldest_live;
                return Some(Why::Blocked);
            }
        }
    }
}

enum Command<W> {
    Join(Held<W>),
    /// A session set its viewer's recall flag.
    Recall,
}

/// A viewer in its stream's pool, from its session's side.
pub struct Parked<W> {
    commands: mpsc::Sender<Command<W>>,
    recall: Arc<AtomicBool>,
    /// Resolves when a writer gives the viewer back; an error means the viewer was dropped
    /// with its writers (its connection closed with it).
    pub back: oneshot::Receiver<Back<W>>,
}

impl<W> Parked<W> {
    /// Asks for the viewer back and waits for it (writers answer between two chunks).
    pub async fn recall(mut self) -> Option<Back<W>> {
        self.recall.store(true, Ordering::Release);
        // Writers that are gone have dropped the viewer, and `back` says so.
        let _ = self.commands.send(Command::Recall).await;
        (&mut self.back).await.ok()
    }
}

/// A writer: waits for frames and commands until the stream is removed or the registry is
/// dropped, then gives back every viewer it can reach. After [`IDLE_ROUNDS`] frames with
/// nobody in the pool it stops waking for frames (a stream whose viewers have left costs
/// nothing) and waits for a command (the next join) or the stream's removal.
async fn run<W: AsyncWrite + Unpin>(
    hub: Arc<StreamHub>,
    pool: Arc<Pool<W>>,
    mut commands: mpsc::Receiver<Command<W>>,
) {
    let mut published = hub.watch_published();
    let mut health = hub.watch_health();
    let mut s = Scratch::new();
    let mut empty_rounds = 0u32;
    loop {
        let idle = empty_rounds >= IDLE_ROUNDS;
        tokio::select! {
            biased;
            changed = published.changed(), if !idle => {
                if changed.is_err() || hub.is_closed() {
                    break;
                }
                let round = *published.borrow_and_update();
                empty_rounds = if pool.start_round(round) == 0 { empty_rounds + 1 } else { 0 };
            }
            command = commands.recv() => {
                match command {
                    Some(Command::Join(h)) => pool.lock().todo.push(h),
                    Some(Command::Recall) => pool.recall(),
                    None => break,
                }
                empty_rounds = 0;
            }
            // Only while idle (health changes are rare; removal is one).
            changed = health.changed(), if idle => {
                if changed.is_err() || hub.is_closed() {
                    break;
                }
                continue;
            }
        }
        std::future::poll_fn(|cx| {
            pool.work(&mut s, cx);
            Poll::Ready(())
        })
        .await;
    }
    pool.close();
}

/// A stream's writers, for one hub (a stream removed and added again gets new ones).
struct StreamWriters<W> {
    hub: Weak<StreamHub>,
    pool: Arc<Pool<W>>,
    writers: Vec<mpsc::Sender<Command<W>>>,
}

/// Every stream's writers, started when a stream's first viewer parks.
pub struct Writers<W> {
    streams: Mutex<HashMap<Uuid, StreamWriters<W>>>,
    next: AtomicU64,
}

impl<W> Default for Writers<W> {
    fn default() -> Self {
        Writers {
            streams: Mutex::default(),
            next: AtomicU64::new(0),
        }
    }
}

impl<W> std::fmt::Debug for Writers<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writers").finish_non_exhaustive()
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> Writers<W> {
    /// Hands a caught-up viewer (nothing left to write) to its stream's writers, which give
    /// it a turn at once and on every frame. `Err` (with the viewer) when they cannot take it:
    /// the session keeps it and writes itself.
    pub async fn park(&self, viewer: Box<Viewer<W>>) -> Result<Parked<W>, Box<Viewer<W>>> {
        let commands = self.writer_for(viewer.sub.hub());
        let recall = Arc::new(AtomicBool::new(false));
        let (back_tx, back) = oneshot::channel();
        let held = Held {
            viewer,
            back: back_tx,
            recall: Arc::clone(&recall),
        };
        match commands.send(Command::Join(held)).await {
            Ok(()) => Ok(Parked {
                commands,
                recall,
                back,
            }),
            Err(mpsc::error::SendError(Command::Join(held))) => Err(held.viewer),
            Err(_) => unreachable!("the command sent was a join"),
        }
    }

    /// One of the stream's writers (in turn). A stream's first writer starts with its first
    /// parked viewer; another starts for every [`VIEWERS_PER_WRITER`] more, up to one per
    /// runtime worker (a stream with one viewer wakes one task per frame, not one per core).
    fn writer_for(&self, hub: &Arc<StreamHub>) -> mpsc::Sender<Command<W>> {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let current = streams.get(&hub.id).is_some_and(|s| {
            std::ptr::eq(s.hub.as_ptr(), Arc::as_ptr(hub))
                && s.writers.iter().all(|w| !w.is_closed())
        });
        if !current {
            // Removed streams' writers have ended; their entries go now.
            streams.retain(|_, s| s.hub.strong_count() > 0);
            let s = StreamWriters {
                hub: Arc::downgrade(hub),
                pool: Arc::new(Pool::default()),
                writers: Vec::new(),
            };
            streams.insert(hub.id, s);
        }
        let s = streams
            .get_mut(&hub.id)
            .expect("the stream's entry was just made");
        let most = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1);
        if s.writers.len() < most && s.pool.len() >= VIEWERS_PER_WRITER * s.writers.len() {
            let (tx, rx) = mpsc::channel(COMMANDS);
            // Unconstrained: a writer's hundreds of writes per frame must not run out of the
            // runtime's per-task budget (a write refused for budget would look like a full
            // socket).
            let task = run(Arc::clone(hub), Arc::clone(&s.pool), rx);
            tokio::spawn(tokio::task::unconstrained(task));
            s.writers.push(tx);
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed) as usize % s.writers.len();
        s.writers[k].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Limits;
    use crate::media::{StreamParams, TrackKind, VideoCodec, VideoParams};
    use crate::mse::ViewerMux;
    use crate::wsproto::Sender;
    use bytes::Bytes;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, DuplexStream};

    fn params() -> Arc<StreamParams> {
        Arc::new(StreamParams {
            video: Some(VideoParams {
                codec: VideoCodec::H264,
                rfc6381: "avc1.42c01e".into(),
                width: 64,
                height: 48,
                frame_rate: None,
                sample_entry: Bytes::from_static(b"\0\0\0\x08avc1"),
            }),
            audio: None,
        })
    }

    fn frame(p: &Arc<StreamParams>, n: i64, size: usize) -> Frame {
        Frame {
            track: TrackKind::Video,
            dts_90k: n * 3600,
            cto_90k: 0,
            dur_90k: 3600,
            is_key: n == 0,
            epoch: 0,
            wall_ms: crate::media::unix_ms_now(),
            received: std::time::Instant::now(),
            data: Bytes::from(vec![0u8; size]),
            params: Arc::clone(p),
        }
    }

    fn stream() -> (Arc<StreamHub>, Arc<StreamParams>) {
        let hub = StreamHub::new(Uuid::new_v4(), Limits::default());
        let p = params();
        hub.set_online(Arc::clone(&p));
        (hub, p)
    }

    fn viewer(hub: &Arc<StreamHub>, io: DuplexStream) -> Box<Viewer<DuplexStream>> {
        Box::new(Viewer {
            tx: Sender::new(io),
            mux: ViewerMux::new(None),
            sub: hub.subscribe(),
            events: false,
            joined: std::time::Instant::now(),
            sent_at: crate::mse::sending::SentAt::new(),
            unsent_since: None,
        })
    }

    /// Reads one unmasked server frame: its opcode and payload.
    async fn message(r: &mut DuplexStream) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        r.read_exact(&mut h).await.expect("header");
        let len = match h[1] & 0x7f {
            126 => u64::from(r.read_u16().await.expect("length")),
            127 => r.read_u64().await.expect("length"),
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).expect("length")];
        r.read_exact(&mut payload).await.expect("payload");
        (h[0] & 0x0f, payload)
    }

    /// Reads messages until `n` fragments (`moof`…) have arrived, within 5 s.
    async fn fragments(r: &mut DuplexStream, n: usize) {
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut got = 0;
            while got < n {
                let (op, payload) = message(r).await;
                if op == 2 && payload.get(4..8) == Some(b"moof") {
                    got += 1;
                }
            }
        })
        .await
        .expect("fragments in time");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parked_viewers_get_each_new_frame_and_come_back_when_recalled() {
        let (hub, p) = stream();
        let writers = Writers::default();
        let mut parked = Vec::new();
        let mut readers = Vec::new();
        // Enough for two writers to share them.
        for _ in 0..100 {
            let (a, b) = tokio::io::duplex(1 << 20);
            parked.push(writers.park(viewer(&hub, a)).await.expect("parked"));
            readers.push(b);
        }
        for n in 0..5 {
            hub.publish(frame(&p, n, 1000));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for r in &mut readers {
            fragments(r, 5).await;
        }
        for p in parked {
            let back = p.recall().await.expect("given back");
            assert_eq!(back.why, Why::Recalled);
            assert!(back.viewer.tx.is_drained());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_socket_goes_back_to_its_session_and_delays_nobody() {
        let (hub, p) = stream();
        let writers = Writers::default();
        let (slow_io, _slow_reader) = tokio::io::duplex(4096);
        let slow = writers.park(viewer(&hub, slow_io)).await.expect("parked");
        let (fast_io, mut fast_reader) = tokio::io::duplex(1 << 20);
        let _fast = writers.park(viewer(&hub, fast_io)).await.expect("parked");
        hub.publish(frame(&p, 0, 64 * 1024));
        let back = tokio::time::timeout(Duration::from_secs(5), slow.back)
            .await
            .expect("in time")
            .expect("given back");
        assert_eq!(back.why, Why::Blocked);
        assert!(!back.viewer.tx.is_drained(), "the rest stays queued");
        assert!(
            back.viewer.unsent_since.is_some(),
            "its delay is recorded once the session has written the rest"
        );
        fragments(&mut fast_reader, 1).await;
    }

    #[tokio::test]
    async fn removing_the_stream_gives_its_viewers_back() {
        let (hub, _p) = stream();
        let writers = Writers::default();
        let (io, _reader) = tokio::io::duplex(4096);
        let parked = writers.park(viewer(&hub, io)).await.expect("parked");
        hub.close();
        let back = tokio::time::timeout(Duration::from_secs(5), parked.back)
            .await
            .expect("in time")
            .expect("given back");
        assert_eq!(back.why, Why::Closed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_of_a_stream_nobody_watches_stop_waking_until_a_viewer_comes() {
        let (hub, p) = stream();
        let writers = Writers::default();
        let (io, _reader) = tokio::io::duplex(1 << 20);
        let parked = writers.park(viewer(&hub, io)).await.expect("parked");
        let (pool, sender) = {
            let streams = writers.streams.lock().expect("registry");
            let s = streams.get(&hub.id).expect("the stream's writers");
            (Arc::clone(&s.pool), s.writers[0].clone())
        };
        // The newest frame (the hub's version) a writer woke for.
        let woke_for = || pool.lock().round;
        // The viewer leaves; frames go on.
        drop(parked.recall().await.expect("given back"));
        let mut n = 1;
        let mut same_since = 0;
        while same_since < 20 {
            assert!(n < 1000, "the writer still wakes for every frame");
            let before = woke_for();
            hub.publish(frame(&p, n, 100));
            n += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
            let now = woke_for();
            same_since = if now == before { same_since + 1 } else { 0 };
        }
        assert!(woke_for() >= u64::from(IDLE_ROUNDS));
        // A new viewer wakes it: it gets frames again.
        let (io, mut reader) = tokio::io::duplex(1 << 20);
        let _parked = writers.park(viewer(&hub, io)).await.expect("parked");
        let idle_at = woke_for();
        for _ in 0..3 {
            // Keyframes: what a viewer starts at.
            let mut f = frame(&p, n, 100);
            f.is_key = true;
            hub.publish(f);
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fragments(&mut reader, 3).await;
        assert!(woke_for() > idle_at);
        // And an idle writer still ends with its stream.
        drop(_parked.recall().await.expect("given back"));
        for _ in 0..IDLE_ROUNDS + 10 {
            hub.publish(frame(&p, n, 100));
            n += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        hub.close();
        tokio::time::timeout(Duration::from_secs(5), sender.closed())
            .await
            .expect("the writer ended with its stream");
    }

    #[tokio::test]
    async fn a_viewer_whose_session_ended_is_dropped_at_the_next_frame() {
        let (hub, p) = stream();
        let writers = Writers::default();
        let (io, mut reader) = tokio::io::duplex(1 << 20);
        drop(writers.park(viewer(&hub, io)).await.expect("parked"));
        hub.publish(frame(&p, 0, 100));
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut rest))
            .await
            .expect("the connection closes in time")
            .expect("read");
        assert!(rest.is_empty(), "nothing written to a viewer nobody serves");
    }
}
