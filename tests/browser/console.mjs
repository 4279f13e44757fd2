// Drives Spout's console (GET /) in Debian's headless Chromium for
// tests/browser.rs. Usage: node console.mjs URL ARTIFACT_DIR
//
// A line protocol: the test writes one JSON command a line on stdin
// ({"do": NAME, ...args}); this script does what an operator would (types,
// clicks), waits for what the page then shows, and answers one JSON line on
// stdout: {"ok": true, ...what the page shows} or {"ok": false, "error"}.
// Every wait is for a condition on the page, with a timeout.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { join } from "node:path";

const [url, artifacts] = process.argv.slice(2);
const TIMEOUT = 15000;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.setDefaultTimeout(TIMEOUT);
page.on("dialog", (d) => d.accept()); // "Erase …?" confirmations
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e)));
await page.goto(url);

const text = (sel) => page.locator(sel).first().textContent();
const until = (fn, arg) => page.waitForFunction(fn, arg, { timeout: TIMEOUT });
const cells = (sel) => page.$$eval(sel, (rows) => rows.map((r) => [...r.children].map((c) => c.textContent)));
/** Waits until the page's notice (or error box) changes to something new; returns it. */
async function outcome(action) {
  await page.evaluate(() => { document.getElementById("notice").hidden = true; document.getElementById("error").hidden = true; });
  await action();
  await until(() => !document.getElementById("notice").hidden || !document.getElementById("error").hidden);
  const error = await page.locator("#error").isVisible() ? await text("#error") : null;
  if (error) throw new Error(`the console shows an error: ${error}`);
  return text("#notice");
}

