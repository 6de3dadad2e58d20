//! How fast the archive index answers, against the original's way (list the directory and
//! parse every file name on each request).
//!
//! `cargo bench --bench archive_index` (release build; no timing assertions, figures only).
//! One million 60 s segments is 1.9 years of one camera.

use std::hint::black_box;
use std::time::Instant;

use uuid::Uuid;
use video_server::archive::index::{
    file_name, parse_file_name, EndReason, Location, Segment, StreamIndex,
};

fn segments(n: usize) -> Vec<Segment> {
    let mut t = 1_700_000_000_000i64;
    (0..n)
        .map(|i| {
            // A camera outage every 1000 files.
            if i % 1000 == 999 {
                t += 600_000;
            }
            let s = Segment {
                name_s: t / 1000,
                start_ms: t,
                duration_ms: 60_000,
                bytes: 15_000_000,
                location: Location::Remote,
                end: if i % 1000 == 998 {
                    EndReason::CameraOffline
                } else {
                    EndReason::Rotation
                },
            };
            t += 60_000;
            s
        })
        .collect()
}

/// Median of `runs` timings of `f`, in milliseconds.
fn time_ms<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n = 1_000_000;
    let segs = segments(n);
    let build = time_ms(3, || StreamIndex::from_segments(segs.clone()));
    let idx = StreamIndex::from_segments(segs.clone());
    let mid = segs[n / 2].start_ms;
    let spans = time_ms(11, || idx.spans(500).len());
    let hour = time_ms(101, || idx.overlapping(mid, mid + 3_600_000).len());
    let day_gaps = time_ms(101, || idx.gaps(mid, mid + 86_400_000, 500).len());
    let mut grow = idx.clone();
    let mut next = segs[n - 1].start_ms + 60_000;
    let insert = time_ms(101, || {
        grow.insert(Segment {
            name_s: next / 1000,
            start_ms: next,
            ..segs[0].clone()
        });
        next += 60_000;
    });
    let lookup = time_ms(101, || idx.get(segs[n / 3].name_s).is_some());
    println!("archive index, {n} segments:");
    println!("  build from a listing        {build:10.2} ms");
    println!(
        "  ranges (all, tolerance 0.5s) {spans:9.2} ms  ({} ranges)",
        idx.spans(500).len()
    );
    println!("  segments in 1 h             {hour:10.4} ms");
    println!("  gaps in 1 day               {day_gaps:10.4} ms");
    println!("  insert a closed file        {insert:10.4} ms");
    println!("  find by name                {lookup:10.4} ms");

    // The original's way, on a directory of 100 000 real (empty) files: list it, parse every
    // name, sort, on each request.
    let files = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let id = Uuid::new_v4();
    for s in &segs[..files] {
        std::fs::File::create(dir.path().join(file_name(&id, s.name_s))).expect("create");
    }
    let listing = time_ms(5, || {
        let mut v: Vec<i64> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .flatten()
            .filter_map(|e| parse_file_name(&id, e.file_name().to_str()?))
            .collect();
        v.sort_unstable();
        v.len()
    });
    let small = StreamIndex::from_segments(segs[..files].to_vec());
    let ours = time_ms(11, || small.spans(500).len());
    println!("{files} files, ranges per request:");
    println!("  list the directory + parse names (the original) {listing:8.2} ms");
    println!(
        "  index (ours)                                     {ours:8.2} ms  ({:.0}x faster)",
        listing / ours
    );
}
