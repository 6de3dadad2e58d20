//! `GET /ws/archive?stream_id&start[&duration]`: archive playback over websocket, the
//! original's protocol (§9.2 of its description) done right.
//!
//! Same as the original: the upgrade happens first and every error is a 1011 close with the
//! original's reason; binary `0x09`+codecs, binary init, then binary `moof`+`mdat` fragments
//! as fast as the socket takes them; text `pause` after every 5 minutes of media, resumed by
//! text `more` (one early `more` is remembered); text `ping` → `pong`; text `eos` at the end.
//!
//! Better: playback starts at `start` exactly (see `playback`), files come from disk or S3, a
//! codec change between files sends a new `0x09`+init, every sample is sent (no lost final
//! flush), one task owns the socket (no concurrent writes). Ours, opt-in: `gaps=keep` keeps
//! gaps on the media timeline instead of collapsing them; `events=1` sends JSON text events
//! (`{"type":"gap","from","to"}`, `{"type":"seeked","t"}`); `realtime=1` paces output at
//! recording speed; the text command `{"type":"seek","t":<unix seconds>}` jumps (the window
//! moves with it and keeps its length; the media timeline continues, so a plain MSE client just
//! keeps playing).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde::Deserialize;
use tokio::time::Instant;
use tracing::debug;
use uuid::Uuid;

use super::index::Segment;
use super::playback::{self, Planner};
use super::{Archive, StreamArchive};
use crate::wsproto::{close, codecs_message, event, flag, Inbound, Io, Message, Socket, WsError};

/// Media sent between two `pause` messages.
const PAUSE_EVERY_90K: i64 = 5 * 60 * 90_000;
/// Fragment length of playback output.
const FRAGMENT_90K: i64 = 45_000;
/// A send blocked this long means the client is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Deserialize)]
pub struct ArchiveQuery {
    pub stream_id: Option<String>,
    pub start: Option<String>,
    pub duration: Option<String>,
    pub gaps: Option<String>,
    pub events: Option<String>,
    pub realtime: Option<String>,
}

/// The session's state between messages.
struct Session {
    socket: Socket<Io>,
    events: bool,
    keep_gaps: bool,
    realtime: bool,
    /// Media sent since the last `pause`.
    since_pause_90k: i64,
    /// A `more` arrived before it was needed.
    more_pending: bool,
    params: Option<Arc<crate::media::StreamParams>>,
    sequence: u32,
    /// Gap time inserted into the timeline so far (`gaps=keep`).
    shift_90k: i64,
    /// End of what was sent on the media timeline, 90 kHz.
    end_90k: i64,
    paced_from: Option<(Instant, i64)>,
}

/// A client's text message on `/ws/archive`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Ping,
    /// Send the next batch (flow control).
    More,
    /// `{"type":"seek","t":<Unix seconds>}`: play from this time, Unix ms.
    Seek(i64),
    /// Anything else (the original ignores it too).
    Ignored,
}

/// Latest seek target accepted: the year 3000, Unix ms (a seek past it is ignored).
const MAX_SEEK_MS: i64 = 32_503_680_000_000;

/// Reads a client's text message. Untrusted input: a seek to a time that is not finite, before
/// 1970 or after [`MAX_SEEK_MS`] is ignored.
pub fn parse_command(text: &str) -> Command {
    match text.trim() {
        "ping" => Command::Ping,
        "more" => Command::More,
        other => {
            let v: serde_json::Value = serde_json::from_str(other).unwrap_or_default();
            match (v["type"].as_str(), v["t"].as_f64()) {
                (Some("seek"), Some(t)) if t.is_finite() => {
                    let ms = (t * 1000.0).round();
                    if (0.0..=MAX_SEEK_MS as f64).contains(&ms) {
                        Command::Seek(ms as i64)
                    } else {
                        Command::Ignored
                    }
                }
                _ => Command::Ignored,
            }
        }
    }
}

/// Why sending stopped.
enum Stop {
    /// The client left or the socket failed.
    Gone,
    /// A seek to this time (Unix ms).
    Seek(i64),
}

