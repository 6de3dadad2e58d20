//! Fragmented MP4 (ISO/IEC 14496-12) writer: init segments and `moof`+`mdat` fragments.
//!
//! Pure code: takes codec parameters and samples with explicit times, appends bytes to a buffer
//! the caller owns (so a long-lived `BytesMut` makes the hot path allocation-free). No I/O, no
//! clocks, no knowledge of websockets, HLS or files: `mse`, `hls` and `archive` use it.
//!
//! Hand-written rather than through mp4-atom's typed encoder: sample entries arrive as ready
//! bytes (from retina or copied from a file) and fragments are written once per frame per
//! viewer, into a reused buffer, with the data offset patched in place. mp4-atom is used as the
//! independent parser in the tests.
//!
//! ```text
//! init segment                      media fragment
//! ftyp                              moof
//! moov                                mfhd            sequence number
//!   mvhd          timescale 1000      traf            one per track with samples
//!   trak          one per track         tfhd          track id, default-base-is-moof
//!     tkhd                              tfdt (v1)     base media decode time
//!     mdia                              trun (v1)     per sample: duration, size, flags, signed CTO
//!       mdhd      track timescale   mdat              sample data, traf order
//!       hdlr      vide / soun
//!       minf
//!         vmhd / smhd
//!         dinf/dref/url
//!         stbl    stsd (the sample entry), empty stts stsc stsz stco
//!   mvex
//!     trex        one per track
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::{StreamParams, TrackKind};

/// `sample_flags` of a sync sample: sample_depends_on = 2 (does not depend on others).
pub const FLAGS_SYNC: u32 = 0x0200_0000;
/// `sample_flags` of a non-sync sample: sample_depends_on = 1, sample_is_non_sync_sample = 1.
pub const FLAGS_NON_SYNC: u32 = 0x0101_0000;

const UNITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// Starts a box: writes a placeholder size and the type; returns where the size goes.
fn begin(buf: &mut BytesMut, kind: &[u8; 4]) -> usize {
    let pos = buf.len();
    buf.put_u32(0);
    buf.put_slice(kind);
    pos
}

/// Starts a full box (version and flags).
fn begin_full(buf: &mut BytesMut, kind: &[u8; 4], version: u8, flags: u32) -> usize {
    let pos = begin(buf, kind);
    buf.put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
    pos
}

/// Ends a box started at `pos` by writing its size.
fn end(buf: &mut BytesMut, pos: usize) {
    let size = (buf.len() - pos) as u32;
    buf[pos..pos + 4].copy_from_slice(&size.to_be_bytes());
}

/// Builds the init segment (`ftyp` + `moov`) for a stream's parameters. Video is track 1 at
/// 90 kHz; audio follows at its sample rate.
pub fn init_segment(params: &StreamParams) -> Bytes {
    write_init(params, None).0
}

/// Where a file's duration lives in an init segment written by [`file_init_segment`], so a
/// recorder can patch it in place when the file is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationFields {
    /// Offset of `mvhd`'s 32-bit duration (milliseconds).
    pub mvhd_at: usize,
    /// Offset of `mehd`'s 64-bit fragment duration (milliseconds).
    pub mehd_at: usize,
}

impl DurationFields {
    /// The bytes to write at each offset for a file lasting `duration_ms`.
    pub fn patches(&self, duration_ms: u64) -> [(usize, Vec<u8>); 2] {
        let ms32 = u32::try_from(duration_ms).unwrap_or(u32::MAX);
        [
            (self.mvhd_at, ms32.to_be_bytes().to_vec()),
            (self.mehd_at, duration_ms.to_be_bytes().to_vec()),
        ]
    }
}

