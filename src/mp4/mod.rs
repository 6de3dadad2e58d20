//! MP4 bytes, both ways, and where to cut them: pure code that every output shares.
//!
//! - `entry`: reading the sample entries we build (their `avcC`/`hvcC`).
//! - `fmp4`: the writer (init segments, `moof`+`mdat` fragments, `mfra`), used by MSE, HLS,
//!   the archive's files, clips and archive playback.
//! - `movie`: the reader of whole and fragmented MP4 files (the archive's files, `local_files`
//!   sources), hardened against truncated and hostile input.
//! - `segmenter`: frames in, parts and segments (HLS) or files (the archive) out, cut at
//!   keyframes.
//!
//! Belongs here: byte layouts and cutting rules, with no I/O, no clocks and no knowledge of
//! streams, sockets or storage. Does not belong here: when to write or where bytes go (the
//! stages `mse`, `hls`, `archive`).

pub mod entry;
pub mod fmp4;
pub mod movie;
pub mod segmenter;
