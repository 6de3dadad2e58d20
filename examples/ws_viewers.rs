//! Load generator for benchmarks: opens websocket MSE viewers and reads everything they send.
//!
//!   cargo run --release --example ws_viewers -- <seconds> <url> [<url> ...]
//!
//! Each URL may be repeated as `N*url` for N viewers. Prints one JSON line: viewers, fragments,
//! bytes, the time from connect to the first fragment (min / median / p99 / max, ms), and each
//! viewer's longest wait between two fragments after its first (median / max, ms: the hole a
//! viewer saw, e.g. during a fleet hand-off) and the fragments per second each viewer got from
//! its first one on (min / median: its frame rate, for video-only streams).

use std::time::{Duration, Instant};

use futures::StreamExt;

/// A viewer's frame rate is counted from this long after its first fragment.
const WARMUP: Duration = Duration::from_secs(2);
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let mut urls = Vec::new();
    for a in args {
        match a.split_once('*') {
            Some((n, u)) if n.parse::<usize>().is_ok() => {
                urls.extend(std::iter::repeat_n(u.to_owned(), n.parse().unwrap_or(1)))
            }
            _ => urls.push(a),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = urls
        .into_iter()
        .map(|url| {
            tokio::spawn(async move {
                let t0 = Instant::now();
                let Ok(Ok((mut ws, _))) = tokio::time::timeout(
                    Duration::from_secs(10),
                    tokio_tungstenite::connect_async(url),
                )
                .await
                else {
                    return (0u64, 0u64, None, Duration::ZERO, None);
                };
                let (mut frags, mut bytes, mut first) = (0u64, 0u64, None);
                // Fragments more than WARMUP after the first: the catch-up through the GOP
                // cache at the start would inflate the rate.
                let mut steady = 0u64;
                let (mut last, mut longest) = (None::<Instant>, Duration::ZERO);
                while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
                    if let Message::Binary(b) = m {
                        bytes += b.len() as u64;
                        if b.len() > 8 && &b[4..8] == b"moof" {
                            frags += 1;
                            let f = *first.get_or_insert(t0.elapsed());
                            if t0.elapsed() > f + WARMUP {
                                steady += 1;
                            }
                            let now = Instant::now();
                            if let Some(l) = last {
                                longest = longest.max(now - l);
                            }
                            last = Some(now);
                        }
                    }
                }
                // Fragments a second after the warm-up to the end: this viewer's frame rate.
                let rate = first
                    .map(|f| t0.elapsed().saturating_sub(f + WARMUP))
                    .filter(|d| d.as_secs_f64() > 1.0)
                    .map(|d| steady as f64 / d.as_secs_f64());
                (frags, bytes, first, longest, rate)
            })
        })
        .collect();
    let mut firsts = Vec::new();
    let mut gaps = Vec::new();
    let mut rates = Vec::new();
    let (mut frags, mut bytes, mut viewers) = (0, 0, 0);
    for t in tasks {
        if let Ok((f, b, first, longest, rate)) = t.await {
            viewers += 1;
            rates.extend(rate);
            gaps.push(longest.as_secs_f64() * 1000.0);
            frags += f;
            bytes += b;
            if let Some(d) = first {
                firsts.push(d.as_secs_f64() * 1000.0);
            }
        }
    }
    firsts.sort_by(f64::total_cmp);
    gaps.sort_by(f64::total_cmp);
    rates.sort_by(f64::total_cmp);
    let at = |v: &[f64], q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    let pick = |q: f64| at(&firsts, q);
    println!(
        "{}",
        serde_json::json!({
            "viewers": viewers, "with_video": firsts.len(), "fragments": frags, "bytes": bytes,
            "first_fragment_ms": {"min": pick(0.0), "p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)},
            "longest_gap_ms": {"p50": at(&gaps, 0.5), "max": at(&gaps, 1.0)},
            "fragments_per_s": {"min": at(&rates, 0.0), "p50": at(&rates, 0.5)},
        })
    );
}