/// An init segment for a *file* of fragments: like [`init_segment`], but `mvhd` carries the
/// duration and `mvex` has a `mehd` (8.8.2), so players know the length and can seek. Pass 0
/// while the length is unknown and patch the fields later.
pub fn file_init_segment(params: &StreamParams, duration_ms: u64) -> (Bytes, DurationFields) {
    let (bytes, fields) = write_init(params, Some(duration_ms));
    (
        bytes,
        fields.expect("write_init returns fields when given a duration"),
    )
}

fn write_init(params: &StreamParams, duration_ms: Option<u64>) -> (Bytes, Option<DurationFields>) {
    let mut buf = BytesMut::with_capacity(1024);
    // ftyp, 4.3: major brand, minor version, compatible brands.
    let ftyp = begin(&mut buf, b"ftyp");
    buf.put_slice(b"iso5");
    buf.put_u32(512);
    for brand in [b"iso5", b"iso6", b"mp41"] {
        buf.put_slice(brand);
    }
    end(&mut buf, ftyp);

    let moov = begin(&mut buf, b"moov");
    let tracks = [TrackKind::Video, TrackKind::Audio]
        .into_iter()
        .filter_map(|k| params.track_id(k).map(|id| (k, id)))
        .collect::<Vec<_>>();
    let mvhd_at = write_mvhd(
        &mut buf,
        tracks.len() as u32 + 1,
        duration_ms.map_or(0, |d| u32::try_from(d).unwrap_or(u32::MAX)),
    );
    for &(kind, id) in &tracks {
        write_trak(&mut buf, params, kind, id);
    }
    // mvex, 8.8.1: the fragment duration (mehd, files only), one trex (8.8.3) per track,
    // sample description 1, no defaults.
    let mvex = begin(&mut buf, b"mvex");
    let mut fields = None;
    if let Some(d) = duration_ms {
        let mehd = begin_full(&mut buf, b"mehd", 1, 0);
        fields = Some(DurationFields {
            mvhd_at,
            mehd_at: buf.len(),
        });
        buf.put_u64(d);
        end(&mut buf, mehd);
    }
    for &(_, id) in &tracks {
        let trex = begin_full(&mut buf, b"trex", 0, 0);
        buf.put_u32(id);
        buf.put_u32(1);
        buf.put_u32(0);
        buf.put_u32(0);
        buf.put_u32(0);
        end(&mut buf, trex);
    }
    end(&mut buf, mvex);
    end(&mut buf, moov);
    (buf.freeze(), fields)
}

/// mvhd, 8.2.2 (version 0). Returns the offset of the duration field.
fn write_mvhd(buf: &mut BytesMut, next_track_id: u32, duration_ms: u32) -> usize {
    let b = begin_full(buf, b"mvhd", 0, 0);
    buf.put_u32(0); // creation_time
    buf.put_u32(0); // modification_time
    buf.put_u32(1000); // timescale
    let duration_at = buf.len();
    buf.put_u32(duration_ms); // 0: unknown (live fragments)
    buf.put_u32(0x0001_0000); // rate 1.0
    buf.put_u16(0x0100); // volume 1.0
    buf.put_bytes(0, 10); // reserved
    for m in UNITY_MATRIX {
        buf.put_u32(m);
    }
    buf.put_bytes(0, 24); // pre_defined
    buf.put_u32(next_track_id);
    end(buf, b);
    duration_at
}

