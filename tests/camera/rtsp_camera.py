#!/usr/bin/python3
"""A real RTSP camera for tests: GStreamer's RTSP server replaying pre-encoded clips live.

Usage: rtsp_camera.py --port 8554 --media DIR [--user U --password P [--digest]]

Mounts (each a shared media, TCP and UDP):
  /h264     H.264 720p25, 2 s GOP
  /h264aac  H.264 + AAC 48 kHz
  /h265     H.265 720p25
  /h264pcma H.264 + G.711 A-law
  /h264b    H.264 High with B-frames (3, b-pyramid): RTP timestamps are presentation times,
            sent in decode order, so they step backwards as real B-frame cameras' do
  /h265b    H.265 with B-frames
  /aac      audio only (AAC 48 kHz)
  /h264late H.264 + AAC whose audio starts 5 s after the video
  /h264big  H.264 4K with keyframes of about 2.4 MB
  /h265open H.265 with open GOPs (CRA keyframes, leading B-frames that refer to the GOP before)
  /clock    H.264 640x360 25 fps encoded live (x264, zero latency, 2 s GOP) showing the wall
            clock as a barcode (see ClockFeeder): glass-to-glass latency is read back from it
The clips are demuxed once into memory and pushed in real time through appsrc (no encoding
while serving); a feeder thread per media paces the buffers and appsrc stamps them.
Prints "READY <port>" on stdout when listening. Must run under Debian's /usr/bin/python3.
"""
import argparse
import os
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtsp, GstRtspServer  # noqa: E402,F401

Gst.init(None)


def load_samples(path, chain):
    """Reads one track of a file through `chain` (demuxer and parser) into a list of
    (duration_ns, flags, bytes, cto_ns) in decode order and its caps; cto_ns is the sample's
    presentation minus decode time (B-frames). A pipeline error ends the program with its text."""
    pipe = Gst.parse_launch(f'filesrc location="{path}" ! {chain} ! appsink name=out sync=false')
    sink = pipe.get_by_name("out")
    pipe.set_state(Gst.State.PLAYING)
    bus = pipe.get_bus()
    samples, caps, last_pts = [], None, None
    while True:
        s = sink.emit("try-pull-sample", 5 * Gst.SECOND)
        if s is None:
            msg = bus.pop_filtered(Gst.MessageType.ERROR)
            if msg is not None:
                raise SystemExit(f"{path}: {msg.parse_error()[0].message}")
            break
        buf = s.get_buffer()
        caps = s.get_caps()
        ok, info = buf.map(Gst.MapFlags.READ)
        data = bytes(info.data)
        buf.unmap(info)
        dts = buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else buf.pts
        samples.append([dts, buf.get_flags(), data, buf.pts - dts])
        last_pts = buf.pts
    pipe.set_state(Gst.State.NULL)
    if not samples:
        raise SystemExit(f"no samples in {path}")
    # Durations from consecutive timestamps; the last one repeats the previous.
    # Decode times from qtdemux start below zero by the reorder delay: offsets stay >= 0.
    base = min(cto for _dts, _f, _d, cto in samples)
    out = []
    for i, (dts, flags, data, cto) in enumerate(samples):
        nxt = samples[i + 1][0] if i + 1 < len(samples) else None
        dur = (nxt - dts) if nxt is not None else (out[-1][0] if out else 40_000_000)
        out.append((dur, flags, data, cto - base))
    return out, caps


class Feeder(threading.Thread):
    """Pushes one track's samples into an appsrc in real time, looping, until it is refused."""

    def __init__(self, appsrc, samples, start, reordered, delay_s=0.0):
        super().__init__(daemon=True)
        self.appsrc, self.samples, self.start_t = appsrc, samples, start + delay_s
        # Streams with B-frames are stamped here (decode time from the pipeline clock,
        # presentation time = decode time + the sample's offset); others by appsrc on push.
        self.reordered = reordered

    def running_time(self):
        clock = self.appsrc.get_clock()
        if clock is None:
            return None
        return clock.get_time() - self.appsrc.get_base_time()

    def run(self):
        due = self.start_t
        origin = None  # running time (ns) minus schedule time (ns), fixed at the first stamp
        while True:
            for dur, flags, data, cto in self.samples:
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                buf = Gst.Buffer.new_wrapped(data)
                buf.set_flags(flags)
                buf.duration = dur
                if self.reordered:
                    if origin is None:
                        now = self.running_time()
                        if now is None:  # not playing yet: skip ahead in real time
                            due += dur / 1e9
                            continue
                        origin = now - int(due * 1e9)
                    # Stamped on the schedule, not on the push: a late push keeps its time.
                    buf.dts = max(0, origin + int(due * 1e9))
                    buf.pts = buf.dts + cto
                if self.appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                    return
                due += dur / 1e9


# Clip key -> (file, demux chain); filled by main(). Loaded samples are cached by key.
CLIPS = {}
_LOADED = {}
_LOCK = threading.Lock()


def clip(key):
    """The samples and caps of a clip, demuxed on first use."""
    with _LOCK:
        if key not in _LOADED:
            path, chain = CLIPS[key]
            _LOADED[key] = load_samples(path, chain)
        return _LOADED[key]


