#!/usr/bin/env bash
# Regenerates assets/demo.mp4: the built-in demo stream (H.264 + AAC, 10 s, 640x360 at 25 fps,
# a 2 s GOP like a camera, a burnt-in frame counter and a beeping tone).
set -euo pipefail
cd "$(dirname "$0")/.."
font=/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=s=640x360:r=25:d=10" \
  -f lavfi -i "sine=frequency=660:sample_rate=48000:beep_factor=4:d=10" \
  -vf "drawtext=fontfile=${font}:text='video-server demo  frame %{frame_num}':x=20:y=20:fontsize=28:fontcolor=white:box=1:boxcolor=black@0.6" \
  -c:v libx264 -profile:v main -preset veryfast -tune zerolatency -bf 0 -g 50 -keyint_min 50 -sc_threshold 0 -b:v 600k -maxrate 700k -bufsize 1400k -pix_fmt yuv420p \
  -c:a aac -b:a 64k -ac 2 \
  -movflags +faststart assets/demo.mp4
ls -l assets/demo.mp4