/// Plays the archive to an upgraded socket until the window ends or the client leaves.
/// `archive`: `None` when archive serving is off (the client is told so).
pub async fn session(archive: Option<Arc<Archive>>, socket: Socket<Io>, q: ArchiveQuery) {
    let mut s = Session {
        socket,
        events: flag(&q.events, false),
        keep_gaps: q.gaps.as_deref() == Some("keep"),
        realtime: flag(&q.realtime, false),
        since_pause_90k: 0,
        more_pending: false,
        params: None,
        sequence: 0,
        shift_90k: 0,
        end_90k: 0,
        paced_from: None,
    };
    let Some(id) = q
        .stream_id
        .as_deref()
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
    else {
        let _ = s.socket.close(close("Invalid stream_id")).await;
        return;
    };
    let Some(start_ms) = q
        .start
        .as_deref()
        .and_then(|t| t.trim().parse::<f64>().ok())
        .filter(|t| t.is_finite())
        .map(|t| (t * 1000.0).round() as i64)
    else {
        let _ = s
            .socket
            .close(close("Invalid start time (use Unix timestamp)"))
            .await;
        return;
    };
    let end_ms = q
        .duration
        .as_deref()
        .and_then(|d| d.trim().parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d > 0.0)
        .map(|d| start_ms.saturating_add((d * 1000.0).round() as i64))
        .unwrap_or_else(|| crate::media::unix_ms_now() + 365 * 86_400_000);
    let sa = match &archive {
        None => {
            let _ = s
                .socket
                .close(close(
                    "Archive not available: archive serving not enabled globally",
                ))
                .await;
            return;
        }
        Some(a) => match a.resolve(&id).await {
            Ok(sa) => sa,
            Err(e) => {
                let _ = s
                    .socket
                    .close(close(&format!("Archive not available: {e}")))
                    .await;
                return;
            }
        },
    };
    if sa.view(start_ms, end_ms).is_empty() {
        let _ = s
            .socket
            .close(close("No segments found for this time range"))
            .await;
        return;
    }
    let mut from_ms = start_ms;
    let mut end_ms = end_ms;
    loop {
        let tolerance_ms = archive
            .as_ref()
            .map_or(500, |a| a.config().gap_tolerance_ms);
        match s.play(tolerance_ms, &sa, from_ms, end_ms).await {
            Ok(true) => {
                let _ = s.socket.send(Message::Text("eos".into())).await;
                let _ = s.socket.close(Message::Close(1000, String::new())).await;
                return;
            }
            Ok(false) => {
                let _ = s
                    .socket
                    .close(close("No valid archive segments found"))
                    .await;
                return;
            }
            Err(Stop::Gone) => return,
            Err(Stop::Seek(t)) => {
                debug!(t, "seek");
                // The window moves with the seek and keeps its length.
                end_ms = t.saturating_add(end_ms.saturating_sub(from_ms));
                from_ms = t;
                if s.events {
                    let _ = s
                        .send(event(
                            serde_json::json!({"type": "seeked", "t": t as f64 / 1000.0}),
                        ))
                        .await;
                }
            }
        }
    }
}

