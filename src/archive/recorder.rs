//! The recorder: one consumer of a stream's hub ring, cutting it into archive files.
//!
//! Cutting is the segmenter's file mode (`hls::segmenter`, pure): a file starts at a keyframe,
//! ends at the first keyframe at or after `ms_per_file` (the first file of a stream is shorter
//! by a per-stream amount, so streams do not all cut at once), and holds fragments of about
//! `fragment_ms`, each starting at a keyframe when there is one. A new epoch (reconnect,
//! timestamp jump, new codec parameters), the camera going offline, the recorder lagging and
//! shutdown each close the file with that reason.
//!
//! The ring never waits for the recorder: if disk writes fall behind, the recorder is told
//! how many frames it lost, says so, and starts a new file at the next keyframe. File writes run
//! on the blocking pool, one batch of segmenter events per call.

use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::file::OpenFile;
use super::index::{EndReason, Location, Segment};
use super::StreamArchive;
use crate::hub::{RecvError, StreamHub, WakeAt};
use crate::media::{rescale, StreamParams};
use crate::mp4::fmp4;
use crate::mp4::segmenter::{Event, Segmenter, Targets};

const BATCH: usize = 64;
/// The recorder wakes for the frame that ends its fragment, or once frames have pended this
/// long. Frames pending when it stops or the camera goes offline are read at once and go in
/// the file.
const MAX_PENDING: std::time::Duration = std::time::Duration::from_secs(1);

/// The file being written and what it needs to be closed.
struct Open {
    file: OpenFile,
    name_s: i64,
    start_ms: i64,
    /// Media time written so far, 90 kHz (where the next fragment starts).
    elapsed_90k: i64,
    lead_timescale: u32,
}

/// What the blocking half does, in order.
enum Op {
    Event(Event),
    /// The file open now (or the next `SegmentEnd`) ends for this reason.
    Reason(EndReason),
}

/// The blocking half: applies segmenter events to files.
struct Writer {
    archive: Arc<StreamArchive>,
    params: Option<Arc<StreamParams>>,
    open: Option<Open>,
    /// Why the open file will end, if it ends now (rotation unless something happened).
    reason: EndReason,
    /// The last write error, reported once per file.
    failed: bool,
}

impl Writer {
    fn apply(&mut self, ops: Vec<Op>) {
        for op in ops {
            match op {
                Op::Reason(r) if self.open.is_some() => self.reason = r,
                Op::Reason(_) => {}
                Op::Event(Event::Init { params, .. }) => self.params = Some(params),
                Op::Event(Event::SegmentStart { pdt_ms, .. }) => self.start(pdt_ms),
                Op::Event(Event::Part(part)) => {
                    self.append(&part.chunks, part.duration_90k, part.independent)
                }
                Op::Event(Event::SegmentEnd { duration_90k, .. }) => self.end(duration_90k),
            }
        }
    }

    fn start(&mut self, start_ms: i64) {
        if let Some(open) = self.open.take() {
            // A segment start without an end: should not happen; keep what was written.
            let d = open.elapsed_90k;
            self.open = Some(open);
            self.end(d);
        }
        let Some(params) = self.params.clone() else {
            return;
        };
        let name_s = self.archive.free_name(start_ms);
        let name = super::index::file_name(&self.archive.id, name_s);
        let (init, fields) = fmp4::file_init_segment(&params, 0);
        let lead_timescale = params.timescale(params.lead());
        match OpenFile::create(&self.archive.dir, &name, start_ms, &init, fields, 1) {
            Ok(file) => {
                self.failed = false;
                self.archive.status.set_writing(Some(name_s));
                self.open = Some(Open {
                    file,
                    name_s,
                    start_ms,
                    elapsed_90k: 0,
                    lead_timescale,
                });
            }
            Err(e) => self.fail(&format!("cannot create {name}: {e}")),
        }
    }

