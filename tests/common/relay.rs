//! A second RTSP/RTP stack as the camera: ffmpeg publishes a clip (ANNOUNCE/RECORD, its own
//! packetizer: parameter sets only in the SDP) into Debian's `rtsp-server-perl`, a small relay
//! that serves it to readers over UDP. This is the path on which B-frame streams first broke
//! the gateway; GStreamer's payloaders alone do not show it.

use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct Relay {
    server: Child,
    publisher: Child,
    pub port: u16,
    mount: String,
}

impl Relay {
    /// Relays `clip` (looped, in real time, not re-encoded) at `rtsp://127.0.0.1:port/mount`.
    /// The relay binds its UDP ports only when ffmpeg sends RECORD; a port another test took in
    /// the meantime makes it answer 404 and ffmpeg exit, so a start is retried on fresh ports.
    pub fn start(clip: &Path, mount: &str) -> Relay {
        for _ in 0..5 {
            if let Some(relay) = Self::try_start(clip, mount) {
                return relay;
            }
        }
        panic!("ffmpeg could not publish into rtsp-server-perl in 5 attempts");
    }

    fn try_start(clip: &Path, mount: &str) -> Option<Relay> {
        let port = free_port();
        let source_port = free_port();
        let rtp_port = free_udp_pair();
        let server = Command::new("rtsp-server-perl")
            .args(["-c", &port.to_string(), "-s", &source_port.to_string()])
            .args(["--rtp_start_port", &rtp_port.to_string(), "-l", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rtsp-server-perl (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", source_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rtsp-server-perl did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let publisher = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-stream_loop",
                "-1",
                "-i",
            ])
            .arg(clip)
            .args(["-c", "copy", "-f", "rtsp", "-rtsp_transport", "udp"])
            .arg(format!("rtsp://127.0.0.1:{source_port}/{mount}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the ffmpeg publisher");
        let mut relay = Relay {
            server,
            publisher,
            port,
            mount: mount.to_owned(),
        };
        // ANNOUNCE, SETUP and RECORD take a few milliseconds; a publisher alive after 1.5 s
        // is sending.
        std::thread::sleep(Duration::from_millis(1500));
        match relay.publisher.try_wait() {
            Ok(None) => Some(relay),
            _ => {
                eprintln!("relay: ffmpeg's publish failed; retrying on other ports");
                drop(relay);
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/{}", self.port, self.mount)
    }
}

/// An even UDP port whose pair (RTP, RTCP) is free on loopback right now.
fn free_udp_pair() -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(20_000u16..32_000) & !1;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok()
        {
            return port;
        }
    }
    panic!("no free UDP port pair in 20000..32000");
}

impl Drop for Relay {
    fn drop(&mut self) {
        for c in [&mut self.publisher, &mut self.server] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