class Factory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, tracks, reordered=False, delays=None):
        super().__init__()
        self.tracks = tracks  # list of (appsrc name, clip key, payloader)
        self.reordered = reordered
        self.delays = delays or {}  # track name -> seconds before it starts
        self.set_shared(True)

    def do_create_element(self, url):
        parts = []
        stamp = "false" if self.reordered else "true"
        for i, (name, key, pay) in enumerate(self.tracks):
            _samples, caps = clip(key)
            parts.append(
                f'appsrc name={name} is-live=true do-timestamp={stamp} format=time caps="{caps.to_string()}" '
                f"! queue ! {pay} name=pay{i} pt={96 + i}"
            )
        return Gst.parse_launch("( " + " ".join(parts) + " )")

    def do_configure(self, media):
        element = media.get_element()
        start = time.monotonic() + 0.05
        for name, key, _pay in self.tracks:
            samples, _caps = clip(key)
            src = element.get_by_name_recurse_up(name) or element.get_child_by_name(name)
            Feeder(src, samples, start, self.reordered, self.delays.get(name, 0.0)).start()


# The barcode of /clock: the frame's capture time, Unix ms mod 2^32, as 32 blocks (most
# significant bit first) across the top CLOCK_BAND rows; white is 1, black 0.
CLOCK_W, CLOCK_H, CLOCK_BAND, CLOCK_BITS = 640, 360, 40, 32


class ClockFeeder(threading.Thread):
    """Draws a frame every 40 ms with the time it was drawn and pushes it to be encoded."""

    def __init__(self, appsrc):
        super().__init__(daemon=True)
        self.appsrc = appsrc

    def frame(self, ms, n):
        block = CLOCK_W // CLOCK_BITS
        bits = ms & 0xFFFFFFFF
        row = b"".join((b"\xff" if bits >> (CLOCK_BITS - 1 - i) & 1 else b"\x00") * block for i in range(CLOCK_BITS))
        # Below the band a bar moves, so that frames differ as a camera's do.
        x = (n * 8) % CLOCK_W
        body = (b"\x60" * x + b"\xc0" * min(40, CLOCK_W - x) + b"\x60" * max(0, CLOCK_W - x - 40))
        return row * CLOCK_BAND + body * (CLOCK_H - CLOCK_BAND)

    def run(self):
        due, n = time.monotonic(), 0
        while True:
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            buf = Gst.Buffer.new_wrapped(self.frame(int(time.time() * 1000), n))
            if self.appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                return
            due += 0.04
            n += 1


class ClockFactory(GstRtspServer.RTSPMediaFactory):
    def __init__(self):
        super().__init__()
        self.set_shared(True)

    def do_create_element(self, url):
        caps = f"video/x-raw,format=GRAY8,width={CLOCK_W},height={CLOCK_H},framerate=25/1"
        return Gst.parse_launch(
            f'( appsrc name=clock is-live=true do-timestamp=true format=time caps="{caps}" '
            "! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=50 bitrate=1500 "
            "! video/x-h264,profile=constrained-baseline ! rtph264pay config-interval=-1 name=pay0 pt=96 )"
        )

    def do_configure(self, media):
        element = media.get_element()
        src = element.get_by_name_recurse_up("clock") or element.get_child_by_name("clock")
        ClockFeeder(src).start()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--media", required=True)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--digest", action="store_true")
    a = ap.parse_args()

    # Clips are demuxed when a mount is first played, once: a camera starts at once, and a
    # test pays only for the clips it uses.
    v264 = "h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au"
    v265 = "h265parse config-interval=-1 ! video/x-h265,stream-format=byte-stream,alignment=au"
    CLIPS.update({
        "h264": (os.path.join(a.media, "h264aac.mp4"), f"qtdemux ! {v264}"),
        "aac": (os.path.join(a.media, "h264aac.mp4"), "qtdemux ! aacparse"),
        "pcma": (os.path.join(a.media, "pcma.wav"), "wavparse ! audio/x-alaw"),
        "h265": (os.path.join(a.media, "h265.mp4"), f"qtdemux ! {v265}"),
        "h264b": (os.path.join(a.media, "h264b.mp4"), f"qtdemux ! {v264}"),
        "h265b": (os.path.join(a.media, "h265b.mp4"), f"qtdemux ! {v265}"),
        "big": (os.path.join(a.media, "big.mp4"), f"qtdemux ! {v264}"),
        "h265open": (os.path.join(a.media, "h265open.mp4"), f"qtdemux ! {v265}"),
    })

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    mounts = server.get_mount_points()
    vpay = "rtph264pay config-interval=-1"
    hpay = "rtph265pay config-interval=-1"
    apay = "rtpmp4gpay"
    mounts.add_factory("/h264", Factory([("v", "h264", vpay)]))
    mounts.add_factory("/h264aac", Factory([("v", "h264", vpay), ("a", "aac", apay)]))
    mounts.add_factory("/h265", Factory([("v", "h265", hpay)]))
    mounts.add_factory("/h264pcma", Factory([("v", "h264", vpay), ("a", "pcma", "rtppcmapay")]))
    mounts.add_factory("/aac", Factory([("a", "aac", apay)]))
    mounts.add_factory("/h264late", Factory([("v", "h264", vpay), ("a", "aac", apay)], delays={"a": 5.0}))
    mounts.add_factory("/h264big", Factory([("v", "big", vpay)]))
    mounts.add_factory("/h264b", Factory([("v", "h264b", vpay)], reordered=True))
    mounts.add_factory("/h265b", Factory([("v", "h265b", hpay)], reordered=True))
    mounts.add_factory("/h265open", Factory([("v", "h265open", hpay)], reordered=True))
    mounts.add_factory("/clock", ClockFactory())

    if a.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        if a.digest:
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(a.user, a.password, token)
        else:
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("user", "media.factory.access", True)
        perms.add_permission_for_role("user", "media.factory.construct", True)
        for path in ("/h264", "/h264aac", "/h265", "/h264pcma", "/h264b", "/h265b", "/aac", "/h264late", "/h264big", "/h265open"):
            mounts.match(path)[0].set_permissions(perms)

    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on {a.port}")
    print(f"READY {a.port}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
