// Drives the example pages (examples/notifications, examples/dashboard) in
// Debian's headless Chromium for tests/examples.rs.
//
//   node examples.mjs notifications URL SCREENSHOT
//   node examples.mjs dashboard URL SCREENSHOT
//
// Talks to the test in lines: it prints one JSON object per step and waits
// for a line on stdin wherever the test must act first (publish, restart
// the server). A step that does not come true in time fails with a JSON
// {"error"} line and exit code 1, with a screenshot of how the page looked.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [mode, url, shot] = process.argv.slice(2);
const stdin = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (obj) => console.log(JSON.stringify(obj));
/** Waits for the test's next line (it acted), returns it. */
async function heard() {
  const { value, done } = await stdin.next();
  if (done) throw new Error("the test closed stdin");
  return value.trim();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let page;
let exitCode = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  // What EventSource received, frame by frame, as the network saw it
  // (before the client decoded gzip envelopes and unwrapped batches).
  const frames = [];
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  cdp.on("Network.eventSourceMessageReceived", (e) => frames.push({ type: e.eventName, id: e.eventId, data: e.data }));
  await page.goto(url);
  if (mode === "notifications") await notifications(page, problems);
  else if (mode === "dashboard") await dashboard(page, problems, frames);
  else throw new Error(`unknown mode ${mode}`);
} catch (e) {
  exitCode = 1;
  say({ error: String(e?.stack ?? e) });
  if (page) await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
process.exit(exitCode);

async function notifications(page, problems) {
  const state = () => page.evaluate(() => ({
    status: document.getElementById("status").textContent,
    statuses: window.spoutStatuses ?? [],
    unread: Number(document.getElementById("unread").textContent),
    items: [...document.querySelectorAll("#list li")].map((li) => ({
      id: Number(li.dataset.id),
      title: li.querySelector(".title").textContent,
      unread: li.classList.contains("unread"),
    })),
    toasts: [...document.querySelectorAll("#toasts .toast .title")].map((t) => t.textContent),
    toastsShown: Number(document.getElementById("toasts").dataset.shown),
    problem: document.getElementById("problem").textContent,
    lastEventId: window.spout?.lastEventId ?? null,
    transport: window.spout?.transport ?? null,
  }));
  const count = (n) => page.waitForFunction((n) => document.querySelectorAll("#list li").length >= n, n, { timeout: 20000 });

  await page.waitForFunction(() => document.getElementById("status").textContent === "open", null, { timeout: 20000 });
  say({ step: "open", ...(await state()) });

  // The test published; it says how many of them are alice's.
  let expected = Number(await heard());
  await count(expected);
  await page.waitForTimeout(800); // anything more (bob's, a duplicate) would show by now
  say({ step: "received", ...(await state()) });

  await page.click("#bell");
  await page.waitForFunction(() => document.getElementById("unread").textContent === "0");
  say({ step: "marked read", ...(await state()) });

  // The test stopped the server: the page notices and keeps trying.
  await heard();
  await page.waitForFunction(() => document.getElementById("status").textContent !== "open", null, { timeout: 15000 });
  say({ step: "down", ...(await state()) });

  // The test published while the page was away, then served again on the
  // same address: the page reconnects and gets exactly what it missed.
  expected = Number(await heard());
  await page.waitForFunction(() => document.getElementById("status").textContent === "open", null, { timeout: 20000 });
  await count(expected);
  say({ step: "back", ...(await state()) });

  // And more, live.
  expected = Number(await heard());
  await count(expected);
  await page.waitForTimeout(1500);
  const final = await state();
  await page.screenshot({ path: shot, fullPage: true });
  say({ step: "final", ...final });

  // A reload lists the retained history again (read marks kept, no toasts).
  await page.reload();
  await page.waitForFunction(() => document.getElementById("status").textContent === "open", null, { timeout: 20000 });
  await count(expected);
  await page.waitForTimeout(500);
  say({ step: "reloaded", ...(await state()), problems });
}

async function dashboard(page, problems, frames) {
  const state = () => page.evaluate(() => {
    const text = (id) => document.getElementById(id).textContent;
    // Pixels of the chart that are not background: the plot really drew.
    const inked = (id) => {
      const c = document.getElementById(id);
      const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) n++;
      return n;
    };
    return {
      status: text("status"),
      transport: window.spout?.transport ?? null,
      ticks: Number(text("ticks")),
      activity: Number(text("activity")),
      feed: [...document.querySelectorAll("#feed li")].map((li) => li.textContent),
      frames: Number(text("frames")),
      eps: text("eps"),
      epsPeak: Number(text("eps-peak")),
      connections: text("connections"),
      eventsTotal: text("events-total"),
      uptime: text("uptime"),
      samples: {
        eps: Number(document.getElementById("chart-eps").dataset.samples),
        connections: Number(document.getElementById("chart-connections").dataset.samples),
      },
      inked: { eps: inked("chart-eps"), connections: inked("chart-connections") },
    };
  });
  await page.waitForFunction(() => document.getElementById("status").textContent === "open", null, { timeout: 20000 });
  await page.waitForFunction(() => Number(document.getElementById("ticks").textContent) >= 1, null, { timeout: 15000 });
  const first = await state();
  say({ step: "live", ...first });

  // The test published a burst to `activity`: it arrives in full, events/s
  // climbs, ticks keep coming.
  const burst = Number(await heard());
  await page.waitForFunction((n) => Number(document.getElementById("activity").textContent) >= n, burst, { timeout: 15000 });
  await page.waitForFunction(() => Number(document.getElementById("eps-peak").textContent) >= 20, null, { timeout: 15000 });
  await page.waitForFunction((n) => Number(document.getElementById("ticks").textContent) >= n, first.ticks + 3, { timeout: 15000 });
  await page.waitForTimeout(500);
  const later = await state();
  await page.screenshot({ path: shot, fullPage: true });
  const summary = {
    total: frames.length,
    types: [...new Set(frames.map((f) => f.type))],
    batch: frames.filter((f) => f.type === "batch").length,
    gzip: frames.filter((f) => f.type === "batch" && f.data.startsWith('{"compressed":true,"encoding":"gzip"')).length,
    plainBatchBytes: frames.filter((f) => f.type === "batch" && f.data.startsWith("[")).map((f) => new TextEncoder().encode(f.data).length),
    sample: frames.find((f) => f.type === "batch")?.data.slice(0, 120) ?? null,
  };
  say({ step: "later", first, ...later, wire: summary, problems });
}