fn write_trak(buf: &mut BytesMut, params: &StreamParams, kind: TrackKind, id: u32) {
    let (width, height, entry, timescale) = match kind {
        TrackKind::Video => {
            let v = params
                .video
                .as_ref()
                .expect("track_id() said video is present");
            (
                v.width,
                v.height,
                &v.sample_entry,
                crate::media::TIMESCALE_90K,
            )
        }
        TrackKind::Audio => {
            let a = params
                .audio
                .as_ref()
                .expect("track_id() said audio is present");
            (0, 0, &a.sample_entry, a.sample_rate)
        }
    };
    let trak = begin(buf, b"trak");
    // tkhd, 8.3.2: enabled | in_movie.
    let tkhd = begin_full(buf, b"tkhd", 0, 3);
    buf.put_u32(0);
    buf.put_u32(0);
    buf.put_u32(id);
    buf.put_u32(0); // reserved
    buf.put_u32(0); // duration
    buf.put_bytes(0, 8); // reserved
    buf.put_u16(0); // layer
    buf.put_u16(0); // alternate_group
    buf.put_u16(if kind == TrackKind::Audio { 0x0100 } else { 0 });
    buf.put_u16(0); // reserved
    for m in UNITY_MATRIX {
        buf.put_u32(m);
    }
    buf.put_u32(width << 16);
    buf.put_u32(height << 16);
    end(buf, tkhd);

    let mdia = begin(buf, b"mdia");
    // mdhd, 8.4.2: timescale, language `und`.
    let mdhd = begin_full(buf, b"mdhd", 0, 0);
    buf.put_u32(0);
    buf.put_u32(0);
    buf.put_u32(timescale);
    buf.put_u32(0);
    buf.put_u16(0x55c4);
    buf.put_u16(0);
    end(buf, mdhd);
    // hdlr, 8.4.3.
    let hdlr = begin_full(buf, b"hdlr", 0, 0);
    buf.put_u32(0);
    let (handler, name): (&[u8; 4], &[u8]) = match kind {
        TrackKind::Video => (b"vide", b"VideoHandler\0"),
        TrackKind::Audio => (b"soun", b"SoundHandler\0"),
    };
    buf.put_slice(handler);
    buf.put_bytes(0, 12);
    buf.put_slice(name);
    end(buf, hdlr);

    let minf = begin(buf, b"minf");
    match kind {
        TrackKind::Video => {
            // vmhd, 12.1.2: flags 1, graphicsmode copy, opcolor 0.
            let vmhd = begin_full(buf, b"vmhd", 0, 1);
            buf.put_bytes(0, 8);
            end(buf, vmhd);
        }
        TrackKind::Audio => {
            // smhd, 12.2.2: balance 0.
            let smhd = begin_full(buf, b"smhd", 0, 0);
            buf.put_u32(0);
            end(buf, smhd);
        }
    }
    // dinf/dref, 8.7.1-2: one self-contained `url ` entry.
    let dinf = begin(buf, b"dinf");
    let dref = begin_full(buf, b"dref", 0, 0);
    buf.put_u32(1);
    let url = begin_full(buf, b"url ", 0, 1);
    end(buf, url);
    end(buf, dref);
    end(buf, dinf);

    let stbl = begin(buf, b"stbl");
    let stsd = begin_full(buf, b"stsd", 0, 0);
    buf.put_u32(1);
    buf.put_slice(entry);
    end(buf, stsd);
    for kind in [b"stts", b"stsc", b"stco"] {
        let b = begin_full(buf, kind, 0, 0);
        buf.put_u32(0);
        end(buf, b);
    }
    let stsz = begin_full(buf, b"stsz", 0, 0);
    buf.put_u32(0);
    buf.put_u32(0);
    end(buf, stsz);
    end(buf, stbl);
    end(buf, minf);
    end(buf, mdia);
    end(buf, trak);
}

/// One sample of a fragment.
#[derive(Clone, Copy, Debug)]
pub struct Sample<'a> {
    /// Duration in the track's timescale.
    pub duration: u32,
    /// Composition time offset (PTS − DTS) in the track's timescale.
    pub cto: i32,
    pub is_sync: bool,
    pub data: &'a [u8],
}

/// The samples of one track in one fragment.
#[derive(Clone, Copy, Debug)]
pub struct TrackRun<'a> {
    pub track_id: u32,
    /// Decode time of the first sample, in the track's timescale (`tfdt`).
    pub base_decode_time: u64,
    pub samples: &'a [Sample<'a>],
}

