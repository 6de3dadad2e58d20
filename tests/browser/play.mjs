// Opens a page of the gateway in Debian's Chromium and reports whether its first <video> plays:
//   node play.mjs <url> <screenshot.png> <seconds>
// Optional environment: VIDEO (a CSS selector for the <video> to watch instead of the first),
// INIT (JS run in the page before its own scripts, e.g. to hide an API), REPORT (a JS
// expression evaluated at the end, reported as `extra`),
// WAIT_FOR (a JS expression to wait for after loading) and BEFORE (JS to run then, e.g. a click
// on a timeline), FULL_PAGE (screenshot the whole page).
// Prints one JSON line: first-frame time, currentTime before/after and once a second, frames
// shown before/after, size, error, player stats and the page's text.
import { launch } from "./chromium.mjs";

const [url, shot, secs = "4"] = process.argv.slice(2);
const selector = process.env.VIDEO || "video";
const browser = await launch(["--disable-quic"]);
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const logs = [];
  page.on("console", (m) => logs.push(m.type() + ": " + m.text()));
  page.on("pageerror", (e) => logs.push("pageerror: " + e.message));
  if (process.env.INIT) await page.addInitScript(process.env.INIT);
  const t0 = Date.now();
  await page.goto(url);
  if (process.env.WAIT_FOR) await page.waitForFunction(process.env.WAIT_FOR, null, { timeout: 20000 });
  if (process.env.BEFORE) await page.evaluate(process.env.BEFORE);
  await page.waitForFunction((sel) => {
    const v = document.querySelector(sel);
    return v && v.readyState >= 2 && v.videoWidth > 0;
  }, selector, { timeout: 20000 });
  const firstFrameMs = Date.now() - t0;
  const before = await page.evaluate((sel) => document.querySelector(sel).currentTime, selector);
  // Frames decoded and shown so far: with the count at the end, the frame rate over the run.
  const framesBefore = await page.evaluate((sel) => {
    const q = document.querySelector(sel).getVideoPlaybackQuality?.();
    return q ? q.totalVideoFrames - q.droppedVideoFrames : null;
  }, selector);
  const decodedBefore = await page.evaluate((sel) => {
    const q = document.querySelector(sel).getVideoPlaybackQuality?.();
    return q ? q.totalVideoFrames : null;
  }, selector);
  const videosBefore = await page.evaluate(() => [...document.querySelectorAll("video")].map((x) => x.currentTime));
  // currentTime once a second, to see playback stall and resume.
  const samples = [];
  for (let i = 0; i < Number(secs); i++) {
    await page.waitForTimeout(1000);
    samples.push(await page.evaluate((sel) => document.querySelector(sel).currentTime, selector));
  }
  const after = await page.evaluate((sel) => {
    const v = document.querySelector(sel);
    const p = window.players ? Object.values(window.players)[0] : window.player;
    return {
      currentTime: v.currentTime,
      videoWidth: v.videoWidth,
      videoHeight: v.videoHeight,
      paused: v.paused,
      error: v.error ? v.error.message : null,
      bufferedEnd: v.buffered.length ? v.buffered.end(v.buffered.length - 1) : null,
      audioDecodedBytes: v.webkitAudioDecodedByteCount ?? null,
      droppedFrames: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().droppedVideoFrames : null,
      totalFrames: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : null,
      stats: p ? p.stats : null,
      state: p ? p.lastState : null,
      text: document.body.innerText.slice(0, 3000),
      videos: [...document.querySelectorAll("video")].map((x) => ({ currentTime: x.currentTime, videoWidth: x.videoWidth })),
    };
  }, selector);
  const extra = process.env.REPORT ? await page.evaluate(process.env.REPORT) : null;
  await page.screenshot({ path: shot, fullPage: Boolean(process.env.FULL_PAGE) });
  console.log(JSON.stringify({ ok: true, firstFrameMs, before, framesBefore, decodedBefore, samples, videosBefore, ...after, extra, logs }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
