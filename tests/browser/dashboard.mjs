// Drives the dashboard in Debian's Chromium with playwright-core (scripts/install-browser),
// while tests/it/dashboard.rs runs a bulk run behind it. Exits non-zero with a line that
// says which claim did not hold.
//   node dashboard.mjs URL RUN_ID SCREENSHOT_PATH
import { createRequire } from "node:module";
// playwright-core lives where scripts/install-browser put it, pinned.
const { chromium } = createRequire(new URL("../../.tools/browser/package.json", import.meta.url))("playwright-core");

const [url, runId, shot] = process.argv.slice(2);
if (!url || !runId || !shot) {
  console.error("usage: node dashboard.mjs URL RUN_ID SCREENSHOT_PATH");
  process.exit(2);
}
const fail = (why) => { console.error("dashboard test: " + why); process.exitCode = 1; throw new Error(why); };
const deadline = (s) => Date.now() + s * 1000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") problems.push("console: " + m.text()); });
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  // Any request that leaves the page's origin (a CDN, a font) is a failure.
  const origin = new URL(url).origin;
  page.on("request", (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith("data:")) problems.push("external request: " + r.url()); });
  await page.goto(url);

  // 1. The run appears, and its progress moves while it runs.
  const row = page.locator(`tr.run[data-run-id="${runId}"]`);
  await row.waitFor({ timeout: 30000 }).catch(() => fail(`run ${runId} never appeared in the runs table`));
  const seen = [];
  let state = "Running", scanned = 0, shotTaken = false;
  const until = deadline(150);
  while (Date.now() < until) {
    const a = await row.evaluate((tr) => ({ settled: Number(tr.dataset.settled), scanned: Number(tr.dataset.scanned), state: tr.dataset.state, text: tr.querySelector(".progress-text").textContent }));
    if (!seen.length || seen[seen.length - 1].settled !== a.settled) seen.push(a);
    state = a.state; scanned = a.scanned;
    if (!shotTaken && state === "Running" && a.scanned > 0 && a.settled >= a.scanned * 0.3) {
      // Mid-run, with the run selected: the README's screenshot.
      await row.click();
      await page.locator(`#detail[data-run-id="${runId}"]`).waitFor({ timeout: 5000 });
      await page.waitForTimeout(1200); // two more refreshes, so the chart has a line
      await page.screenshot({ path: shot, fullPage: true });
      shotTaken = true;
    }
    if (state !== "Running") break;
    await page.waitForTimeout(150);
  }
  if (state === "Running") fail(`the run still shows Running after 150 s; last progress ${JSON.stringify(seen.at(-1))}`);
  const moving = seen.filter((s) => s.state === "Running" && s.settled > 0 && s.settled < s.scanned);
  if (moving.length < 2) fail(`progress did not move while the run ran: saw ${JSON.stringify(seen.map((s) => [s.state, s.settled, s.scanned]))}`);
  for (let i = 1; i < seen.length; i++) {
    if (seen[i].settled < seen[i - 1].settled) fail(`progress went backwards: ${seen[i - 1].settled} then ${seen[i].settled}`);
  }
  if (seen.at(-1).settled !== scanned) fail(`the ended run shows ${seen.at(-1).settled} of ${scanned} settled`);
  if (!shotTaken) fail("no mid-run moment to take the screenshot at");
  console.log(`progress seen: ${seen.map((s) => s.settled).join(" → ")} of ${scanned}`);

  // 2. The failure shows with its reason, and links to the run's report.
  await row.click();
  const reason = page.locator(`#detail[data-run-id="${runId}"] tr.reason[data-outcome="failed"]`);
  await reason.first().waitFor({ timeout: 10000 }).catch(() => fail("no failed reason in the run's detail"));
  const text = await reason.first().locator(".reason-text").textContent();
  if (!text.includes("invalid metadata name `2nd`")) fail(`the failure's reason reads ${JSON.stringify(text)}`);
  const link = row.locator('a[data-outcome="failed"]');
  if (!(await link.textContent()).startsWith("1 failed")) fail(`the run's problems read ${JSON.stringify(await link.textContent())}`);
  const report = await page.request.get(new URL(await link.getAttribute("href"), page.url()).href);
  const lines = (await report.text()).trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
  if (report.status() !== 200 || lines.length !== 1 || lines[0].key !== "bad" || !lines[0].reason.includes("2nd")) {
    fail(`the failed link's report gave ${report.status()}: ${JSON.stringify(lines)}`);
  }
  console.log(`failure shown: ${text}`);

  // 3. The queues are drawn.
  for (const m of ["sqsBacklog", "copies", "listPages", "poison", "rejected"]) {
    if (!(await page.locator(`#queues [data-metric="${m}"]`).count())) fail(`no queue card ${m}`);
  }
  if (problems.length) fail(problems.join("; "));
  console.log("dashboard test: ok");
} catch (e) {
  if (!process.exitCode) { console.error("dashboard test: " + e.message); process.exitCode = 1; }
} finally {
  await browser.close();
}
