// Opens a page in Debian's Chromium with a profile in <dir> (so every Chromium process of this
// run names it on its command line, for scripts/bench-dashboard to measure), keeps it open
// for <seconds>, then prints one JSON line about the page.
//   node tests/browser/dashboard-open.mjs <url> <dir> <seconds>   (scripts/bench-dashboard runs it)
import { chromium } from "playwright-core";

const [url, dir, secs = "30"] = process.argv.slice(2);
const context = await chromium.launchPersistentContext(dir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1920, height: 1080 },
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--autoplay-policy=no-user-gesture-required"],
});
try {
  const page = context.pages()[0] || await context.newPage();
  await page.goto(url);
  console.error("READY");
  await page.waitForTimeout(Number(secs) * 1000);
  const info = await page.evaluate(() => ({
    tiles: document.querySelectorAll(".tile").length,
    pictures: [...document.querySelectorAll(".tile img.snap")].filter((i) => i.naturalWidth > 0).length,
    playing: [...document.querySelectorAll(".tile video")].filter((v) => v.videoWidth > 0 && !v.paused).length,
    heapMB: performance.memory ? performance.memory.usedJSHeapSize / 1e6 : null,
  }));
  console.log(JSON.stringify(info));
} finally {
  await context.close();
}
