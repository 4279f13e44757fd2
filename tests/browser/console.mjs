// Opens Spout's console (GET /) in Debian's headless Chromium and reports
// what the page shows. Usage: node console.mjs URL SCREENSHOT
// Prints "READY" once the page is live (its stream connected), then waits
// for a line on stdin (the test publishes meanwhile), waits until the page
// shows 20 event rows, prints the page state as JSON, saves a screenshot.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("state").textContent.startsWith("watching"));
  await page.waitForFunction(() => /^\d+$/.test(document.getElementById("connections").textContent));
  console.log("READY");
  const lines = createInterface({ input: process.stdin });
  for await (const _ of lines) break;
  lines.close();
  await page.waitForFunction(() => document.querySelectorAll("#events tr").length === 20
    && document.querySelector("#events tr td").textContent === "25", null, { timeout: 15000 });
  // Stats refresh every 2 s: wait for one that has seen the burst.
  await page.waitForFunction(() => Number(document.getElementById("last").textContent) >= 25, null, { timeout: 15000 });
  const state = await page.evaluate(() => ({
    connections: Number(document.getElementById("connections").textContent),
    rate: document.getElementById("rate").textContent,
    last: document.getElementById("last").textContent,
    rows: [...document.querySelectorAll("#events tr")].map((r) => [...r.children].map((c) => c.textContent)),
    plugins: [...document.querySelectorAll("#plugins tr")].map((r) => [...r.children].map((c) => c.textContent)),
  }));
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify(state));
} finally {
  await browser.close();
}
process.exit(0);
