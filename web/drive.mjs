// Drives the built page in headless Chromium as a reader would: fills each panel's inputs,
// clicks its button and reads the answer the panel keeps in data-result. Used by the browser
// tests (tests/test_web.py), the docs' screenshot and the benchmarks' timings.
//
//   node web/drive.mjs --url http://127.0.0.1:8000/ --chromium /usr/bin/chromium --plan plan.json [--screenshot page.png]
//
// plan.json: [{"task": "imdb", "fields": {"input": "A fine film."}, "repeat": 1}, ...]; each field
// is the id suffix of an input of the task's panel (#<task>-<field>); a "file" field uploads a path.
// Prints {"ready", "status", "threads", "sessionMs": {task: ms}, "requests": [url, ...],
// "results": [{task, result, ms: [...]}, ...]} as JSON.
import { readFileSync } from "node:fs";
import puppeteer from "puppeteer-core";

const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, arg, i, all) =>
  (arg.startsWith("--") ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []));
const plan = JSON.parse(readFileSync(args.plan, "utf-8"));
const browser = await puppeteer.launch({
  executablePath: args.chromium, headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const out = { results: [], console: [], requests: [] };
try {
  const page = await browser.newPage();
  page.on("console", (message) => out.console.push(message.text()));
  page.on("request", (request) => out.requests.push(request.url()));   // every fetch, script, worker and wasm
  page.on("pageerror", (error) => out.console.push(`pageerror: ${error.message}`));
  await page.setViewport({ width: 1100, height: 900 });
  await page.goto(args.url, { waitUntil: "load" });
  await page.waitForFunction(() => document.body.dataset.ready, { timeout: 120000 });
  out.ready = await page.evaluate(() => document.body.dataset.ready);
  out.status = await page.evaluate(() => document.getElementById("status").textContent);
  out.crossOriginIsolated = await page.evaluate(() => globalThis.crossOriginIsolated);
  out.threads = await page.evaluate(() => Number(document.body.dataset.threads));
  out.sessionMs = await page.evaluate(() => JSON.parse(document.body.dataset.sessionMs || "{}"));
  for (const step of out.ready === "true" ? plan : []) {
    for (const [field, value] of Object.entries(step.fields || {})) {
      const selector = `#${step.task}-${field}`;
      if (field === "file") {
        const input = await page.$(selector);
        await input.uploadFile(value);   // the panel reads it when its button is clicked
      } else {
        await page.$eval(selector, (node, v) => { node.value = v; }, String(value));
      }
    }
    const ms = [];
    let result = null;
    for (let i = 0; i < (step.repeat || 1); i++) {
      await page.$eval(`#${step.task}-output`, (node) => { delete node.dataset.result; });
      await page.click(`#${step.task}-run`);
      await page.waitForFunction((id) => document.getElementById(id).dataset.result, { timeout: 300000 }, `${step.task}-output`);
      result = JSON.parse(await page.$eval(`#${step.task}-output`, (node) => node.dataset.result));
      ms.push(result.ms);
    }
    out.results.push({ task: step.task, result, ms });
  }
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out));
