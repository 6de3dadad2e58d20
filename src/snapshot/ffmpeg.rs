//! The decoder boundary: one `ffmpeg` process per snapshot, fed the keyframe as a small fMP4 on
//! stdin, writing one JPEG to stdout. Bounded in time (killed after [`DECODE_TIMEOUT`]) and in
//! output size; the caller bounds how many run at once.
//!
//! Belongs here: the command line and the process. Does not belong here: what to decode
//! (`picture`), caching and the pool (`mod`).

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest one decode may take (a 4K H.265 keyframe decodes in well under a second).
pub const DECODE_TIMEOUT: Duration = Duration::from_secs(10);
/// A JPEG larger than this is refused (a 4K picture at the quality used is about 1 MB).
const MAX_JPEG_BYTES: usize = 16 << 20;

/// Why a decode failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("snapshots need ffmpeg on PATH ({0})")]
    Missing(String),
    #[error("ffmpeg could not decode the keyframe: {0}")]
    Failed(String),
    #[error("ffmpeg took longer than {} s", DECODE_TIMEOUT.as_secs())]
    TimedOut,
}

/// Decodes the single-keyframe MP4 `input` to a JPEG, scaled to `width` (height keeps the
/// aspect ratio, even) if given.
pub async fn jpeg(input: Bytes, width: Option<u32>) -> Result<Bytes, DecodeError> {
    let mut cmd = tokio::process::Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error"])
        .args(["-f", "mp4", "-i", "pipe:0", "-frames:v", "1"]);
    if let Some(w) = width {
        cmd.args(["-vf", &format!("scale={w}:-2")]);
    }
    cmd.args(["-q:v", "3", "-f", "mjpeg", "pipe:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| DecodeError::Missing(e.to_string()))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(DecodeError::Failed("no pipes to ffmpeg".into()));
    };
    let work = async move {
        let feed = async move {
            // ffmpeg may stop reading once it has its frame: a broken pipe is not an error.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            let mut limited = (&mut stdout).take(MAX_JPEG_BYTES as u64 + 1);
            limited.read_to_end(&mut out).await
        };
        let read_err = async {
            let mut limited = (&mut stderr).take(4096);
            limited.read_to_end(&mut err).await
        };
        let ((), o, _) = tokio::join!(feed, read_out, read_err);
        let status = child.wait().await;
        (o, status, out, err)
    };
    let (read, status, out, err) = tokio::time::timeout(DECODE_TIMEOUT, work)
        .await
        .map_err(|_| DecodeError::TimedOut)?;
    let why = || {
        String::from_utf8_lossy(&err)
            .trim()
            .chars()
            .take(300)
            .collect::<String>()
    };
    read.map_err(|e| DecodeError::Failed(e.to_string()))?;
    match status {
        Ok(s) if s.success() && is_jpeg(&out) && out.len() <= MAX_JPEG_BYTES => {
            Ok(Bytes::from(out))
        }
        Ok(s) if s.success() => Err(DecodeError::Failed(format!(
            "no picture in its output ({} bytes) {}",
            out.len(),
            why()
        ))),
        Ok(s) => Err(DecodeError::Failed(format!("{s}: {}", why()))),
        Err(e) => Err(DecodeError::Failed(e.to_string())),
    }
}

/// A JPEG starts with SOI and ends with EOI.
fn is_jpeg(b: &[u8]) -> bool {
    b.starts_with(&[0xff, 0xd8]) && b.ends_with(&[0xff, 0xd9])
}