    fn append(&mut self, chunks: &[Bytes], duration_90k: i64, key: bool) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        let key_time =
            key.then(|| rescale(open.elapsed_90k, 90_000, open.lead_timescale).max(0) as u64);
        if let Err(e) = open.file.append(chunks, key_time) {
            let name = super::index::file_name(&self.archive.id, open.name_s);
            // Keep what is on disk: close the file with the fragments written so far.
            let d = open.elapsed_90k;
            self.reason = EndReason::WriteError;
            self.end(d);
            self.fail(&format!("cannot write {name}: {e}"));
            return;
        }
        open.elapsed_90k += duration_90k;
        // Listed (and readable) once it holds a whole fragment.
        self.archive.set_growing(Some(Segment {
            name_s: open.name_s,
            start_ms: open.start_ms,
            duration_ms: open.elapsed_90k / 90,
            bytes: open.file.len(),
            location: Location::Local,
            end: EndReason::Unknown,
        }));
    }

    fn end(&mut self, duration_90k: i64) {
        let reason = std::mem::replace(&mut self.reason, EndReason::Rotation);
        let Some(open) = self.open.take() else {
            return;
        };
        self.archive.status.set_writing(None);
        // The file stays listed as growing (and readable) while it is closed; `closed` swaps
        // it for the index entry, so it is never missing from either.
        let duration_ms = (duration_90k / 90).max(0);
        if open.elapsed_90k == 0 {
            self.archive.set_growing(None);
            let _ = open.file.discard();
            return;
        }
        let name = super::index::file_name(&self.archive.id, open.name_s);
        match open
            .file
            .finish(duration_ms as u64, self.archive.s3.is_none())
        {
            Ok(closed) => {
                let seg = Segment {
                    name_s: open.name_s,
                    start_ms: open.start_ms,
                    duration_ms,
                    bytes: closed.bytes,
                    location: Location::Local,
                    end: reason,
                };
                self.archive.closed(seg);
            }
            Err(e) => {
                self.archive.set_growing(None);
                self.fail(&format!("cannot close {name}: {e}"));
            }
        }
    }

    fn fail(&mut self, message: &str) {
        if !self.failed {
            warn!("{message}; live output is not affected, recording resumes at the next file");
        }
        self.failed = true;
        self.archive.status.error(message);
    }
}

/// A part of `span` in `[span / 2, span)`, fixed per stream: how soon a stream makes its first
/// cut and takes its second thumbnail, so that streams started together do not all do it at
/// once.
fn stagger(span: i64, id: &uuid::Uuid) -> i64 {
    let h = (id.as_u128() as u64 % 1000) as i64;
    span / 2 + span / 2 * h / 1000
}

/// How long the first file of this stream lasts: between half and all of `ms_per_file`.
fn first_file_90k(archive: &StreamArchive) -> i64 {
    stagger(archive.ms_per_file.max(1) * 90, &archive.id)
}

