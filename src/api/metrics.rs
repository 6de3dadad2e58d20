//! `GET /metrics`: Prometheus text format, rendered by metrics-exporter-prometheus.
//!
//! The gateway keeps its numbers where they are cheapest to keep (relaxed atomics in the hub,
//! the archive's status, the HLS window); a scrape copies them into a private (not global)
//! recorder and renders it. So nothing on the media path calls into a metrics library, and the
//! values are exactly what `/status` shows.
//!
//! Label names are stable: `stream` (the stream UUID), `output` (`mse`, `hls`). Every metric
//! and its meaning is listed in `docs/operations.md`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use metrics::{counter, gauge, Label};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::Ctx;
use crate::media::unix_ms_now;

/// The recorder behind `/metrics` and what rates are computed from.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Per stream: (Unix ms, frames in, bytes in) at the previous scrape, for fps and bitrate.
    last: Mutex<HashMap<uuid::Uuid, (i64, u64, u64)>>,
    started_ms: i64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None)
    }
}

/// Declares every metric once: its variant, kind, name and help text. The registration, the
/// updates (`Metric::X.name()`) and the table in docs/operations.md (checked by a test) all
/// follow this list.
macro_rules! metrics_table {
    ($($variant:ident $kind:ident $name:literal $help:literal,)*) => {
        /// Every metric `/metrics` renders.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Metric {
            $($variant,)*
        }

        impl Metric {
            pub const ALL: &'static [Metric] = &[$(Metric::$variant,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Metric::$variant => $name,)*
                }
            }

            pub fn help(self) -> &'static str {
                match self {
                    $(Metric::$variant => $help,)*
                }
            }

            /// `gauge` or `counter`, as Prometheus' `# TYPE` says.
            pub fn kind(self) -> &'static str {
                match self {
                    $(Metric::$variant => stringify!($kind),)*
                }
            }
        }
    };
}

