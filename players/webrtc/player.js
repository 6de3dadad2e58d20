// video-server WebRTC player: WHEP (RFC 9725) with nothing but the browser's RTCPeerConnection.
//
//   const p = new VsWhepPlayer(videoElement, "http://host:8090/whep/<stream id>?token=…", {
//     onState: (name, detail) => …,   // "connecting", "playing", "retrying", "failed", "stopped"
//   });
//   p.start(); … p.stop();
//
// The gateway answers as an ICE-lite peer with every candidate in its answer, so the offer is
// sent once ICE gathering is done (or after 1 s) and no trickle is needed. On failure or a lost
// connection the player retries with a growing delay (1 s … 10 s). `p.getStats()` resolves to
// { framesDecoded, framesDropped, packetsLost, nackCount, pliCount, jitterBufferDelayMs,
//   audioPacketsReceived, audioSamplesDecoded, videoCodec, audioCodec } from getStats().
(function (global) {
  "use strict";

  class VsWhepPlayer {
    constructor(video, url, opts = {}) {
      this.video = video;
      this.url = url;
      this.opts = opts;
      this.pc = null;
      this.location = null;
      this.stopped = true;
      this.retries = 0;
      this.timer = null;
      this.audio = null; // what the answer said of audio (X-Webrtc-Audio)
      this.lastState = "";
      // firstFrameMs: start() to the first frame shown; latency: seconds from a frame's last
      // packet arriving to its display (requestVideoFrameCallback), the part the browser adds.
      this.stats = { firstFrameMs: null, latency: null };
      this.watchFrames();
    }

    state(name, detail) {
      this.lastState = name;
      if (this.opts.onState) this.opts.onState(name, detail);
    }

    watchFrames() {
      const v = this.video;
      if (!v.requestVideoFrameCallback) return;
      const onFrame = (now, meta) => {
        if (this.stats.firstFrameMs === null && this.t0 != null) {
          this.stats.firstFrameMs = Math.round(now - this.t0);
        }
        if (meta.receiveTime != null && meta.expectedDisplayTime != null) {
          this.stats.latency = Math.max(0, meta.expectedDisplayTime - meta.receiveTime) / 1000;
        }
        if (!this.stopped) v.requestVideoFrameCallback(onFrame);
      };
      v.requestVideoFrameCallback(onFrame);
    }

    start() {
      this.stopped = false;
      this.t0 = performance.now();
      this.connect();
    }

    async connect() {
      this.close();
      this.state("connecting");
      const pc = new RTCPeerConnection({ iceServers: this.iceServers || [] });
      this.pc = pc;
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      const stream = new MediaStream();
      pc.ontrack = (e) => {
        stream.addTrack(e.track);
        if (this.video.srcObject !== stream) this.video.srcObject = stream;
        const p = this.video.play();
        if (p && p.catch) p.catch(() => {});
      };
      pc.onconnectionstatechange = () => {
        if (pc !== this.pc) return;
        if (pc.connectionState === "connected") {
          this.retries = 0;
          this.state("playing", { audio: this.audio });
        } else if (pc.connectionState === "failed" || pc.connectionState === "disconnected") {
          this.retry(pc.connectionState);
        }
      };
      try {
        await pc.setLocalDescription(await pc.createOffer());
        await this.gathered(pc);
        const r = await fetch(this.url, {
          method: "POST",
          headers: { "Content-Type": "application/sdp" },
          body: pc.localDescription.sdp,
        });
        if (pc !== this.pc) return;
        if (r.status !== 201) {
          let why = r.status + "";
          try { const j = await r.json(); why += " " + (j.error || j.Error || ""); } catch (_) { /* not JSON */ }
          throw new Error(why);
        }
        const loc = r.headers.get("Location");
        this.location = loc ? new URL(loc, this.url).href : null;
        this.audio = r.headers.get("X-Webrtc-Audio");
        this.iceServers = parseLinks(r.headers.get("Link"));
        await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
      } catch (e) {
        if (pc === this.pc) this.retry(String(e.message || e));
      }
    }

    // Resolves when ICE gathering completes, or after 1 s (host candidates come at once).
    gathered(pc) {
      if (pc.iceGatheringState === "complete") return Promise.resolve();
      return new Promise((resolve) => {
        const t = setTimeout(resolve, 1000);
        pc.addEventListener("icegatheringstatechange", () => {
          if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(); }
        });
      });
    }

    retry(why) {
      if (this.stopped) return;
      this.close();
      const delay = Math.min(10000, 1000 * 2 ** Math.min(this.retries, 4));
      this.retries++;
      this.state(this.retries > 1 ? "retrying" : "failed", { why, delay_ms: delay });
      this.timer = setTimeout(() => this.connect(), delay);
    }

    // Ends the session on the gateway (DELETE) and here.
    close() {
      clearTimeout(this.timer);
      if (this.location) {
        fetch(this.location, { method: "DELETE" }).catch(() => {});
        this.location = null;
      }
      if (this.pc) {
        const pc = this.pc;
        this.pc = null;
        pc.close();
      }
    }

    stop() {
      this.stopped = true;
      this.close();
      this.state("stopped");
    }

    async getStats() {
      const out = { framesDecoded: 0, framesDropped: 0, packetsLost: 0, nackCount: 0, pliCount: 0,
        jitterBufferDelayMs: null, audioPacketsReceived: 0, audioSamplesDecoded: 0, videoCodec: null,
        audioCodec: null };
      if (!this.pc) return out;
      const report = await this.pc.getStats();
      const codecs = {};
      report.forEach((s) => { if (s.type === "codec") codecs[s.id] = s.mimeType; });
      report.forEach((s) => {
        if (s.type !== "inbound-rtp") return;
        if (s.kind === "video") {
          out.framesDecoded = s.framesDecoded || 0;
          out.framesDropped = s.framesDropped || 0;
          out.packetsLost = s.packetsLost || 0;
          out.nackCount = s.nackCount || 0;
          out.pliCount = s.pliCount || 0;
          if (s.jitterBufferEmittedCount) {
            out.jitterBufferDelayMs = (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount;
          }
          out.videoCodec = codecs[s.codecId] || null;
        } else if (s.kind === "audio") {
          out.audioPacketsReceived = s.packetsReceived || 0;
          // Samples that came from packets (not made up to hide a gap).
          out.audioSamplesDecoded = (s.totalSamplesReceived || 0) - (s.concealedSamples || 0);
          out.audioCodec = codecs[s.codecId] || null;
        }
      });
      return out;
    }
  }

  // `Link: <stun:…>; rel="ice-server"; username="…"; credential="…"` → RTCIceServer list.
  function parseLinks(header) {
    if (!header) return [];
    return header.split(/,(?=\s*<)/).map((part) => {
      const m = part.match(/<([^>]+)>/);
      if (!m || !/rel="ice-server"/.test(part)) return null;
      const s = { urls: m[1] };
      const u = part.match(/username="([^"]*)"/);
      const c = part.match(/credential="([^"]*)"/);
      if (u) s.username = u[1];
      if (c) s.credential = c[1];
      return s;
    }).filter(Boolean);
  }

  global.VsWhepPlayer = VsWhepPlayer;
})(typeof window !== "undefined" ? window : globalThis);