/// Appends one `moof` + `mdat` holding `runs` (in order) to `buf`.
pub fn write_fragment(buf: &mut BytesMut, sequence: u32, runs: &[TrackRun<'_>]) {
    let data_len = write_fragment_header(buf, sequence, runs);
    buf.reserve(data_len);
    for s in runs.iter().flat_map(|r| r.samples.iter()) {
        buf.put_slice(s.data);
    }
}

/// Appends the `moof` and the `mdat` box header of a fragment holding `runs`, but not the sample
/// data: the caller sends the samples' bytes after it, in order (HLS keeps them as references
/// to the frames instead of copying). Returns the number of data bytes that must follow.
pub fn write_fragment_header(buf: &mut BytesMut, sequence: u32, runs: &[TrackRun<'_>]) -> usize {
    let data_len: usize = runs
        .iter()
        .flat_map(|r| r.samples.iter())
        .map(|s| s.data.len())
        .sum();
    let moof_len: usize = 8
        + 16
        + runs
            .iter()
            .map(|r| 8 + 16 + 20 + 20 + 16 * r.samples.len())
            .sum::<usize>();
    buf.reserve(moof_len + 8);
    let start = buf.len();

    let moof = begin(buf, b"moof");
    // mfhd, 8.8.5.
    let mfhd = begin_full(buf, b"mfhd", 0, 0);
    buf.put_u32(sequence);
    end(buf, mfhd);
    let mut data_offset = moof_len + 8;
    for run in runs {
        let traf = begin(buf, b"traf");
        // tfhd, 8.8.7: default-base-is-moof.
        let tfhd = begin_full(buf, b"tfhd", 0, 0x02_0000);
        buf.put_u32(run.track_id);
        end(buf, tfhd);
        // tfdt, 8.8.12, version 1.
        let tfdt = begin_full(buf, b"tfdt", 1, 0);
        buf.put_u64(run.base_decode_time);
        end(buf, tfdt);
        // trun, 8.8.8, version 1 (signed CTO): data-offset, duration, size, flags, CTO present.
        let trun = begin_full(buf, b"trun", 1, 0x00_0f01);
        buf.put_u32(run.samples.len() as u32);
        buf.put_i32(data_offset as i32);
        for s in run.samples {
            buf.put_u32(s.duration);
            buf.put_u32(s.data.len() as u32);
            buf.put_u32(if s.is_sync {
                FLAGS_SYNC
            } else {
                FLAGS_NON_SYNC
            });
            buf.put_i32(s.cto);
            data_offset += s.data.len();
        }
        end(buf, trun);
        end(buf, traf);
    }
    end(buf, moof);
    debug_assert_eq!(
        buf.len() - start,
        moof_len,
        "moof size formula is out of date"
    );

    buf.put_u32((8 + data_len) as u32);
    buf.put_slice(b"mdat");
    data_len
}

/// Appends an `mfra` (8.8.9) with one `tfra` (8.8.10) for `track_id`: the random access
/// points of a fragmented file as (decode time in the track's timescale, offset of the
/// fragment's `moof`), each the first sample of its fragment's first run. Ends with `mfro`.
pub fn write_mfra(buf: &mut BytesMut, track_id: u32, points: &[(u64, u64)]) {
    let mfra = begin(buf, b"mfra");
    let tfra = begin_full(buf, b"tfra", 1, 0);
    buf.put_u32(track_id);
    buf.put_u32(0); // traf, trun and sample numbers are one byte each
    buf.put_u32(points.len() as u32);
    for &(time, offset) in points {
        buf.put_u64(time);
        buf.put_u64(offset);
        buf.put_u8(1);
        buf.put_u8(1);
        buf.put_u8(1);
    }
    end(buf, tfra);
    let mfro = begin_full(buf, b"mfro", 0, 0);
    let size = (buf.len() + 4 - mfra) as u32;
    buf.put_u32(size);
    end(buf, mfro);
    end(buf, mfra);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::{AudioParams, VideoCodec, VideoParams};
    use mp4_atom::{Any, Decode, DecodeMaybe};

    /// A minimal `avc1` entry as retina builds it (avcC with a tiny SPS/PPS).
    pub(crate) fn avc1_entry() -> Bytes {
        let mut b = BytesMut::new();
        let e = begin(&mut b, b"avc1");
        b.put_bytes(0, 6);
        b.put_u16(1);
        b.put_bytes(0, 16);
        b.put_u16(64);
        b.put_u16(48);
        b.put_u32(0x0048_0000);
        b.put_u32(0x0048_0000);
        b.put_u32(0);
        b.put_u16(1);
        b.put_bytes(0, 32);
        b.put_u16(0x0018);
        b.put_i16(-1);
        let c = begin(&mut b, b"avcC");
        b.put_slice(&[1, 0x42, 0xc0, 0x1e, 0xff, 0xe1]);
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x01, 0x04, 0x6c, 0x04, 0x40];
        b.put_u16(sps.len() as u16);
        b.put_slice(&sps);
        b.put_u8(1);
        let pps = [0x68, 0xcb, 0x83, 0xcb, 0x20];
        b.put_u16(pps.len() as u16);
        b.put_slice(&pps);
        end(&mut b, c);
        end(&mut b, e);
        b.freeze()
    }

    /// A minimal `mp4a` entry: AAC LC, 48 kHz, mono, with its `esds`.
    pub(crate) fn mp4a_entry() -> Bytes {
        let mut b = BytesMut::new();
        let e = begin(&mut b, b"mp4a");
        b.put_bytes(0, 6);
        b.put_u16(1); // data_reference_index
        b.put_bytes(0, 8);
        b.put_u16(1); // channels
        b.put_u16(16); // sample size
        b.put_u32(0);
        b.put_u32(48_000 << 16);
        let esds = begin_full(&mut b, b"esds", 0, 0);
        // ES_Descriptor { ES_ID 1, DecoderConfig { AAC, audio, DecoderSpecificInfo }, SL }.
        b.put_slice(&[0x03, 25, 0, 1, 0]);
        b.put_slice(&[0x04, 17, 0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        b.put_slice(&[0x05, 2, 0x11, 0x88]);
        b.put_slice(&[0x06, 1, 0x02]);
        end(&mut b, esds);
        end(&mut b, e);
        b.freeze()
    }

    /// H.264 64×48 and optionally AAC, with sample entries real parsers accept.
    pub(crate) fn real_params(audio: bool) -> std::sync::Arc<StreamParams> {
        let mut p = params(audio);
        if let Some(a) = p.audio.as_mut() {
            a.sample_entry = mp4a_entry();
            a.channels = 1;
        }
        std::sync::Arc::new(p)
    }

    fn params(audio: bool) -> StreamParams {
        StreamParams {
            video: Some(VideoParams {
                codec: VideoCodec::H264,
                rfc6381: "avc1.42C01E".into(),
                width: 64,
                height: 48,
                frame_rate: Some((25, 1)),
                sample_entry: avc1_entry(),
            }),
            audio: audio.then(|| AudioParams {
                rfc6381: "mp4a.40.2".into(),
                sample_rate: 48_000,
                channels: 2,
                sample_entry: Bytes::new(),
                g711: None,
            }),
        }
    }

    /// FNV-1a, enough to pin bytes in a golden test.
    fn fnv(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    #[test]
    fn init_segment_reparses_with_an_independent_parser() {
        let init = init_segment(&params(false));
        let mut cur = std::io::Cursor::new(init.as_ref());
        let ftyp = Any::decode(&mut cur).expect("ftyp");
        assert!(matches!(ftyp, Any::Ftyp(_)));
        let moov = mp4_atom::Moov::decode(&mut cur).expect("moov");
        assert_eq!(moov.trak.len(), 1);
        let trak = &moov.trak[0];
        assert_eq!(trak.tkhd.track_id, 1);
        assert_eq!(trak.mdia.mdhd.timescale, 90_000);
        assert_eq!(trak.mdia.hdlr.handler, b"vide".into());
        let codec = &trak.mdia.minf.stbl.stsd.codecs[0];
        match codec {
            mp4_atom::Codec::Avc1(a) => assert_eq!(a.avcc.avc_profile_indication, 0x42),
            other => panic!("expected avc1, got {other:?}"),
        }
        let mvex = moov.mvex.expect("mvex present: this is what makes it fMP4");
        assert_eq!(mvex.trex.len(), 1);
        assert_eq!(cur.position() as usize, init.len());
        // Golden: any change to the init bytes must be deliberate. Update after checking the
        // new output with ffprobe (tests/fmp4_ffprobe.rs).
        assert_eq!(init.len(), 645);
        assert_eq!(fnv(&init), 0xd5f6_d3e1_f9ef_ceaf, "init bytes changed");
    }

    #[test]
    fn fragment_has_correct_offsets_flags_and_times() {
        let key = [0u8, 0, 0, 2, 0x65, 0x88];
        let p1 = [0u8, 0, 0, 1, 0x41];
        let aac = [0x21u8, 0x10, 0x04];
        let video = [
            Sample {
                duration: 3600,
                cto: 0,
                is_sync: true,
                data: &key,
            },
            Sample {
                duration: 3600,
                cto: -1800,
                is_sync: false,
                data: &p1,
            },
        ];
        let audio = [Sample {
            duration: 1024,
            cto: 0,
            is_sync: true,
            data: &aac,
        }];
        let mut buf = BytesMut::new();
        write_fragment(
            &mut buf,
            7,
            &[
                TrackRun {
                    track_id: 1,
                    base_decode_time: 90_000,
                    samples: &video,
                },
                TrackRun {
                    track_id: 2,
                    base_decode_time: 48_000,
                    samples: &audio,
                },
            ],
        );
        let mut cur = std::io::Cursor::new(buf.as_ref());
        let moof = mp4_atom::Moof::decode(&mut cur).expect("moof");
        let moof_len = cur.position() as usize;
        assert_eq!(moof.mfhd.sequence_number, 7);
        assert_eq!(moof.traf.len(), 2);
        let v = &moof.traf[0];
        assert_eq!(
            v.tfdt.as_ref().expect("tfdt").base_media_decode_time,
            90_000
        );
        let trun = &v.trun[0];
        let entries: Vec<_> = trun.samples.iter().collect();
        assert_eq!(trun.data_offset, Some((moof_len + 8) as i32));
        assert_eq!(entries[0].flags, Some(FLAGS_SYNC));
        assert_eq!(entries[1].flags, Some(FLAGS_NON_SYNC));
        assert_eq!(entries[1].cts, Some(-1800));
        let a = &moof.traf[1];
        assert_eq!(
            a.trun[0].data_offset,
            Some((moof_len + 8 + key.len() + p1.len()) as i32)
        );
        let mdat = mp4_atom::Mdat::decode_maybe(&mut cur)
            .expect("mdat")
            .expect("complete");
        assert_eq!(mdat.data.len(), key.len() + p1.len() + aac.len());
        assert_eq!(&mdat.data[..key.len()], &key);
        assert_eq!(cur.position() as usize, buf.len());
    }

    #[test]
    fn fragment_appends_without_disturbing_earlier_bytes() {
        let mut buf = BytesMut::from(&b"prefix"[..]);
        let s = [Sample {
            duration: 1,
            cto: 0,
            is_sync: true,
            data: b"abc",
        }];
        write_fragment(
            &mut buf,
            1,
            &[TrackRun {
                track_id: 1,
                base_decode_time: 0,
                samples: &s,
            }],
        );
        assert_eq!(&buf[..6], b"prefix");
        assert_eq!(&buf[buf.len() - 3..], b"abc");
    }
}
