//! Tests of the HLS window (`store.rs`): playlists, lookups, discontinuities, and parts
//! written out by `memory_ms`.

use super::*;
use crate::media::{Frame, StreamParams};
use crate::mp4::segmenter::Segmenter;
use std::sync::Arc;

const NAME: &str = "0742091c-19cd-4658-9b4f-5320da160f45";

fn window(size: usize, ll: bool) -> Window {
    Window::new(
        NAME.into(),
        "t".into(),
        WindowConfig {
            window_size: size,
            low_latency: ll,
            targets: Targets::hls(90_000, 18_000),
        },
    )
}

fn params() -> Arc<StreamParams> {
    crate::mp4::segmenter::tests::params(true, false)
}

/// Feeds `n` frames of 25 fps video with 2 s GOPs, epoch `epoch`, from frame `from`.
fn feed(w: &mut Window, s: &mut Segmenter, p: &Arc<StreamParams>, from: i64, n: i64, epoch: u32) {
    let mut out = Vec::new();
    for i in from..from + n {
        let mut f = Frame::test_video(i, i % 50 == 0, Bytes::from_static(b"abc"));
        f.params = Arc::clone(p);
        f.epoch = epoch;
        f.wall_ms = 1_700_000_000_000 + i * 40;
        s.push(&f, false, &mut out);
    }
    w.apply(out);
}

fn segmenter() -> Segmenter {
    Segmenter::new(Targets::hls(90_000, 18_000))
}

fn lines(w: &mut Window) -> Vec<String> {
    String::from_utf8(w.playlist().to_vec())
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn tag<'a>(l: &'a [String], name: &str) -> Vec<&'a str> {
    l.iter().filter_map(|x| x.strip_prefix(name)).collect()
}

#[test]
fn plain_playlist_slides_and_keeps_numbers() {
    let p = params();
    let mut w = window(3, false);
    let mut s = segmenter();
    assert!(!w.ready());
    feed(&mut w, &mut s, &p, 0, 501, 0);
    let l = lines(&mut w);
    assert_eq!(l[0], "#EXTM3U");
    // 10 segments of 2 s (the first one GOP) were made; 3 listed.
    assert_eq!(tag(&l, "#EXT-X-MEDIA-SEQUENCE:"), ["7"]);
    assert_eq!(tag(&l, "#EXT-X-TARGETDURATION:"), ["2"]);
    assert_eq!(tag(&l, "#EXTINF:"), ["2.000,", "2.000,", "2.000,"]);
    assert_eq!(
        l.iter()
            .filter(|x| x.ends_with(".m4s?v=t"))
            .collect::<Vec<_>>(),
        [
            &format!("{NAME}0007.m4s?v=t"),
            &format!("{NAME}0008.m4s?v=t"),
            &format!("{NAME}0009.m4s?v=t")
        ]
    );
    assert_eq!(
        tag(&l, "#EXT-X-MAP:URI="),
        [format!("\"{NAME}_init0.mp4?v=t\"")]
    );
    assert!(tag(&l, "#EXT-X-PART").is_empty());
    assert_eq!(
        tag(&l, "#EXT-X-PROGRAM-DATE-TIME:")[0],
        "2023-11-14T22:13:34.000Z"
    );
    // Retained after leaving the playlist, then gone.
    assert!(matches!(w.segment(6), Lookup::Ready(_)));
    assert!(matches!(w.segment(4), Lookup::Ready(_)));
    assert!(matches!(w.segment(3), Lookup::Gone));
    assert!(matches!(w.segment(10), Lookup::Soon));
    assert!(matches!(w.segment(11), Lookup::Gone));
}

#[test]
fn ll_playlist_lists_parts_and_a_preload_hint() {
    let p = params();
    let mut w = window(5, true);
    let mut s = segmenter();
    feed(&mut w, &mut s, &p, 0, 330, 0);
    let l = lines(&mut w);
    assert_eq!(
        tag(&l, "#EXT-X-SERVER-CONTROL:"),
        ["CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600"]
    );
    assert_eq!(tag(&l, "#EXT-X-PART-INF:"), ["PART-TARGET=0.200"]);
    let parts = tag(&l, "#EXT-X-PART:");
    // Last 3 target durations (6 s = 3 segments) fully, plus the open segment's parts:
    // frames 300..324 made 5 parts; 325..329 wait for the next frame.
    assert_eq!(parts.len(), 30 + 5, "{l:#?}");
    assert!(parts[0].ends_with(",INDEPENDENT=YES"));
    assert!(!parts[1].contains("INDEPENDENT"));
    assert_eq!(
        tag(&l, "#EXT-X-PRELOAD-HINT:"),
        [format!("TYPE=PART,URI=\"{NAME}0006.5.m4s?v=t\"")]
    );
    // Blocking-reload conditions.
    assert!(w.has(6, Some(4)));
    assert!(!w.has(6, Some(5)));
    assert!(w.has(5, None));
    assert!(!w.has(6, None));
    assert!(matches!(w.part(6, 5), Lookup::Soon));
    assert!(matches!(w.part(7, 0), Lookup::Soon));
    assert!(matches!(w.part(6, 4), Lookup::Ready(_)));
    assert!(matches!(w.part(7, 1), Lookup::Gone));
}

