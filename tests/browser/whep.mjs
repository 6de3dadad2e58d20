// Plays a stream over WebRTC (WHEP) in Debian's Chromium with the gateway's own player page and
// reports what getStats() says:
//   node whep.mjs <player page url> <screenshot.png> <seconds>
// Prints one JSON line: ok, the connected→first-frame time (ms), getStats() at the start and
// the end (frames decoded, packets lost, NACKs, PLIs, audio packets, codecs), the video size,
// the answer's audio note and the page's log.
import { launch } from "./chromium.mjs";

const [url, shot, secs = "4"] = process.argv.slice(2);
const browser = await launch();
const out = { ok: false };
const logs = [];
let page;
try {
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("console", (m) => logs.push(m.type() + ": " + m.text()));
  page.on("pageerror", (e) => logs.push("pageerror: " + e.message));
  await page.goto(url);
  await page.waitForFunction(() => window.timing && window.timing.firstFrame !== null, null, { timeout: 20000 });
  out.timing = await page.evaluate(() => window.timing);
  out.firstFrameAfterConnectedMs = out.timing.firstFrame - out.timing.connected;
  out.before = await page.evaluate(() => window.player.getStats());
  await page.waitForTimeout(Number(secs) * 1000);
  out.after = await page.evaluate(() => window.player.getStats());
  out.video = await page.evaluate(() => {
    const v = document.querySelector("video");
    return { width: v.videoWidth, height: v.videoHeight, currentTime: v.currentTime, paused: v.paused };
  });
  out.audio = await page.evaluate(() => window.player.audio);
  out.log = await page.evaluate(() => document.getElementById("log").textContent);
  if (shot) await page.screenshot({ path: shot });
  out.ok = true;
  out.logs = logs.slice(-20);
} catch (e) {
  out.error = String(e && e.message || e);
  out.logs = logs.slice(-20);
  try { out.log = await page.evaluate(() => document.getElementById("log").textContent); } catch (_) { /* gone */ }
} finally {
  console.log(JSON.stringify(out));
  await browser.close();
}