impl Session {
    async fn send(&mut self, m: Message) -> Result<(), Stop> {
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.send(m)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Stop::Gone),
        }
    }

    /// Handles one client message; returns a seek if asked for one.
    async fn on_message(&mut self, m: Option<Result<Inbound, WsError>>) -> Result<(), Stop> {
        match m {
            None | Some(Err(_)) | Some(Ok(Inbound::Close(_))) => Err(Stop::Gone),
            Some(Ok(Inbound::Text(t))) => match parse_command(&t) {
                Command::Ping => self.send(Message::Text("pong".into())).await,
                Command::More => {
                    self.more_pending = true;
                    Ok(())
                }
                Command::Seek(ms) => Err(Stop::Seek(ms)),
                Command::Ignored => Ok(()),
            },
            Some(Ok(_)) => Ok(()),
        }
    }

    /// Reads client messages without blocking (pings, `more`, seeks).
    async fn poll_client(&mut self) -> Result<(), Stop> {
        loop {
            let m = tokio::select! {
                biased;
                m = self.socket.recv() => m,
                _ = std::future::ready(()) => return Ok(()),
            };
            self.on_message(m).await?;
        }
    }

    /// Waits for `more` (answering pings meanwhile).
    async fn wait_more(&mut self) -> Result<(), Stop> {
        while !self.more_pending {
            let m = self.socket.recv().await;
            self.on_message(m).await?;
        }
        self.more_pending = false;
        Ok(())
    }

    /// Plays `[from_ms, end_ms)`; `Ok(true)` at the end, `Ok(false)` if nothing was readable.
    async fn play(
        &mut self,
        tolerance_ms: i64,
        sa: &Arc<StreamArchive>,
        from_ms: i64,
        end_ms: i64,
    ) -> Result<bool, Stop> {
        let base_90k = self.end_90k;
        let mut planner = Planner::new(from_ms, end_ms);
        let mut last: Option<Segment> = None;
        let mut played_any = false;
        loop {
            // The next file: re-read from the index each time, so files closed meanwhile
            // (a stream still recording) are played too.
            let after = last.as_ref().map(|l| (l.start_ms, l.name_s));
            let Some(seg) = sa.next_segment(from_ms, end_ms, after) else {
                return Ok(played_any);
            };
            self.poll_client().await?;
            let movie = match sa.open(&seg).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("skipping an unreadable archive file: {e}");
                    last = Some(seg);
                    continue;
                }
            };
            last = Some(seg.clone());
            let mut plan = planner.file(&movie, seg.start_ms, tolerance_ms);
            if plan.samples.is_empty() {
                continue;
            }
            if let Some((from, to)) = plan.gap_before {
                if self.keep_gaps {
                    self.shift_90k += (to - from) * 90;
                }
                if self.events {
                    self.send(event(serde_json::json!({
                        "type": "gap", "from": from as f64 / 1000.0, "to": to as f64 / 1000.0
                    })))
                    .await?;
                }
            }
            let params = plan.params.take().unwrap_or_default();
            if self.params.as_ref().is_none_or(|p| !p.same_codecs(&params)) {
                self.send(codecs_message(&params)).await?;
                let init = crate::mp4::fmp4::init_segment(&params);
                self.send(Message::binary(init)).await?;
                self.params = Some(Arc::clone(&params));
            }
            for s in &mut plan.samples {
                s.dts_90k += base_90k + self.shift_90k;
            }
            let frags =
                playback::fragments(&plan.samples, &params, FRAGMENT_90K, &mut self.sequence);
            for f in frags {
                if self.realtime {
                    self.pace(f.start_90k).await?;
                }
                let mut buf = BytesMut::with_capacity(f.len);
                for c in &f.chunks {
                    buf.extend_from_slice(c);
                }
                self.send(Message::binary(buf.freeze())).await?;
                played_any = true;
                self.end_90k = self.end_90k.max(f.start_90k + f.duration_90k);
                self.since_pause_90k += f.duration_90k;
                if self.since_pause_90k >= PAUSE_EVERY_90K {
                    self.since_pause_90k = 0;
                    self.send(Message::Text("pause".into())).await?;
                    self.wait_more().await?;
                    self.paced_from = None;
                }
                self.poll_client().await?;
            }
        }
    }

    /// Sleeps until media time `t_90k` is due at recording speed.
    async fn pace(&mut self, t_90k: i64) -> Result<(), Stop> {
        let (at, t0) = *self.paced_from.get_or_insert((Instant::now(), t_90k));
        let due = at + Duration::from_micros(((t_90k - t0).max(0) as u64) * 100 / 9);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => return Ok(()),
                m = self.socket.recv() => self.on_message(m).await?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_commands_are_read_and_absurd_seeks_ignored() {
        assert_eq!(parse_command(" ping\n"), Command::Ping);
        assert_eq!(parse_command("more"), Command::More);
        assert_eq!(
            parse_command(r#"{"type":"seek","t":1700000000.25}"#),
            Command::Seek(1_700_000_000_250)
        );
        for junk in [
            r#"{"type":"seek","t":1e300}"#,
            r#"{"type":"seek","t":-5}"#,
            r#"{"type":"seek","t":"soon"}"#,
            r#"{"type":"seek"}"#,
            "{",
            "",
            "\u{0}",
        ] {
            assert_eq!(parse_command(junk), Command::Ignored, "{junk:?}");
        }
    }
}