#[test]
fn discontinuities_are_tagged_and_counted_as_they_leave() {
    let p = params();
    let mut w = window(2, false);
    let mut s = segmenter();
    feed(&mut w, &mut s, &p, 0, 160, 0);
    feed(&mut w, &mut s, &p, 1000, 60, 1);
    let l = lines(&mut w);
    assert_eq!(tag(&l, "#EXT-X-DISCONTINUITY-SEQUENCE:"), ["0"]);
    assert_eq!(
        l.iter().filter(|x| *x == "#EXT-X-DISCONTINUITY").count(),
        1,
        "{l:#?}"
    );
    feed(&mut w, &mut s, &p, 1060, 200, 1);
    let l = lines(&mut w);
    assert_eq!(tag(&l, "#EXT-X-DISCONTINUITY-SEQUENCE:"), ["1"]);
    assert_eq!(l.iter().filter(|x| *x == "#EXT-X-DISCONTINUITY").count(), 0);
    // Emptying the window keeps the numbers going.
    let msn = w.last_msn().expect("segments made");
    w.clear();
    assert!(!w.ready());
    feed(&mut w, &mut s, &p, 5000, 110, 2);
    let l = lines(&mut w);
    assert_eq!(
        tag(&l, "#EXT-X-MEDIA-SEQUENCE:"),
        [(msn + 1).to_string().as_str()]
    );
    assert_eq!(l.iter().filter(|x| *x == "#EXT-X-DISCONTINUITY").count(), 1);
}

#[test]
fn older_parts_are_written_out_and_served_from_their_file_and_deleted_as_they_leave() {
    let p = params();
    let mut w = window(3, true);
    let mut s = segmenter();
    feed(&mut w, &mut s, &p, 0, 350, 0); // segments 0..=5 complete (2 s, 10 parts each)
    let bytes = |l: Lookup<Media>| match l {
        Lookup::Ready(Media::Memory(c)) => c.iter().map(Bytes::len).sum::<usize>(),
        other => panic!("{other:?}"),
    };
    let seg4 = bytes(w.segment(4));
    let part_lens: Vec<usize> = (0..10).map(|i| bytes(w.part(4, i))).collect();
    let total: usize = w
        .segments
        .iter()
        .chain(&w.open)
        .map(|s| s.parts.len())
        .sum();
    // Keep the newest 15 parts: segment 6 (open) and half of the one before are kept.
    let keep = 15;
    let jobs = w.spill_jobs(keep, 5);
    let due: usize = jobs.iter().map(|j| j.chunks.len()).sum();
    assert_eq!(due, total - keep);
    assert!(jobs.iter().all(|j| j.first == 0 && j.offset == 0));
    let split = jobs.last().expect("jobs");
    let (split_msn, split_parts) = (split.msn, split.chunks.len());
    assert!(
        split_parts < 10,
        "the boundary falls inside a segment: {split_parts}"
    );
    assert!(
        w.spill_jobs(keep, 5).is_empty(),
        "pending parts are not handed out twice"
    );
    w.spill_failed(0); // stays in memory, and is tried again
    for j in &jobs[1..] {
        let upto = j.first + j.chunks.len();
        assert!(w.spilled(j.msn, upto, format!("/s/{}.m4s", j.msn).into()));
    }
    assert!(!w.spilled(99, 1, "/s/99.m4s".into()), "not in the window");
    assert!(matches!(w.segment(0), Lookup::Ready(Media::Memory(_))));
    match w.segment(4) {
        Lookup::Ready(Media::File {
            path,
            offset,
            len,
            tail,
        }) => {
            assert_eq!(path, PathBuf::from("/s/4.m4s"));
            assert_eq!((offset, len as usize), (0, seg4));
            assert!(tail.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // A part in the file is its byte range there.
    match w.part(4, 2) {
        Lookup::Ready(Media::File {
            offset, len, tail, ..
        }) => {
            assert_eq!(offset as usize, part_lens[0] + part_lens[1]);
            assert_eq!(len as usize, part_lens[2]);
            assert!(tail.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // The boundary segment: its first parts from the file, the rest from memory.
    match w.segment(split_msn) {
        Lookup::Ready(Media::File { len, tail, .. }) => {
            let seg = w.find(split_msn).expect("segment");
            assert_eq!(len, seg.bytes_of(0..split_parts));
            assert_eq!(
                tail.iter().map(Bytes::len).sum::<usize>() as u64,
                seg.bytes_of(split_parts..seg.parts.len())
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.part(split_msn, split_parts),
        Lookup::Ready(Media::Memory(_))
    ));
    // Only segment 0 is due again; the next parts of the boundary segment continue its file.
    let again = w.spill_jobs(keep, 5);
    assert_eq!(again.iter().map(|j| j.msn).collect::<Vec<_>>(), vec![0]);
    feed(&mut w, &mut s, &p, 350, 50, 0);
    let next = w.spill_jobs(keep, 5);
    let cont = next
        .iter()
        .find(|j| j.msn == split_msn)
        .expect("the boundary segment");
    assert_eq!(cont.first, split_parts);
    assert_eq!(
        cont.offset,
        w.find(split_msn).expect("segment").bytes_of(0..split_parts)
    );
    // Segments that leave the window (3 listed + 3 retained) give their files back.
    feed(&mut w, &mut s, &p, 400, 100, 0);
    let gone = w.take_garbage();
    assert!(gone.contains(&PathBuf::from("/s/1.m4s")), "{gone:?}");
    w.clear();
    assert!(w.take_garbage().contains(&PathBuf::from("/s/4.m4s")));
}

#[test]
fn target_duration_covers_gop_rounded_segments_from_the_start() {
    let p = params();
    // Segment target 5 s with 2 s GOPs: segments will be 6 s; the first (one GOP) is 2 s.
    let mut w = Window::new(
        NAME.into(),
        "t".into(),
        WindowConfig {
            window_size: 5,
            low_latency: false,
            targets: Targets::hls(450_000, 45_000),
        },
    );
    let mut s = Segmenter::new(Targets::hls(450_000, 45_000));
    feed(&mut w, &mut s, &p, 0, 60, 0);
    assert!(w.ready());
    assert_eq!(w.target_s(), 6);
}
