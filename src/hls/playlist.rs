//! Pure: the text of a live media playlist, plain or LL-HLS, from the window's segments.
//!
//! Written by hand because the tags of LL-HLS (RFC 8216bis: `EXT-X-PART`, `EXT-X-PART-INF`,
//! `EXT-X-SERVER-CONTROL`, `EXT-X-PRELOAD-HINT`) are not in the m3u8 writers we could use.
//! Always full playlists (no delta updates).

use std::fmt::Write;

use super::store::Segment;

/// Everything a playlist shows.
pub struct View<'a> {
    /// The stream's id as it starts every file name.
    pub name: &'a str,
    /// Appended as `?v=…` to every media URI, so a cache never confuses two runs of the
    /// process (names restart at 0 with the process). Empty: bare names (the disk mirror).
    pub token: &'a str,
    pub low_latency: bool,
    pub target_s: u64,
    pub part_target_90k: i64,
    pub discontinuity_sequence: u64,
    /// Complete segments, oldest first.
    pub segments: Vec<&'a Segment>,
    /// The segment being written (listed with its parts in LL-HLS only).
    pub open: Option<&'a Segment>,
    /// Media sequence number of the next segment to start, for the preload hint.
    pub next_msn: u64,
}

pub fn segment_name(name: &str, msn: u64) -> String {
    format!("{name}{msn:04}.m4s")
}

pub fn part_name(name: &str, msn: u64, part: usize) -> String {
    format!("{name}{msn:04}.{part}.m4s")
}

pub fn init_name(name: &str, init_id: u32) -> String {
    format!("{name}_init{init_id}.mp4")
}

fn secs(d_90k: i64) -> f64 {
    d_90k as f64 / 90_000.0
}

fn pdt(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Renders the playlist.
pub fn render(v: &View<'_>) -> String {
    let mut s = String::with_capacity(256 + 160 * v.segments.len());
    let q = if v.token.is_empty() {
        String::new()
    } else {
        format!("?v={}", v.token)
    };
    let first_msn = v
        .segments
        .first()
        .or(v.open.as_ref())
        .map_or(v.next_msn, |s| s.msn);
    let _ = writeln!(s, "#EXTM3U");
    let _ = writeln!(s, "#EXT-X-VERSION:{}", if v.low_latency { 9 } else { 7 });
    let _ = writeln!(s, "#EXT-X-TARGETDURATION:{}", v.target_s);
    let _ = writeln!(s, "#EXT-X-MEDIA-SEQUENCE:{first_msn}");
    let _ = writeln!(
        s,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        v.discontinuity_sequence
    );
    let _ = writeln!(s, "#EXT-X-INDEPENDENT-SEGMENTS");
    if v.low_latency {
        let part_target = secs(v.part_target_90k);
        let _ = writeln!(
            s,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
            part_target * 3.0
        );
        let _ = writeln!(s, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
    }
    // Parts are listed for the segments of the last three target durations (and the open one).
    let mut with_parts_from = v.segments.len();
    if v.low_latency {
        let horizon_90k = 3 * v.target_s as i64 * 90_000;
        let mut acc = 0;
        while with_parts_from > 0 && acc < horizon_90k {
            with_parts_from -= 1;
            acc += v.segments[with_parts_from].duration_90k;
        }
    }
    let mut init = None;
    let listed = v
        .segments
        .iter()
        .enumerate()
        .map(|(i, seg)| (*seg, i >= with_parts_from, true))
        .chain(
            v.open
                .filter(|_| v.low_latency)
                .map(|seg| (seg, true, false)),
        );
    for (seg, parts, complete) in listed {
        // Printed even on the first listed segment: `EXT-X-DISCONTINUITY-SEQUENCE` counts only
        // the tags of segments that left the window, so each segment keeps its number.
        if seg.discontinuity {
            let _ = writeln!(s, "#EXT-X-DISCONTINUITY");
        }
        if init != Some(seg.init_id) || seg.discontinuity {
            let _ = writeln!(
                s,
                "#EXT-X-MAP:URI=\"{}{q}\"",
                init_name(v.name, seg.init_id),
            );
            init = Some(seg.init_id);
        }
        let _ = writeln!(s, "#EXT-X-PROGRAM-DATE-TIME:{}", pdt(seg.pdt_ms));
        if parts {
            for (i, p) in seg.parts.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "#EXT-X-PART:DURATION={:.3},URI=\"{}{q}\"{}",
                    secs(p.duration_90k),
                    part_name(v.name, seg.msn, i),
                    if p.independent {
                        ",INDEPENDENT=YES"
                    } else {
                        ""
                    }
                );
            }
        }
        if complete {
            let _ = writeln!(s, "#EXTINF:{:.3},", secs(seg.duration_90k));
            let _ = writeln!(s, "{}{q}", segment_name(v.name, seg.msn));
        }
    }
    if v.low_latency {
        let (msn, part) = match v.open {
            Some(o) => (o.msn, o.parts.len()),
            None => (v.next_msn, 0),
        };
        let _ = writeln!(
            s,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}{q}\"",
            part_name(v.name, msn, part),
        );
    }
    s
}
