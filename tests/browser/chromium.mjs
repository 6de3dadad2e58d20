// How the browser scripts start Debian's Chromium (no downloaded browser): one set of flags for
// play.mjs, whep.mjs and latency.mjs.
import { chromium } from "playwright-core";

const ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
  // WebRTC players on loopback: loopback candidates, real addresses instead of mDNS names.
  "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"];

// Starts the browser with those flags and `extra` ones.
export function launch(extra = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [...ARGS, ...extra],
  });
}
