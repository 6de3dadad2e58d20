#!/usr/bin/env bash
# Pre-encodes the test camera's clips once (cached in $1, default target/test-media):
# 720p25 like a real camera (2 s GOP, ~2 Mbit/s), a burnt-in frame counter; most without
# B-frames, h264b and h265b with them.
set -euo pipefail
out=${1:-target/test-media}
mkdir -p "$out"
font=/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf
text="drawtext=fontfile=${font}:text='camera %{frame_num}':x=40:y=40:fontsize=48:fontcolor=white:box=1:boxcolor=black@0.6"
if [ ! -s "$out/h264aac.mp4" ]; then
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=s=1280x720:r=25:d=10" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000:d=10" -vf "$text" \
    -c:v libx264 -preset veryfast -bf 0 -g 50 -keyint_min 50 -sc_threshold 0 -b:v 2M -maxrate 2M -bufsize 4M -pix_fmt yuv420p \
    -c:a aac -b:a 64k "$out/h264aac.mp4.tmp.mp4"
  mv "$out/h264aac.mp4.tmp.mp4" "$out/h264aac.mp4"
fi
if [ ! -s "$out/h265.mp4" ]; then
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=s=1280x720:r=25:d=10" -vf "$text" \
    -c:v libx265 -preset veryfast -x265-params "bframes=0:keyint=50:min-keyint=50:scenecut=0:log-level=error" -b:v 1500k -pix_fmt yuv420p \
    -tag:v hvc1 "$out/h265.mp4.tmp.mp4"
  mv "$out/h265.mp4.tmp.mp4" "$out/h265.mp4"
fi
if [ ! -s "$out/small.mp4" ]; then
  # A second H.264 clip with other parameters (size, profile), for parameter-change faults.
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc=s=320x240:r=25:d=4" \
    -c:v libx264 -profile:v baseline -preset veryfast -bf 0 -g 25 -keyint_min 25 -sc_threshold 0 -b:v 300k -pix_fmt yuv420p \
    "$out/small.mp4.tmp.mp4"
  mv "$out/small.mp4.tmp.mp4" "$out/small.mp4"
fi
if [ ! -s "$out/pcma.wav" ]; then
  # G.711 A-law audio: a codec we do not forward yet (it must be dropped, video kept).
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "sine=frequency=300:sample_rate=8000:d=10" \
    -c:a pcm_alaw -ac 1 "$out/pcma.wav.tmp.wav"
  mv "$out/pcma.wav.tmp.wav" "$out/pcma.wav"
fi
if [ ! -s "$out/h264b.mp4" ]; then
  # H.264 High with B-frames (x264's defaults: 3 B-frames, b-pyramid), as many cameras, hardware
  # encoders and every restream of an x264 file send them.
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=s=1280x720:r=25:d=10" -vf "$text" \
    -c:v libx264 -profile:v high -preset veryfast -bf 3 -b_strategy 0 -g 50 -keyint_min 50 -sc_threshold 0 -b:v 2M -maxrate 2M -bufsize 4M -pix_fmt yuv420p \
    "$out/h264b.mp4.tmp.mp4"
  mv "$out/h264b.mp4.tmp.mp4" "$out/h264b.mp4"
fi
if [ ! -s "$out/h265b.mp4" ]; then
  # H.265 with B-frames (x265 with 3 B-frames and b-pyramid).
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=s=1280x720:r=25:d=10" -vf "$text" \
    -c:v libx265 -preset veryfast -x265-params "bframes=3:b-pyramid=1:b-adapt=0:keyint=50:min-keyint=50:scenecut=0:open-gop=0:log-level=error" -b:v 1500k -pix_fmt yuv420p \
    -tag:v hvc1 "$out/h265b.mp4.tmp.mp4"
  mv "$out/h265b.mp4.tmp.mp4" "$out/h265b.mp4"
fi
if [ ! -s "$out/big.mp4" ]; then
  # 4K with keyframes of about 2.4 MB (static noise: incompressible once, cheap after), as a
  # 4K camera's keyframes are.
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "color=c=gray:s=3840x2160:r=25:d=4" \
    -vf "noise=alls=12,drawtext=fontfile=${font}:text='4K %{frame_num}':x=80:y=80:fontsize=120:fontcolor=white:box=1:boxcolor=black" \
    -c:v libx264 -preset ultrafast -bf 0 -g 50 -keyint_min 50 -sc_threshold 0 -crf 27 -pix_fmt yuv420p \
    "$out/big.mp4.tmp.mp4"
  mv "$out/big.mp4.tmp.mp4" "$out/big.mp4"
fi
if [ ! -s "$out/gop5.mp4" ]; then
  # A keyframe every 5 frames: played at 1 fps by the fake camera, a keyframe every 5 s.
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc=s=320x240:r=25:d=4" \
    -c:v libx264 -profile:v main -preset veryfast -bf 0 -g 5 -keyint_min 5 -sc_threshold 0 -b:v 300k -pix_fmt yuv420p \
    "$out/gop5.mp4.tmp.mp4"
  mv "$out/gop5.mp4.tmp.mp4" "$out/gop5.mp4"
fi
if [ ! -s "$out/h265open.mp4" ]; then
  # H.265 with open GOPs: CRA keyframes whose leading B-frames (RASL) refer to the GOP before.
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=s=640x360:r=25:d=8" -vf "$text" \
    -c:v libx265 -preset veryfast -x265-params "bframes=3:b-pyramid=1:b-adapt=0:keyint=50:min-keyint=50:scenecut=0:open-gop=1:log-level=error" -b:v 800k -pix_fmt yuv420p \
    -tag:v hvc1 "$out/h265open.mp4.tmp.mp4"
  mv "$out/h265open.mp4.tmp.mp4" "$out/h265open.mp4"
fi
