//! Local-file sources: an MP4 file played in real time as if it were a camera, optionally
//! looped with continuous timestamps. Demuxing is [`crate::mp4::movie`]'s.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use tokio::time::Instant;

use super::{Emitter, SourceError};
pub use crate::mp4::movie::Movie;

/// Reads and demuxes a file; errors name the file.
pub async fn open(path: &Path) -> Result<Movie, SourceError> {
    let err = |m: &dyn std::fmt::Display| SourceError::File(format!("{}: {m}", path.display()));
    let meta = tokio::fs::metadata(path).await.map_err(|e| err(&e))?;
    let max = crate::mp4::movie::MAX_FILE_BYTES;
    if meta.len() > max {
        return Err(err(&format_args!(
            "{} bytes is more than the {max} a file may have here",
            meta.len()
        )));
    }
    let data = tokio::fs::read(path).await.map_err(|e| err(&e))?;
    Movie::parse(Bytes::from(data)).map_err(|e| err(&e))
}

/// Plays a movie in real time through `emit`; loops forever when `looped`.
pub async fn play(movie: &Movie, looped: bool, emit: &mut Emitter<'_>) -> Result<(), SourceError> {
    if movie.samples.is_empty() {
        return Err(SourceError::File("the file has no samples".into()));
    }
    emit.set_params(Arc::clone(&movie.params));
    emit.audio_frame_len(movie.audio_frame_90k);
    let start = Instant::now();
    let mut pass_offset_90k = 0i64;
    loop {
        for s in &movie.samples {
            let t_90k = pass_offset_90k + s.dts_90k;
            let due = start + Duration::from_micros((t_90k.max(0) as u64) * 100 / 9);
            tokio::time::sleep_until(due).await;
            emit.frame(
                s.track,
                t_90k + i64::from(s.cto_90k),
                Some(s.cto_90k),
                s.is_key,
                movie.payload(s),
                std::time::Instant::now(),
            );
        }
        if !looped {
            return Ok(());
        }
        pass_offset_90k += movie.duration_90k.max(1);
    }
}
