// Glass-to-glass latency in Debian's Chromium, read from the picture: the /clock test camera
// draws the Unix time (ms mod 2^32) as 32 black/white blocks across its top 40 rows when it
// captures a frame; for every frame the page presents (requestVideoFrameCallback), the band is
// drawn to a canvas, the time read back and set against the frame's expected display time.
//   node latency.mjs <player page url> <seconds> [video selector]
// Prints one JSON line: samples, p50/p90/p99/min/max in ms (the first 3 s, start-up, left out).
import { launch } from "./chromium.mjs";

const [url, secs = "20", selector = "video"] = process.argv.slice(2);
const browser = await launch();
const out = { url };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(url);
  await page.waitForFunction((sel) => {
    const v = document.querySelector(sel);
    return v && v.readyState >= 2 && v.videoWidth > 0;
  }, selector, { timeout: 30000 });
  await page.evaluate((sel) => {
    const v = document.querySelector(sel);
    const c = document.createElement("canvas");
    c.width = 640; c.height = 40;
    const g = c.getContext("2d", { willReadFrequently: true });
    window.latencies = [];
    const t0 = performance.now();
    const onFrame = (now, meta) => {
      // The band is the top 40 of 360 rows, whatever size the player decodes at.
      g.drawImage(v, 0, 0, v.videoWidth, v.videoHeight * 40 / 360, 0, 0, 640, 40);
      const px = g.getImageData(0, 20, 640, 1).data;
      let value = 0;
      for (let i = 0; i < 32; i++) value = value * 2 + (px[(i * 20 + 10) * 4] > 127 ? 1 : 0);
      const shown = performance.timeOrigin + meta.expectedDisplayTime;
      const mod = 2 ** 32;
      const captured = shown - ((((shown - value) % mod) + mod) % mod);
      if (now - t0 > 3000) window.latencies.push(shown - captured);
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  }, selector);
  await page.waitForTimeout(Number(secs) * 1000 + 3000);
  const l = (await page.evaluate(() => window.latencies)).sort((a, b) => a - b);
  const pct = (p) => l.length ? Math.round(l[Math.min(l.length - 1, Math.round(p / 100 * (l.length - 1)))]) : null;
  Object.assign(out, { samples: l.length, p50: pct(50), p90: pct(90), p99: pct(99),
    min: l.length ? Math.round(l[0]) : null, max: l.length ? Math.round(l[l.length - 1]) : null });
} catch (e) {
  out.error = String(e && e.message || e);
} finally {
  console.log(JSON.stringify(out));
  await browser.close();
}
