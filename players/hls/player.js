// video-server HLS player: hls.js (vendored from npm, see players/hls/package.json) in its
// low-latency mode, or the browser's own HLS (Safari, iOS) where MSE is missing.
//
//   const p = new VsHlsPlayer(videoElement, "http://host:8090/hls/<uuid>.m3u8",
//                             { lowLatency: true, onState: (state, detail) => ... });
//   p.start();  ...  p.stop();
//
// Network and media errors are recovered in place (hls.js keeps its buffer); anything else
// recreates the player with a growing backoff, so a camera that goes away and comes back
// plays again without a page reload.
(function (global) {
  "use strict";

  class VsHlsPlayer {
    constructor(video, url, opts) {
      this.video = video;
      this.url = url;
      this.opts = opts || {};
      this.backoffMs = 1000;
      this.stats = { latency: null, reconnects: 0, recoveries: 0, firstFrameMs: null, mode: null };
    }

    state(name, detail) {
      this.lastState = name;
      if (this.opts.onState) this.opts.onState(name, detail);
    }

    start() {
      this.stopped = false;
      this.t0 = performance.now();
      this.open();
      this.timer = setInterval(() => this.tick(), 500);
    }

    stop() {
      this.stopped = true;
      clearInterval(this.timer);
      clearTimeout(this.retry);
      this.teardown();
      this.state("stopped");
    }

    teardown() {
      if (this.hls) {
        this.hls.destroy();
        this.hls = null;
      }
    }

    open() {
      this.teardown();
      const v = this.video;
      const Hls = global.Hls;
      if (Hls && Hls.isSupported()) {
        this.stats.mode = this.opts.lowLatency === false ? "hls.js" : "hls.js LL-HLS";
        const hls = new Hls({
          lowLatencyMode: this.opts.lowLatency !== false,
          backBufferLength: 30,
          maxLiveSyncPlaybackRate: 1.5,
          liveDurationInfinity: true,
        });
        this.hls = hls;
        hls.on(Hls.Events.MANIFEST_PARSED, () => {
          this.state("playing");
          const p = v.play();
          if (p && p.catch) p.catch(() => {});
        });
        hls.on(Hls.Events.FRAG_BUFFERED, () => { this.backoffMs = 1000; });
        hls.on(Hls.Events.ERROR, (_e, data) => {
          if (!data.fatal) return;
          this.stats.recoveries++;
          if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
            hls.recoverMediaError();
          } else {
            this.state("reconnecting", { error: data.details });
            this.retryLater();
          }
        });
        hls.loadSource(this.url);
        hls.attachMedia(v);
        this.state("connecting");
      } else if (v.canPlayType("application/vnd.apple.mpegurl")) {
        this.stats.mode = "native";
        v.src = this.url;
        v.addEventListener("error", () => this.retryLater(), { once: true });
        const p = v.play();
        if (p && p.catch) p.catch(() => {});
        this.state("playing");
      } else {
        this.state("unsupported", { error: "this browser has neither MSE nor native HLS" });
      }
    }

    retryLater() {
      if (this.stopped) return;
      this.teardown();
      clearTimeout(this.retry);
      this.retry = setTimeout(() => {
        this.stats.reconnects++;
        this.open();
      }, this.backoffMs);
      this.backoffMs = Math.min(this.backoffMs * 2, 10000);
    }

    tick() {
      const v = this.video;
      if (this.stats.firstFrameMs === null && v.readyState >= 2) {
        this.stats.firstFrameMs = Math.round(performance.now() - this.t0);
      }
      if (this.hls) {
        this.stats.latency = this.hls.latency;
        this.stats.targetLatency = this.hls.targetLatency;
      }
      if (v.paused && v.readyState >= 2) {
        const p = v.play();
        if (p && p.catch) p.catch(() => {});
      }
    }
  }

  global.VsHlsPlayer = VsHlsPlayer;
})(typeof window !== "undefined" ? window : globalThis);
