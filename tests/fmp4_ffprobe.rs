//! The fMP4 writer checked by an independent decoder, without any network: the demo clip is
//! demuxed by the crate's file reader, remuxed as init + one-second fragments holding both tracks
//! (the shape the archive will write), and ffprobe must count every frame and ffmpeg decode them
//! all without an error.

mod common;

use bytes::BytesMut;
use video_server::media::{rescale, TrackKind, TIMESCALE_90K};
use video_server::mp4::fmp4::{self, Sample, TrackRun};
use video_server::source::file::Movie;

#[test]
fn remuxed_demo_decodes_with_every_frame() {
    let data = std::fs::read(common::repo().join("assets/demo.mp4")).expect("demo clip");
    let movie = Movie::parse(bytes::Bytes::from(data)).expect("parse");
    let params = &movie.params;
    let mut out = BytesMut::new();
    out.extend_from_slice(&fmp4::init_segment(params));
    let (mut n_video, mut n_audio) = (0u64, 0u64);
    let mut seq = 0;
    for second in movie
        .samples
        .chunk_by(|a, b| a.dts_90k / 90_000 == b.dts_90k / 90_000)
    {
        let mut runs_data = Vec::new();
        for kind in [TrackKind::Video, TrackKind::Audio] {
            let ts = params.timescale(kind);
            let picked: Vec<_> = second.iter().filter(|s| s.track == kind).collect();
            if picked.is_empty() {
                continue;
            }
            let payloads: Vec<bytes::Bytes> = picked.iter().map(|s| movie.payload(s)).collect();
            let samples: Vec<(u32, i32, bool)> = picked
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let next = picked.get(i + 1).map_or(
                        s.dts_90k + if kind == TrackKind::Video { 3600 } else { 1920 },
                        |n| n.dts_90k,
                    );
                    let d =
                        rescale(next, TIMESCALE_90K, ts) - rescale(s.dts_90k, TIMESCALE_90K, ts);
                    (
                        d as u32,
                        rescale(i64::from(s.cto_90k), TIMESCALE_90K, ts) as i32,
                        s.is_key,
                    )
                })
                .collect();
            let base = rescale(picked[0].dts_90k, TIMESCALE_90K, ts) as u64;
            match kind {
                TrackKind::Video => n_video += picked.len() as u64,
                TrackKind::Audio => n_audio += picked.len() as u64,
            }
            runs_data.push((
                params.track_id(kind).expect("track"),
                base,
                samples,
                payloads,
            ));
        }
        let sample_sets: Vec<Vec<Sample>> = runs_data
            .iter()
            .map(|(_, _, s, p)| {
                s.iter()
                    .zip(p)
                    .map(|(&(duration, cto, is_sync), data)| Sample {
                        duration,
                        cto,
                        is_sync,
                        data,
                    })
                    .collect()
            })
            .collect();
        let runs: Vec<TrackRun> = runs_data
            .iter()
            .zip(&sample_sets)
            .map(|((id, base, _, _), samples)| TrackRun {
                track_id: *id,
                base_decode_time: *base,
                samples,
            })
            .collect();
        seq += 1;
        fmp4::write_fragment(&mut out, seq, &runs);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("remux.mp4");
    std::fs::write(&path, &out).expect("write");
    let p = common::probe(&path);
    assert!(p.decode_errors.is_empty(), "{}", p.decode_errors);
    assert_eq!(p.video_frames, n_video, "{p:?}");
    assert_eq!(p.audio_frames, n_audio, "{p:?}");
    assert_eq!(n_video, 250);
}
