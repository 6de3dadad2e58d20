// video-server MSE player: speaks the original's websocket protocol, dependency-free.
//
//   const p = new VsMsePlayer(videoElement, "ws://host:8090/ws/live?stream_id=<uuid>&events=1",
//                             { onState: (state, detail) => ... });
//   p.start();  ...  p.stop();
//
// Protocol: a binary message starting with 0x09 carries the codec list; the next binary message
// is an init segment; every later binary message is a moof+mdat fragment. Text "pong" answers our
// "ping"; with events=1 the server also sends JSON text events (online, offline, codec_changed,
// dropped). A second 0x09 means new codecs: the SourceBuffer changes type (or the player
// restarts where changeType is missing).
//
// Where MediaSource is missing (Safari on iPhone, iOS 17.1+) the player uses ManagedMediaSource:
// the video element gets disableRemotePlayback (without it, or an AirPlay alternative, Safari
// never opens the source), and when the browser says `endstreaming` (it wants no more data:
// low memory, battery, the page hidden) the player closes the websocket; at `startstreaming` it
// reconnects and starts again at the server's cached keyframe, live.
(function (global) {
  "use strict";

  // The MediaSource flavour this browser has: the classic one, else the managed one.
  function sourceClass() {
    if (global.MediaSource) return { Cls: global.MediaSource, managed: false };
    if (global.ManagedMediaSource) return { Cls: global.ManagedMediaSource, managed: true };
    return null;
  }

  const MAX_LATENCY_S = 1.0;  // jump to live when further behind than this
  const LIVE_OFFSET_S = 0.15; // where to land behind the live edge
  const KEEP_BEHIND_S = 10;   // buffer kept behind the playhead
  const MAX_QUEUE = 300;      // appends waiting; beyond this the player restarts
  const STUCK_MS = 600;       // playhead not moving this long with media ahead: step over

  class VsMsePlayer {
    constructor(video, url, opts) {
      this.video = video;
      this.url = url;
      this.opts = opts || {};
      this.backoffMs = 500;
      this.stopped = true;
      this.stats = { messages: 0, bytes: 0, jumps: 0, reconnects: 0, nudges: 0, firstFrameMs: null,
        managed: false, suspensions: 0 };
    }

    state(name, detail) {
      this.lastState = name;
      if (this.opts.onState) this.opts.onState(name, detail);
    }

    start() {
      this.stopped = false;
      this.open();
      this.timer = setInterval(() => this.tick(), 250);
    }

    stop() {
      this.stopped = true;
      clearInterval(this.timer);
      clearTimeout(this.retry);
      this.teardown();
      this.state("stopped");
    }

    open() {
      this.suspended = false;
      this.teardown();
      this.queue = [];
      this.sb = null;
      this.codecs = null;
      this.t0 = performance.now();
      const flavour = sourceClass();
      if (!flavour) {
        this.state("unsupported", "this browser has neither MediaSource nor ManagedMediaSource");
        this.stopped = true;
        return;
      }
      this.stats.managed = flavour.managed;
      const ms = new flavour.Cls();
      this.ms = ms;
      if (flavour.managed) {
        this.video.disableRemotePlayback = true;
        ms.addEventListener("endstreaming", () => this.suspend(ms));
        ms.addEventListener("startstreaming", () => this.resume(ms));
      }
      this.video.src = URL.createObjectURL(ms);
      ms.addEventListener("sourceopen", () => this.connect(), { once: true });
      this.state("connecting");
    }

    // ManagedMediaSource asks for no more data: stop the live feed, keep what is buffered.
    suspend(ms) {
      if (ms !== this.ms || this.suspended) return;
      this.suspended = true;
      this.stats.suspensions++;
      clearInterval(this.pinger);
      clearTimeout(this.retry);
      const ws = this.ws;
      this.ws = null;
      if (ws) try { ws.close(); } catch (e) { /* already closed */ }
      this.state("suspended", "the browser asked to stop streaming");
    }

    // ... and may have it again: start over at the live edge (a fresh keyframe).
    resume(ms) {
      if (ms !== this.ms || !this.suspended || this.stopped) return;
      this.suspended = false;
      this.open();
    }

    connect() {
      const ws = new WebSocket(this.url);
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onmessage = (ev) => this.onMessage(ev.data);
      ws.onclose = (ev) => {
        if (this.ws !== ws) return;
        this.state("disconnected", ev.reason || String(ev.code));
        this.scheduleReconnect();
      };
      ws.onerror = () => {};
      this.pinger = setInterval(() => {
        if (ws.readyState === WebSocket.OPEN) ws.send("ping");
      }, 5000);
    }

    scheduleReconnect() {
      if (this.stopped || this.suspended) return;
      clearTimeout(this.retry);
      const delay = this.backoffMs * (0.5 + Math.random() / 2);
      this.backoffMs = Math.min(this.backoffMs * 2, 5000);
      this.stats.reconnects++;
      this.retry = setTimeout(() => this.open(), delay);
    }

    teardown() {
      clearInterval(this.pinger);
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        try { ws.close(); } catch (e) { /* already closed */ }
      }
      if (this.video.src) {
        URL.revokeObjectURL(this.video.src);
        this.video.removeAttribute("src");
        this.video.load();
      }
      this.ms = null;
      this.sb = null;
    }

    onMessage(data) {
      if (typeof data === "string") {
        if (data === "pong") return;
        try {
          const ev = JSON.parse(data);
          this.state(ev.type, ev);
        } catch (e) { /* not an event */ }
        return;
      }
      this.stats.messages++;
      this.stats.bytes += data.byteLength;
      const u8 = new Uint8Array(data);
      if (u8.length > 0 && u8[0] === 9) {
        this.onCodecs(new TextDecoder().decode(u8.subarray(1)));
        return;
      }
      if (this.queue.length > MAX_QUEUE) {
        this.state("overflow");
        this.open();
        return;
      }
      this.queue.push(data);
      this.pump();
    }

    onCodecs(codecs) {
      const mime = 'video/mp4; codecs="' + codecs + '"';
      const flavour = sourceClass();
      if (!flavour || !flavour.Cls.isTypeSupported(mime)) {
        this.state("unsupported", "this browser cannot decode " + codecs);
        this.stopped = true;
        if (this.ws) this.ws.close();
        return;
      }
      if (!this.sb) {
        this.sb = this.ms.addSourceBuffer(mime);
        this.sb.mode = "segments";
        this.sb.addEventListener("updateend", () => this.pump());
        this.sb.addEventListener("error", () => this.state("error", "SourceBuffer error"));
        this.codecs = codecs;
        this.state("playing", codecs);
      } else if (codecs !== this.codecs) {
        if (typeof this.sb.changeType === "function") {
          this.queue.push({ changeType: mime });
          this.codecs = codecs;
          this.pump();
        } else {
          this.open();
        }
      }
    }

    pump() {
      const sb = this.sb;
      if (!sb || sb.updating || this.queue.length === 0 || !this.ms || this.ms.readyState !== "open") return;
      const item = this.queue.shift();
      try {
        if (item.changeType) {
          sb.changeType(item.changeType);
          this.pump();
        } else {
          sb.appendBuffer(item);
        }
      } catch (e) {
        if (e.name === "QuotaExceededError") {
          this.queue.unshift(item);
          this.trim(true);
        } else {
          this.state("error", e.message);
          this.open();
        }
      }
    }

    trim(force) {
      const sb = this.sb, v = this.video;
      if (!sb || sb.updating || v.buffered.length === 0) return;
      const start = v.buffered.start(0);
      const keep = force ? 2 : KEEP_BEHIND_S;
      if (v.currentTime - start > keep + 1) {
        try { sb.remove(start, v.currentTime - keep); } catch (e) { /* retried next tick */ }
      }
    }

    // A playhead that stops with media ahead of it sits in a hole between buffered ranges (a
    // frame lost on the way, a track that starts later) or on a frame the decoder choked on:
    // step to the next range, or just past the stuck point, as hls.js's gap controller does.
    unstick(b) {
      const v = this.video, now = performance.now();
      if (v.paused || v.seeking || v.currentTime !== this.lastTime) {
        this.lastTime = v.currentTime;
        this.lastMoved = now;
        return;
      }
      if (now - this.lastMoved < STUCK_MS || b.end(b.length - 1) - v.currentTime < 0.1) return;
      let to = v.currentTime + 0.05;
      for (let i = 0; i < b.length; i++) {
        if (b.start(i) > v.currentTime) { to = b.start(i) + 0.01; break; }
        if (b.end(i) > v.currentTime) break; // inside a range: just past the stuck point
      }
      v.currentTime = to;
      this.stats.nudges++;
      this.lastMoved = now;
    }

    tick() {
      const v = this.video;
      const b = v.buffered;
      if (b.length === 0) return;
      if (this.stats.firstFrameMs === null && v.readyState >= 2) {
        this.stats.firstFrameMs = Math.round(performance.now() - this.t0);
        this.backoffMs = 500;
      }
      const end = b.end(b.length - 1);
      const behind = end - v.currentTime;
      if (v.currentTime < b.start(0) || behind > MAX_LATENCY_S) {
        v.currentTime = Math.max(b.start(b.length - 1), end - LIVE_OFFSET_S);
        this.stats.jumps++;
      } else {
        this.unstick(b);
      }
      if (v.paused && v.autoplay !== false) {
        const p = v.play();
        if (p && p.catch) p.catch(() => {});
      }
      // What the viewer sees after any jump: distance to the newest buffered frame.
      this.stats.latency = end - v.currentTime;
      this.stats.maxBehind = Math.max(this.stats.maxBehind || 0, behind);
      this.trim(false);
    }
  }

  global.VsMsePlayer = VsMsePlayer;
})(typeof window !== "undefined" ? window : globalThis);