metrics_table! {
    Streams gauge "video_server_streams"
        "Streams configured or added through the API.",
    WebsocketViewers gauge "video_server_websocket_viewers"
        "Viewers (websocket live and archive, WebRTC) now, against [limits] max_viewers.",
    ConnectionsOpen gauge "video_server_connections_open"
        "HTTP connections open now (video and API servers), against [limits] max_connections each.",
    ConnectionsRefusedTotal counter "video_server_connections_refused_total"
        "Connections refused with a 503 at [limits] max_connections.",
    ViewersRefusedTotal counter "video_server_viewers_refused_total"
        "Viewers refused with a 503 at [limits] max_viewers or max_viewers_per_stream.",
    StreamUp gauge "video_server_stream_up"
        "1 while frames flow from the camera.",
    StreamUpstreamRunning gauge "video_server_stream_upstream_running"
        "1 while the source task runs (on-demand streams stop it when idle).",
    StreamSessionsTotal counter "video_server_stream_sessions_total"
        "Camera sessions started (connects that delivered media).",
    StreamReconnectsTotal counter "video_server_stream_reconnects_total"
        "Camera sessions after the first one.",
    StreamFramesTotal counter "video_server_stream_frames_total"
        "Frames received (video and audio).",
    StreamBytesTotal counter "video_server_stream_bytes_total"
        "Payload bytes received.",
    StreamKeyframesTotal counter "video_server_stream_keyframes_total"
        "Video keyframes received.",
    StreamDiscontinuitiesTotal counter "video_server_stream_discontinuities_total"
        "Reconnects, SSRC and parameter changes (new epochs).",
    StreamRtpPacketsLostTotal counter "video_server_stream_rtp_packets_lost_total"
        "RTP packets the camera sent that never arrived (sequence number gaps).",
    StreamTimestampJumpsTotal counter "video_server_stream_timestamp_jumps_total"
        "Camera clock jumps re-stamped onto the stream timeline without losing a frame.",
    StreamReorderDepth gauge "video_server_stream_reorder_depth"
        "Video frames reordered (B-frames): decode-order depth in use.",
    StreamKeyframeIntervalSeconds gauge "video_server_stream_keyframe_interval_seconds"
        "Time between the last two keyframes.",
    StreamDiagnostic gauge "video_server_stream_diagnostic"
        "1 while a camera-configuration finding (label code: see docs/operations.md, Camera diagnostics) holds, else 0.",
    StreamCameraClockOffsetSeconds gauge "video_server_stream_camera_clock_offset_seconds"
        "The camera's wall clock minus the server's, from its RTCP sender reports (present once one arrived this session).",
    StreamMediaClockDriftPpm gauge "video_server_stream_media_clock_drift_ppm"
        "The camera's media (RTP) clock rate against the server's clock, ppm; positive runs fast (present after 20 s of a session).",
    StreamNominalFps gauge "video_server_stream_nominal_fps"
        "Frame rate the stream declares or shows.",
    StreamGopFrames gauge "video_server_stream_gop_frames"
        "Frames per GOP (keyframe interval times the frame rate).",
    StreamFramesPerSecond gauge "video_server_stream_frames_per_second"
        "Frames received per second since the previous scrape.",
    StreamBitrateBps gauge "video_server_stream_bitrate_bps"
        "Bits received per second since the previous scrape.",
    StreamGopCacheFrames gauge "video_server_stream_gop_cache_frames"
        "Frames in the stream's ring (the GOP cache).",
    StreamGopCacheBytes gauge "video_server_stream_gop_cache_bytes"
        "Bytes in the stream's ring (the GOP cache).",
    Viewers gauge "video_server_viewers"
        "Viewers, by output: MSE websockets; WebRTC sessions; HLS clients (address and User-Agent) that polled the playlist in the last 30 s.",
    FramesDroppedForSlowViewersTotal counter "video_server_frames_dropped_for_slow_viewers_total"
        "Frames slow viewers skipped when moved to a newer keyframe.",
    MseSendDelayP99Seconds gauge "video_server_mse_send_delay_p99_seconds"
        "99th percentile (bucket bound) of frame arrival to websocket write.",
    WebrtcKeyframeRequestsTotal counter "video_server_webrtc_keyframe_requests_total"
        "Keyframe requests (PLI/FIR) from WebRTC viewers, answered from the GOP cache.",
    WebrtcNacksTotal counter "video_server_webrtc_nacks_total"
        "NACKs from WebRTC viewers, answered from the retransmission buffer.",
    WebrtcSendDelayP99Seconds gauge "video_server_webrtc_send_delay_p99_seconds"
        "99th percentile (bucket bound) of frame arrival to RTP packets sent to WebRTC viewers.",
    WebrtcSessionsTotal counter "video_server_webrtc_sessions_total"
        "WebRTC (WHEP) sessions answered since start.",
    HlsActive gauge "video_server_hls_active"
        "1 while HLS is being requested (muxing runs).",
    HlsSegmentsTotal counter "video_server_hls_segments_total"
        "HLS segments produced (the media sequence of the newest one, plus one).",
    ArchiveRecording gauge "video_server_archive_recording"
        "1 while a file is being written.",
    ArchiveFilesWrittenTotal counter "video_server_archive_files_written_total"
        "Archive files closed.",
    ArchiveBytesWrittenTotal counter "video_server_archive_bytes_written_total"
        "Bytes of archive files closed.",
    ArchiveFramesLostTotal counter "video_server_archive_frames_lost_total"
        "Frames the recorder skipped because it fell behind.",
    ArchiveDeletedFilesTotal counter "video_server_archive_deleted_files_total"
        "Archive files deleted by retention.",
    ArchiveDeletedBytesTotal counter "video_server_archive_deleted_bytes_total"
        "Bytes deleted by retention.",
    ArchiveError gauge "video_server_archive_error"
        "1 if the recorder's or uploader's last attempt failed.",
    ArchiveSegments gauge "video_server_archive_segments"
        "Archive files indexed.",
    ArchiveBytes gauge "video_server_archive_bytes"
        "Bytes of archive files indexed.",
    ArchiveOldestAgeSeconds gauge "video_server_archive_oldest_age_seconds"
        "Age of the oldest archive file.",
    ArchiveWriteLagSeconds gauge "video_server_archive_write_lag_seconds"
        "How far the file being written trails the wall clock.",
    ArchiveS3CallsTotal counter "video_server_archive_s3_calls_total"
        "S3 calls sent by this process, by operation (`op`: list, put, head, get, delete; a multipart upload counts once).",
    ArchiveUploadBacklogFiles gauge "video_server_archive_upload_backlog_files"
        "Files waiting in the S3 upload spool.",
    ArchiveUploadBacklogBytes gauge "video_server_archive_upload_backlog_bytes"
        "Bytes waiting in the S3 upload spool.",
    ArchiveUploadBacklogOldestAgeSeconds gauge "video_server_archive_upload_backlog_oldest_age_seconds"
        "Age of the oldest file waiting for upload.",
    UptimeSeconds gauge "video_server_uptime_seconds"
        "Time since the process started.",
    SnapshotRequestsTotal counter "video_server_snapshot_requests_total"
        "Snapshot requests answered from a keyframe or the last picture (`/snapshot/{id}.jpg`).",
    SnapshotDecodesTotal counter "video_server_snapshot_decodes_total"
        "Keyframes decoded for snapshots (one per keyframe and size, however many asked).",
    SnapshotDecodesFfmpegTotal counter "video_server_snapshot_decodes_ffmpeg_total"
        "Of those, decoded by an ffmpeg process (H.265, or H.264 that OpenH264 could not decode).",
    WebhookEventsDroppedTotal counter "video_server_webhook_events_dropped_total"
        "Webhook events dropped because a webhook's queue was full (only with [[webhooks]]).",
    ProcessStartTimeSeconds gauge "process_start_time_seconds"
        "Unix time the process started.",
    ProcessCpuSeconds gauge "process_cpu_seconds"
        "CPU time the process used (user and system), from /proc/self/stat.",
    ProcessResidentMemoryBytes gauge "process_resident_memory_bytes"
        "Resident memory (VmRSS), from /proc/self/status.",
    ProcessVirtualMemoryBytes gauge "process_virtual_memory_bytes"
        "Virtual memory (VmSize), from /proc/self/status.",
    ProcessThreads gauge "process_threads"
        "Threads of the process.",
    ProcessOpenFds gauge "process_open_fds"
        "Open file descriptors.",
}

