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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::mp4::segmenter::Part;

    const NAME: &str = "0742091c-19cd-4658-9b4f-5320da160f45";

    /// A segment of `parts` parts of 0.5 s, the first independent.
    fn seg(msn: u64, init_id: u32, discontinuity: bool, parts: usize) -> Segment {
        let mut s = Segment::new(
            msn,
            init_id,
            discontinuity,
            1_700_000_000_000 + msn as i64 * 2000,
        );
        for i in 0..parts {
            s.parts.push(Part {
                chunks: vec![Bytes::from_static(b"x")],
                len: 1,
                duration_90k: 45_000,
                independent: i == 0,
            });
        }
        s.duration_90k = 45_000 * parts as i64;
        s
    }

    fn view<'a>(
        segments: Vec<&'a Segment>,
        open: Option<&'a Segment>,
        low_latency: bool,
    ) -> View<'a> {
        View {
            name: NAME,
            token: "t1",
            low_latency,
            target_s: 2,
            part_target_90k: 45_000,
            discontinuity_sequence: 3,
            segments,
            open,
            next_msn: 13,
        }
    }

    #[test]
    fn a_plain_playlist_lists_complete_segments_with_their_init_and_time() {
        let (a, b) = (seg(10, 0, false, 4), seg(11, 0, false, 4));
        let text = render(&view(vec![&a, &b], None, false));
        let want = format!(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:3\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MAP:URI=\"{NAME}_init0.mp4?v=t1\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:40.000Z\n#EXTINF:2.000,\n{NAME}0010.m4s?v=t1\n\
             #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:42.000Z\n#EXTINF:2.000,\n{NAME}0011.m4s?v=t1\n"
        );
        assert_eq!(text, want);
    }

    #[test]
    fn a_discontinuity_repeats_the_map_and_a_new_init_gets_one() {
        let (a, b, c) = (
            seg(10, 0, false, 2),
            seg(11, 1, true, 2),
            seg(12, 2, false, 2),
        );
        let text = render(&view(vec![&a, &b, &c], None, false));
        let maps: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("#EXT-X-MAP"))
            .collect();
        assert_eq!(maps.len(), 3, "{text}");
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        let disc = text.find("#EXT-X-DISCONTINUITY\n").unwrap_or(0);
        assert!(text[disc..].starts_with(&format!(
            "#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"{NAME}_init1.mp4"
        )));
    }

    #[test]
    fn low_latency_lists_recent_parts_the_open_segment_and_a_preload_hint() {
        let old: Vec<Segment> = (5..10).map(|m| seg(m, 0, false, 4)).collect();
        let open = seg(10, 0, false, 2);
        let text = render(&view(old.iter().collect(), Some(&open), true));
        assert!(text.contains("#EXT-X-VERSION:9\n"));
        assert!(text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500\n"));
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.500\n"));
        // Parts of the last three target durations (6 s: three 2 s segments) and the open one.
        for msn in 5..=6 {
            assert!(
                !text.contains(&format!("{NAME}{msn:04}.0.m4s")),
                "msn {msn} has no parts listed"
            );
        }
        for msn in 7..=9 {
            assert!(text.contains(&format!(
                "#EXT-X-PART:DURATION=0.500,URI=\"{NAME}{msn:04}.0.m4s?v=t1\",INDEPENDENT=YES\n"
            )));
            assert!(text.contains(&format!(
                "#EXT-X-PART:DURATION=0.500,URI=\"{NAME}{msn:04}.3.m4s?v=t1\"\n"
            )));
        }
        // The open segment: its parts, no EXTINF, and the hint names its next part.
        assert!(text.contains(&format!("{NAME}0010.1.m4s?v=t1")));
        assert!(!text.contains(&format!("{NAME}0010.m4s")));
        assert!(text.ends_with(&format!(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{NAME}0010.2.m4s?v=t1\"\n"
        )));
    }

    #[test]
    fn an_empty_window_starts_at_the_next_segment_and_the_mirror_has_bare_names() {
        let mut v = view(Vec::new(), None, true);
        v.token = "";
        let text = render(&v);
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:13\n"));
        assert!(text.ends_with(&format!("URI=\"{NAME}0013.0.m4s\"\n")));
        assert!(!text.contains("?v="));
    }
}
