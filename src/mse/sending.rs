//! A live viewer's sending state ([`Viewer`]): its socket's sending half, muxer and ring
//! cursor, and what one read from the ring turns into ([`Viewer::take`]). Whoever holds it
//! writes to the viewer: its session, or one of its stream's writers (`writers`).
//!
//! Belongs here: turning frames into queued messages for one viewer, lag and resync. Does not
//! belong here: the fMP4 bytes (`viewer`), who holds the state when (`writers`, `super`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;
use tracing::debug;

use super::viewer::{Out, ViewerMux};
use crate::hub::{RecvError, Subscription};
use crate::media::Frame;
use crate::wsproto::{event, Message, Sender};

/// Frames read from the ring per viewer per turn at most.
pub const BATCH: usize = 64;
/// A viewer about to be sent frames older than this is moved to the newest keyframe.
const MAX_BEHIND_MS: i64 = 3000;

/// One viewer's sending state: whoever holds it writes to the viewer.
#[derive(Debug)]
pub struct Viewer<W> {
    pub tx: Sender<W>,
    pub mux: ViewerMux,
    pub sub: Subscription,
    /// JSON text events on (`events=1`): a `dropped` event on resync, `codec_changed`.
    pub events: bool,
    /// Frames received before this are the GOP cache, not live: their age says nothing about
    /// the latency the gateway adds.
    pub joined: Instant,
    /// The last time anything was written (for the idle ping), shared with the session: it
    /// reads it while a writer holds the viewer.
    pub sent_at: Arc<SentAt>,
    /// A batch a writer could not write whole: its oldest live frame's arrival, recorded when
    /// the session has written the rest.
    pub unsent_since: Option<Instant>,
}

/// When a viewer was last written to, kept where its session can read it without taking the
/// viewer back from a writer.
#[derive(Debug)]
pub struct SentAt {
    origin: Instant,
    /// Milliseconds after `origin`.
    ms: AtomicU64,
}

impl SentAt {
    /// Written to now.
    pub fn new() -> Arc<SentAt> {
        Arc::new(SentAt {
            origin: Instant::now(),
            ms: AtomicU64::new(0),
        })
    }

    fn note(&self, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.origin).as_millis())
            .unwrap_or(u64::MAX);
        self.ms.store(ms, Ordering::Relaxed);
    }

    /// How long nothing was written.
    pub fn idle(&self) -> Duration {
        let at = Duration::from_millis(self.ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(at)
    }
}

/// What one read from the ring turned into.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// Messages are queued; `Some` with the oldest live frame's arrival, for the delay
    /// histogram.
    Queued(Option<Instant>),
    /// The viewer fell behind and continues at the newest keyframe (a `dropped` event is
    /// queued with `events=1`); nothing else is queued.
    Resynced,
    /// The stream was removed.
    Closed,
}

impl<W: AsyncWrite + Unpin> Viewer<W> {
    /// Turns a read from the ring (`frames`, after `r`) into queued messages. `outs` is
    /// scratch space; `now_ms` the wall clock (read once for many viewers by a writer: it only
    /// decides whether the viewer is seconds behind).
    pub fn take(
        &mut self,
        r: Result<usize, RecvError>,
        frames: &mut Vec<Frame>,
        outs: &mut Vec<Out>,
        now_ms: i64,
    ) -> Taken {
        // Behind: the ring moved past this viewer, or what it would get now is older than
        // MAX_BEHIND_MS. Either way it continues at the newest keyframe.
        let skipped = match r {
            Ok(_) => {
                let behind_ms = frames.first().map_or(0, |f| now_ms - f.wall_ms);
                if behind_ms > MAX_BEHIND_MS {
                    Some(self.sub.skip_to_newest_key()).filter(|&n| n > 0)
                } else {
                    None
                }
            }
            Err(RecvError::Lagged { skipped }) => Some(skipped),
            Err(RecvError::Closed) => {
                frames.clear();
                return Taken::Closed;
            }
        };
        if let Some(skipped) = skipped {
            debug!(stream = %self.sub.hub().id, skipped, "viewer behind; resyncing at the newest keyframe");
            frames.clear();
            self.mux.resync();
            if self.events {
                self.tx.feed(event(
                    serde_json::json!({"type": "dropped", "frames": skipped}),
                ));
            }
            return Taken::Resynced;
        }
        // The batch's worst case: its oldest live frame.
        let joined = self.joined;
        let oldest_live = frames
            .iter()
            .map(|f| f.received)
            .filter(|&r| r >= joined)
            .min();
        for f in frames.drain(..) {
            self.mux.push(&f, outs);
        }
        for o in outs.drain(..) {
            self.tx.feed(match o {
                Out::Codecs(b) | Out::Init(b) => Message::binary(b),
                Out::Fragment { head, data } => Message::Binary(vec![head, data]),
                Out::CodecChanged(codecs) => {
                    if !self.events {
                        continue;
                    }
                    event(serde_json::json!({"type": "codec_changed", "codecs": codecs}))
                }
            });
        }
        Taken::Queued(oldest_live)
    }

    /// Notes a batch written in full (one clock read, per viewer and batch: the delay is this
    /// viewer's own).
    pub fn sent(&mut self, oldest_live: Option<Instant>) {
        let now = Instant::now();
        if let Some(r) = oldest_live {
            let delay = now.saturating_duration_since(r);
            self.sub.hub().stats.mse_send_delay.record(delay);
        }
        self.sent_at.note(now);
    }
}