const commands = {
  // The page is live: its tail stream connected and the first sample taken.
  async ready() {
    await until(() => document.getElementById("tail-state").textContent.startsWith("watching"));
    await until(() => /^\d+$/.test(document.getElementById("connections").textContent));
    return { api: await text("#api") };
  },
  // Waits until the page has seen event `last` and drawn charts.
  // With `plugin`: until that plugin shows at least one call.
  async overview({ last, plugin, shot }) {
    await until((n) => Number(document.getElementById("last").textContent) >= n, last);
    if (plugin) {
      await until((name) => [...document.querySelectorAll("#plugins tr")]
        .some((r) => r.children[0].textContent === name && Number(r.children[2].textContent) >= 1), plugin);
    }
    if (last) await until((n) => document.querySelector("#events tr")?.dataset.id === String(n), last);
    await until(() => Number(document.getElementById("chart-rate").dataset.points) >= 2);
    if (shot) await page.screenshot({ path: join(artifacts, shot), fullPage: true });
    return {
      api: await text("#api"),
      connections: Number(await text("#connections")),
      rate: await text("#rate"),
      last: await text("#last"),
      events: await cells("#events tr"),
      page: await text("#events-page"),
      plugins: await cells("#plugins tr"),
      sources: await cells("#sources tr"),
      charts: await page.$$eval("canvas", (cs) => cs.map((c) => ({
        id: c.id,
        points: Number(c.dataset.points),
        // Painted pixels (the lines and labels): a blank canvas has none.
        inked: c.getContext("2d").getImageData(0, 0, c.width, c.height).data.some((v, i) => i % 4 === 3 && v > 0),
      }))),
    };
  },
  // Pages back once in the event browser.
  async older() {
    const first = await page.locator("#events tr").first().getAttribute("data-id");
    await page.click("#events-follow"); // stop following so the page stays put
    await page.click("#events-older");
    await until((f) => document.querySelector("#events tr")?.dataset.id !== f, first);
    const out = { events: await cells("#events tr"), page: await text("#events-page") };
    await page.click("#events-follow");
    await page.click("#events-newest");
    return out;
  },
  // Enters a key; waits until the API status line starts with `expect`.
  async key({ key, expect = "operator API on" }) {
    await page.fill("#key", key);
    await page.click("#key-form button");
    await until((e) => document.getElementById("api").textContent.startsWith(e), expect);
    return { api: await text("#api"), stored: await page.evaluate(() => sessionStorage.getItem("spout.console.key")) };
  },
  // Lists the topic, opens its presence, and bans `user` from there.
  async ban({ topic, user, duration, shot }) {
    const trow = page.locator(`#topics tr[data-topic="${topic}"]`);
    await trow.waitFor();
    const topics = await cells("#topics tr");
    await trow.getByRole("button", { name: "presence" }).click();
    const prow = page.locator(`#presence tr[data-user="${user}"]`);
    await prow.waitFor();
    const presence = await cells("#presence tr");
    await page.screenshot({ path: join(artifacts, shot), fullPage: true });
    await page.fill("#ban", duration);
    const notice = await outcome(() => prow.getByRole("button", { name: "ban", exact: true }).click());
    await prow.waitFor({ state: "detached" });
    await page.locator(`#bans tr`, { hasText: user }).waitFor();
    return { topics, presence, notice, bans: await cells("#bans tr") };
  },
  // Searches the event browser for `selector`, then erases what matches.
  async erase({ selector }) {
    await page.fill("#events-selector", selector);
    await page.evaluate(() => { document.getElementById("events-page").textContent = ""; });
    await page.click("#events-form button");
    await until((s) => document.getElementById("events-page").textContent.startsWith("ids"), selector);
    const shown = await cells("#events tr");
    const notice = await outcome(() => page.click("#events-erase"));
    await until(() => document.querySelectorAll("#events tr").length === 0);
    return { shown, notice, after: await cells("#events tr"), page: await text("#events-page") };
  },
  // Fills the publish form; waits for the event browser (all topics) to show it.
  async publish({ topic, type, data, shot }) {
    await page.fill("#events-selector", "**");
    await page.click("#events-form button");
    await page.fill("#pub-topic", topic);
    await page.fill("#pub-type", type);
    await page.fill("#pub-data", data);
    const notice = await outcome(() => page.click("#publish-form button"));
    const id = /id (\d+)/.exec(notice)?.[1];
    await page.locator(`#events tr[data-id="${id}"]`).waitFor();
    if (shot) await page.screenshot({ path: join(artifacts, shot), fullPage: true });
    return { notice, id: Number(id), row: (await cells(`#events tr[data-id="${id}"]`))[0] };
  },
  // Points the live tail at a route; returns once it is connected.
  async tail({ route, topic }) {
    await page.fill("#tail-route", route);
    await page.fill("#tail-topic", topic);
    await page.click("#tail-form button");
    await until((r) => document.getElementById("tail-state").textContent.startsWith(`watching ${r}`), route);
    return { state: await text("#tail-state") };
  },
  // Waits for `n` tail rows tagged `tag` (batch, gzip).
  async tailed({ n, tag, shot }) {
    await until(([k, t]) => [...document.querySelectorAll("#tail tr")].filter((r) => r.querySelector(".tag")?.parentElement.textContent.includes(t)).length >= k, [n, tag]);
    if (shot) await page.screenshot({ path: join(artifacts, shot), fullPage: true });
    return { rows: await cells("#tail tr") };
  },
  // Waits for latency figures (the server's histogram moved between samples).
  async latency() {
    await until(() => /^[\d.]+$/.test(document.getElementById("p50").textContent) && Number(document.getElementById("chart-latency").dataset.points) >= 1);
    return { p50: await text("#p50"), p99: await text("#p99") };
  },
  async shot({ name }) {
    await page.screenshot({ path: join(artifacts, name), fullPage: true });
    return {};
  },
};

const lines = createInterface({ input: process.stdin });
console.log(JSON.stringify({ ok: true, started: true }));
for await (const line of lines) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  try {
    const out = await commands[cmd.do](cmd);
    console.log(JSON.stringify({ ok: true, ...out, pageErrors }));
  } catch (e) {
    const file = join(artifacts, `failed-${cmd.do}.png`);
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    console.log(JSON.stringify({ ok: false, error: `${cmd.do}: ${e.message.split("\n")[0]} (screenshot ${file})`, pageErrors }));
  }
}
await browser.close();
process.exit(0);