impl Metrics {
    /// `node`: in a fleet, this node's id, carried by every metric as the `node` label.
    pub fn new(node: Option<&str>) -> Metrics {
        let mut builder = PrometheusBuilder::new();
        if let Some(node) = node {
            builder = builder.add_global_label("node", node);
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for m in Metric::ALL {
                match m.kind() {
                    "counter" => metrics::describe_counter!(m.name(), m.help()),
                    _ => metrics::describe_gauge!(m.name(), m.help()),
                }
            }
        });
        Metrics {
            recorder,
            handle,
            last: Mutex::new(HashMap::new()),
            started_ms: unix_ms_now(),
        }
    }

    /// Copies the current values in and renders the text format.
    pub fn render(&self, ctx: &Ctx) -> String {
        metrics::with_local_recorder(&self.recorder, || self.collect(ctx));
        self.handle.render()
    }

    fn collect(&self, ctx: &Ctx) {
        let now = unix_ms_now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let streams = ctx.streams.list();
        last.retain(|id, _| streams.iter().any(|s| s.config.id == *id));
        gauge!(Metric::Streams.name()).set(streams.len() as f64);
        let server = &ctx.server_stats;
        gauge!(Metric::WebsocketViewers.name())
            .set(server.ws_viewers.load(Ordering::Relaxed) as f64);
        gauge!(Metric::ConnectionsOpen.name())
            .set(server.open_connections.load(Ordering::Relaxed) as f64);
        counter!(Metric::ConnectionsRefusedTotal.name())
            .absolute(server.refused_connections.load(Ordering::Relaxed));
        counter!(Metric::ViewersRefusedTotal.name())
            .absolute(server.refused_viewers.load(Ordering::Relaxed));
        counter!(Metric::WebrtcSessionsTotal.name())
            .absolute(ctx.webrtc.stats().sessions_total.load(Ordering::Relaxed));
        for s in &streams {
            let id = s.config.id.to_string();
            let l = || vec![Label::new("stream", id.clone())];
            let h = s.hub.health();
            let st = &s.hub.stats;
            let frames = st.frames_in.load(Ordering::Relaxed);
            let bytes = st.bytes_in.load(Ordering::Relaxed);
            gauge!(Metric::StreamUp.name(), l()).set(f64::from(u8::from(h.online)));
            gauge!(Metric::StreamUpstreamRunning.name(), l()).set(f64::from(u8::from(s.streaming)));
            counter!(Metric::StreamSessionsTotal.name(), l())
                .absolute(st.sessions.load(Ordering::Relaxed));
            counter!(Metric::StreamReconnectsTotal.name(), l())
                .absolute(st.sessions.load(Ordering::Relaxed).saturating_sub(1));
            counter!(Metric::StreamFramesTotal.name(), l()).absolute(frames);
            counter!(Metric::StreamBytesTotal.name(), l()).absolute(bytes);
            counter!(Metric::StreamKeyframesTotal.name(), l())
                .absolute(st.keyframes_in.load(Ordering::Relaxed));
            counter!(Metric::StreamDiscontinuitiesTotal.name(), l())
                .absolute(st.discontinuities.load(Ordering::Relaxed));
            counter!(Metric::StreamRtpPacketsLostTotal.name(), l())
                .absolute(st.rtp_packets_lost.load(Ordering::Relaxed));
            counter!(Metric::StreamTimestampJumpsTotal.name(), l())
                .absolute(st.timestamp_jumps.load(Ordering::Relaxed));
            gauge!(Metric::StreamReorderDepth.name(), l())
                .set(st.reorder_depth.load(Ordering::Relaxed) as f64);
            let findings = s.hub.diagnostics();
            for code in crate::hub::diagnostics::Code::ALL {
                let on = findings.iter().any(|d| d.code == code);
                gauge!(
                    Metric::StreamDiagnostic.name(),
                    vec![
                        Label::new("stream", id.clone()),
                        Label::new("code", code.name())
                    ]
                )
                .set(f64::from(u8::from(on)));
            }
            if let Some(ms) = st.clock.offset_ms() {
                gauge!(Metric::StreamCameraClockOffsetSeconds.name(), l()).set(ms as f64 / 1000.0);
            }
            if let Some(ppm) = st.clock.drift_ppm() {
                gauge!(Metric::StreamMediaClockDriftPpm.name(), l()).set(ppm);
            }
            let gop_90k = st.keyframe_interval_90k.load(Ordering::Relaxed);
            gauge!(Metric::StreamKeyframeIntervalSeconds.name(), l())
                .set(gop_90k as f64 / 90_000.0);
            if let Some(fps) = h
                .params
                .as_ref()
                .and_then(|p| p.video.as_ref())
                .and_then(|v| v.frame_rate)
                .filter(|&(_, d)| d > 0)
                .map(|(n, d)| f64::from(n) / f64::from(d))
            {
                gauge!(Metric::StreamNominalFps.name(), l()).set(fps);
                if gop_90k > 0 {
                    gauge!(Metric::StreamGopFrames.name(), l())
                        .set((gop_90k as f64 / 90_000.0 * fps).round());
                }
            }
            // Measured rates since the previous scrape (0 until there is one).
            let (fps, bps) = match last.insert(s.config.id, (now, frames, bytes)) {
                Some((t, f, b)) if now > t => {
                    let secs = (now - t) as f64 / 1000.0;
                    (
                        frames.saturating_sub(f) as f64 / secs,
                        bytes.saturating_sub(b) as f64 * 8.0 / secs,
                    )
                }
                _ => (0.0, 0.0),
            };
            gauge!(Metric::StreamFramesPerSecond.name(), l()).set(fps);
            gauge!(Metric::StreamBitrateBps.name(), l()).set(bps);
            let (buffered_frames, buffered_bytes) = s.hub.buffered();
            gauge!(Metric::StreamGopCacheFrames.name(), l()).set(buffered_frames as f64);
            gauge!(Metric::StreamGopCacheBytes.name(), l()).set(buffered_bytes as f64);
            let mse = vec![
                Label::new("stream", id.clone()),
                Label::new("output", "mse"),
            ];
            gauge!(Metric::Viewers.name(), mse.clone())
                .set(st.mse_viewers.load(Ordering::Relaxed) as f64);
            counter!(Metric::FramesDroppedForSlowViewersTotal.name(), mse)
                .absolute(st.frames_dropped_for_slow_viewers.load(Ordering::Relaxed));
            let delay = st.mse_send_delay.summary();
            if let Some(p99) = delay.p99_ms_at_most {
                gauge!(Metric::MseSendDelayP99Seconds.name(), l()).set(p99 / 1000.0);
            }
            if s.config.outputs.webrtc {
                let webrtc = vec![
                    Label::new("stream", id.clone()),
                    Label::new("output", "webrtc"),
                ];
                gauge!(Metric::Viewers.name(), webrtc)
                    .set(st.webrtc_viewers.load(Ordering::Relaxed) as f64);
                counter!(Metric::WebrtcKeyframeRequestsTotal.name(), l())
                    .absolute(st.webrtc_keyframe_requests.load(Ordering::Relaxed));
                counter!(Metric::WebrtcNacksTotal.name(), l())
                    .absolute(st.webrtc_nacks.load(Ordering::Relaxed));
                if let Some(p99) = st.webrtc_send_delay.summary().p99_ms_at_most {
                    gauge!(Metric::WebrtcSendDelayP99Seconds.name(), l()).set(p99 / 1000.0);
                }
            }
            if let Some(store) = ctx.streams.hls_store(&s.config.id) {
                let hls = vec![
                    Label::new("stream", id.clone()),
                    Label::new("output", "hls"),
                ];
                gauge!(Metric::HlsActive.name(), hls.clone())
                    .set(f64::from(u8::from(store.active())));
                gauge!(Metric::Viewers.name(), hls).set(store.sessions.count(now) as f64);
                if let Some(msn) = store.lock().last_msn() {
                    counter!(Metric::HlsSegmentsTotal.name(), l()).absolute(msn + 1);
                }
            }
        }
        if let Some(archive) = ctx.archive.as_ref() {
            self.collect_archive(archive, now);
        }
        counter!(Metric::SnapshotRequestsTotal.name())
            .absolute(ctx.snapshots.requests.load(Ordering::Relaxed));
        counter!(Metric::SnapshotDecodesTotal.name())
            .absolute(ctx.snapshots.decodes.load(Ordering::Relaxed));
        counter!(Metric::SnapshotDecodesFfmpegTotal.name())
            .absolute(ctx.snapshots.decodes_ffmpeg.load(Ordering::Relaxed));
        if !ctx.webhooks.is_empty() {
            counter!(Metric::WebhookEventsDroppedTotal.name())
                .absolute(ctx.webhooks.dropped.load(Ordering::Relaxed));
        }
        self.collect_process(now);
    }

    fn collect_archive(&self, archive: &crate::archive::Archive, now: i64) {
        if archive.uses_s3() {
            for (op, n) in crate::archive::s3::calls_sent() {
                counter!(
                    Metric::ArchiveS3CallsTotal.name(),
                    vec![Label::new("op", op)]
                )
                .absolute(n);
            }
        }
        let backlog = archive.upload_backlog_by_stream();
        for sa in archive.all() {
            let id = sa.id.to_string();
            let l = || vec![Label::new("stream", id.clone())];
            let st = sa.status.snapshot();
            gauge!(Metric::ArchiveRecording.name(), l())
                .set(f64::from(u8::from(st.writing.is_some())));
            counter!(Metric::ArchiveFilesWrittenTotal.name(), l()).absolute(st.files_written);
            counter!(Metric::ArchiveBytesWrittenTotal.name(), l()).absolute(st.bytes_written);
            counter!(Metric::ArchiveFramesLostTotal.name(), l()).absolute(st.frames_lost_lagging);
            counter!(Metric::ArchiveDeletedFilesTotal.name(), l()).absolute(st.deleted_files);
            counter!(Metric::ArchiveDeletedBytesTotal.name(), l()).absolute(st.deleted_bytes);
            gauge!(Metric::ArchiveError.name(), l())
                .set(f64::from(u8::from(st.last_error.is_some())));
            let (segments, bytes, oldest) = sa.with_index(|i| {
                (
                    i.segments().len(),
                    i.total_bytes(),
                    i.segments().first().map(|s| s.start_ms),
                )
            });
            gauge!(Metric::ArchiveSegments.name(), l()).set(segments as f64);
            gauge!(Metric::ArchiveBytes.name(), l()).set(bytes as f64);
            if let Some(oldest) = oldest {
                gauge!(Metric::ArchiveOldestAgeSeconds.name(), l())
                    .set((now - oldest) as f64 / 1000.0);
            }
            // The recorder's lag: how far the file being written trails the wall clock.
            if let Some(g) = sa.growing() {
                gauge!(Metric::ArchiveWriteLagSeconds.name(), l())
                    .set(((now - g.end_ms()) as f64 / 1000.0).max(0.0));
            }
            if sa.s3.is_some() {
                let b = backlog.get(&sa.id).copied().unwrap_or_default();
                gauge!(Metric::ArchiveUploadBacklogFiles.name(), l()).set(b.files as f64);
                gauge!(Metric::ArchiveUploadBacklogBytes.name(), l()).set(b.bytes as f64);
                gauge!(Metric::ArchiveUploadBacklogOldestAgeSeconds.name(), l()).set(
                    b.oldest_start_ms
                        .map_or(0.0, |t| ((now - t) as f64 / 1000.0).max(0.0)),
                );
            }
        }
    }

    fn collect_process(&self, now: i64) {
        gauge!(Metric::UptimeSeconds.name()).set((now - self.started_ms) as f64 / 1000.0);
        gauge!(Metric::ProcessStartTimeSeconds.name()).set(self.started_ms as f64 / 1000.0);
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may contain spaces): utime is 14, stime 15.
            if let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ticks = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
                if let (Some(u), Some(s)) = (ticks(14), ticks(15)) {
                    // Linux reports in USER_HZ, 100 on every platform Rust targets.
                    gauge!(Metric::ProcessCpuSeconds.name()).set((u + s) / 100.0);
                }
            }
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            for (key, name) in [
                ("VmRSS:", Metric::ProcessResidentMemoryBytes),
                ("VmSize:", Metric::ProcessVirtualMemoryBytes),
            ] {
                if let Some(kb) = status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                {
                    gauge!(name.name()).set(kb * 1024.0);
                }
            }
            if let Some(threads) = status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse::<f64>().ok())
            {
                gauge!(Metric::ProcessThreads.name()).set(threads);
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge!(Metric::ProcessOpenFds.name()).set(fds.count() as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEGIN: &str = "<!-- metrics table: generated from src/api/metrics.rs";
    const END: &str = "<!-- end of the generated metrics table -->";

    /// The docs' table, as [`Metric`] makes it.
    fn table() -> String {
        let mut t = String::from("| metric | kind | meaning |\n|---|---|---|\n");
        for m in Metric::ALL {
            t.push_str(&format!(
                "| `{}` | {} | {} |\n",
                m.name(),
                m.kind(),
                m.help()
            ));
        }
        t
    }

    #[test]
    fn the_docs_list_every_metric_as_the_table_declares_it() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
        let doc = std::fs::read_to_string(path).expect("docs/operations.md");
        let start = doc.find(BEGIN).expect("the begin marker");
        let body = doc[start..]
            .find('\n')
            .map(|i| start + i + 1)
            .expect("marker line");
        let end = doc.find(END).expect("the end marker");
        let want = table();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            let updated = format!("{}{want}{}", &doc[..body], &doc[end..]);
            std::fs::write(path, updated).expect("write docs/operations.md");
            return;
        }
        assert_eq!(
            doc[body..end],
            want,
            "docs/operations.md is stale: UPDATE_DOCS=1 cargo test --lib metrics"
        );
    }

    #[test]
    fn names_are_unique_and_counters_end_in_total() {
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len());
        for m in Metric::ALL {
            assert_eq!(
                m.kind() == "counter",
                m.name().ends_with("_total"),
                "{}",
                m.name()
            );
        }
    }
}