/// Records `hub` into `archive` until `cancel` fires or the stream is removed; the open file is
/// closed cleanly either way, ending for the reason in `why` when one is set before `cancel`
/// (a fleet hand-off), else `server_stopped`.
pub async fn run(
    hub: Arc<StreamHub>,
    archive: Arc<StreamArchive>,
    cancel: CancellationToken,
    why: Arc<std::sync::OnceLock<EndReason>>,
    thumbs: Option<(Arc<dyn super::thumbs::Thumbnailer>, i64)>,
) {
    let span = tracing::info_span!("archive", stream = %hub.id);
    async move {
        info!(dir = %archive.dir.display(), "recording");
        let mut seg = Segmenter::new(Targets::files(
            archive.ms_per_file * 90,
            archive.fragment_ms * 90,
        ));
        seg.shorten_next_segment(first_file_90k(&archive));
        let mut writer = Some(Writer {
            archive: Arc::clone(&archive),
            params: None,
            open: None,
            reason: EndReason::Rotation,
            failed: false,
        });
        let mut sub = hub.subscribe_from_oldest_key();
        let mut health = hub.watch_health();
        let mut frames = Vec::with_capacity(BATCH);
        let mut events = Vec::new();
        let mut ops = Vec::new();
        let mut epoch = None;
        let every_ms = thumbs.as_ref().map_or(0, |t| t.1);
        let mut pace = super::thumbs::Pace::new(every_ms, stagger(every_ms, &archive.id));
        let thumb_busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        loop {
            let mut reason = None;
            let mut stopping = false;
            let wake = WakeAt::at_cut(seg.next_cut(), MAX_PENDING);
            tokio::select! {
                _ = cancel.cancelled() => {
                    stopping = true;
                    reason = Some(why.get().copied().unwrap_or(EndReason::ServerStopped));
                    let _ = sub.try_recv(&mut frames, usize::MAX);
                }
                changed = health.changed() => {
                    if changed.is_err() {
                        stopping = true;
                        reason = Some(EndReason::ServerStopped);
                    } else if !health.borrow_and_update().online {
                        reason = Some(EndReason::CameraOffline);
                        let _ = sub.try_recv(&mut frames, usize::MAX);
                    }
                }
                r = sub.recv_when(&mut frames, BATCH, wake) => match r {
                    Ok(_) => {}
                    Err(RecvError::Closed) => {
                        stopping = true;
                        reason = Some(EndReason::ServerStopped);
                    }
                    Err(RecvError::Lagged { skipped }) => {
                        warn!(skipped, "the recorder fell behind the stream; a new file starts at the next keyframe");
                        archive.status.lagged(skipped);
                        reason = Some(EndReason::RecorderLagged);
                    }
                },
            }
            for f in frames.drain(..) {
                if epoch.is_some_and(|e| e != f.epoch) {
                    // The segmenter closes the file on a new epoch; say why.
                    ops.push(Op::Reason(if health.borrow().online {
                        EndReason::Discontinuity
                    } else {
                        EndReason::CameraOffline
                    }));
                }
                epoch = Some(f.epoch);
                if let Some((maker, _)) = &thumbs {
                    if pace.take(&f) {
                        super::thumbs::take(&archive, maker, f.clone(), &thumb_busy);
                    }
                }
                seg.push(&f, false, &mut events);
                ops.extend(events.drain(..).map(Op::Event));
            }
            if let Some(r) = reason {
                ops.push(Op::Reason(r));
                seg.break_here(&mut events);
                ops.extend(events.drain(..).map(Op::Event));
            }
            if !ops.is_empty() {
                let batch = std::mem::take(&mut ops);
                let Some(mut w) = writer.take() else {
                    return;
                };
                match tokio::task::spawn_blocking(move || {
                    w.apply(batch);
                    w
                })
                .await
                {
                    Ok(w) => writer = Some(w),
                    Err(e) => {
                        warn!("the recorder's writer failed: {e}");
                        return;
                    }
                }
            }
            if stopping {
                info!(reason = ?reason, "recording stopped");
                return;
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::archive::Archive;
    use crate::hub::Limits;
    use crate::media::Frame;

    #[test]
    fn a_stagger_is_half_to_all_of_its_span() {
        for key in [0, 999, 1000, u128::MAX] {
            let gap = stagger(60_000, &uuid::Uuid::from_u128(key));
            assert!((30_000..60_000).contains(&gap), "{key}: {gap}");
        }
        assert_eq!(stagger(60_000, &uuid::Uuid::from_u128(100)), 33_000);
    }

    /// The recorder sleeps between fragment ends; frames it has pending when the camera drops
    /// still go in the file before it is closed.
    #[tokio::test]
    async fn frames_pending_when_the_camera_drops_go_in_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = "5f3a7c1e-0b8d-4a57-9c1f-2e6d8b4a9f10";
        let text = format!(
            "[archive]\nrecording = true\ndirectory = \"{d}\"\nms_per_file = 30000\n\
             [[rtsp_streams]]\nguid = \"{id}\"\nurl = \"rtsp://127.0.0.1:9/x\"\n\
             output_types = [\"mse\"]\n\
             archive = {{ recording = true, type = \"filesystem\", directory = \"{d}\", ms_per_file = 30000 }}\n",
            d = dir.path().display()
        );
        let cfg = crate::config::Config::from_str_at(&text, Path::new("t.toml")).expect("config");
        let archive =
            Archive::open(&cfg.archive, &cfg.streams, Arc::new(crate::events::Discard)).await;
        let sa = archive.known(&cfg.streams[0].id).expect("stream archive");
        let hub = StreamHub::new(cfg.streams[0].id, Limits::default());
        let start_ms = crate::media::unix_ms_now();
        let frame = |n: i64| {
            let mut f = Frame::test_video(n, n == 0, Bytes::from(vec![n as u8; 500]));
            f.wall_ms = start_ms + n * 40;
            f
        };
        hub.set_online(Arc::clone(&frame(0).params));
        archive.record(&cfg.streams[0], Arc::clone(&hub));
        hub.publish(frame(0));
        // The keyframe wakes the recorder; the next ten end no fragment, so it sleeps on them.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for n in 1..=10 {
            hub.publish(frame(n));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        hub.set_offline(Some("gone".into()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let seg = loop {
            let closed = sa.index.lock().expect("index").segments().first().cloned();
            if let Some(s) = closed {
                break s;
            }
            assert!(tokio::time::Instant::now() < deadline, "no file closed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(seg.end, EndReason::CameraOffline);
        assert_eq!(
            seg.duration_ms,
            11 * 40,
            "every frame published is in the file"
        );
        assert_eq!(
            hub.buffered(),
            (0, 0),
            "the frames were freed once recorded"
        );
    }
}
