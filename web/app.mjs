// The page: one panel per task, each running the task's champion (site.json, written by
// `python -m pipeline.deploy.web build`) on onnxruntime-web. The answers are pipeline.deploy.predict's:
// the same tokenizer (tokenizer.mjs), the same CSV rules (below), the same seeded sampling
// (sampling.mjs). Each panel's last answer is also kept, as JSON, in its output's data-result.
import * as ort from "./ort/ort.wasm.min.mjs";
import { loadTokenizer } from "./tokenizer.mjs";
import { NumpyRandom, pick } from "./sampling.mjs";

ort.env.wasm.wasmPaths = new URL("./ort/", import.meta.url).href;
// Threads need cross-origin isolation (COOP/COEP headers); without it, one thread.
ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

const element = (tag, attributes = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  node.append(...children);
  return node;
};

// The model's request limits (serve.limits, stamped into its metadata at export), checked on
// sizes alone before any work, as pipeline.deploy.predict checks them (pipeline/deploy/limits.py).
export function within(meta, setting, found, what) {
  const limits = meta.serve_limits ? JSON.parse(meta.serve_limits) : null;
  if (limits && found > limits[setting]) {
    throw new Error(`${what}: ${found.toLocaleString("en-US")} is over the model's limit of ${limits[setting].toLocaleString("en-US")} (serve.limits.${setting}, stamped in at export)`);
  }
}

// ---- the classifier ------------------------------------------------------------------------------

export async function classify(model, text) {
  within(model.meta, "max_text_chars", [...text].length, "characters in the review");
  if (!text.trim()) throw new Error("the review is empty; it needs at least one word");
  const ids = model.tokenizer.encode(text);
  const input = new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, ids.length]);
  const out = await model.session.run({ [model.session.inputNames[0]]: input }, ["probabilities"]);
  const p = Array.from(out.probabilities.data);
  const labels = JSON.parse(model.meta.labels);
  return { label: labels[p.indexOf(Math.max(...p))], probabilities: Object.fromEntries(labels.map((l, i) => [l, p[i]])), ids };
}

// ---- the forecaster: pipeline/kinds/forecaster_spec.py's read_window and answer ----------------

// RFC 4180 records as Python's csv module reads them: quoted fields, "" inside quotes, blank lines skipped.
export function csvRecords(text) {
  const records = [];
  let field = "", record = [], quoted = false, any = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') { quoted = true; any = true; }
    else if (c === ",") { record.push(field); field = ""; any = true; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      if (any || field.length) { record.push(field); records.push(record); }
      field = ""; record = []; any = false;
    } else { field += c; any = true; }
  }
  if (any || field.length) { record.push(field); records.push(record); }
  return records;
}

// Python's float(): surrounding whitespace, underscores between digits, inf and nan
function pythonFloat(text) {
  if (text === undefined || text === null) return NaN;
  const s = text.trim();
  if (/^[+-]?(inf|infinity|nan)$/i.test(s)) return s.replace(/^[+-]/, "").toLowerCase().startsWith("n") ? NaN : (s[0] === "-" ? -Infinity : Infinity);
  if (!/^[+-]?(\d(_?\d)*(\.(\d(_?\d)*)?)?|\.\d(_?\d)*)([eE][+-]?\d(_?\d)*)?$/.test(s)) return NaN;
  return Number(s.replaceAll("_", ""));
}

export function readWindow(text, meta, source) {
  const columns = JSON.parse(meta.columns), lookback = Number(meta.lookback);
  const [header = [], ...body] = csvRecords(text);
  const absent = columns.filter((c) => !header.includes(c));
  if (absent.length) throw new Error(`${source}: column(s) ${JSON.stringify(absent)} not found; the model needs ${JSON.stringify(columns)}, the header has ${JSON.stringify(header)}`);
  if (body.length < lookback) throw new Error(`${source}: ${body.length} data rows, but the model looks back ${lookback} rows`);
  const firstLine = 2 + body.length - lookback;
  const rows = body.slice(-lookback);
  const values = rows.map((row, r) => columns.map((column) => {
    const value = pythonFloat(row[header.indexOf(column)]);
    if (!Number.isFinite(value)) throw new Error(`${source}: line ${firstLine + r}, column '${column}': '${row[header.indexOf(column)]}' is not a finite number`);
    return value;
  }));
  const time = header.indexOf(meta.time_column || "");
  return { values, times: rows.map((row) => (time >= 0 ? row[time] : "")) };
}

export async function forecast(model, csvText, source = "the CSV") {
  const { values, times } = readWindow(csvText, model.meta, source);
  const mean = JSON.parse(model.meta.mean), std = JSON.parse(model.meta.std), columns = JSON.parse(model.meta.columns);
  const past = Float32Array.from(values.flatMap((row) => row.map((v, c) => (v - mean[c]) / std[c])));
  const out = await model.session.run({ past: new ort.Tensor("float32", past, [1, values.length, columns.length]) }, ["forecast"]);
  const steps = Number(model.meta.horizon), data = out.forecast.data;
  const result = [];
  for (let t = 0; t < steps; t++) result.push(Object.fromEntries(columns.map((c, j) => [c, data[t * columns.length + j] * std[j] + mean[j]])));
  return { columns, horizon: steps, forecast: result, after: times[times.length - 1], history: values };
}

// ---- the generator: generator_spec.py's generate --------------------------------------------------

export async function generate(model, prompt, { maxChars = 200, temperature = 0.8, seed = 0, topK = null } = {}) {
  within(model.meta, "max_prompt_chars", [...prompt].length, "characters in the prompt");
  within(model.meta, "max_generate_chars", maxChars, "characters to generate (max_chars)");
  const vocab = JSON.parse(model.meta.vocab);
  const lookup = new Map(vocab.map((c, i) => [c, i]));
  const chars = Array.from(prompt);
  const missing = chars.filter((c) => !lookup.has(c));
  if (missing.length || !chars.length) throw new Error(missing.length ? `the prompt has characters outside the model's vocabulary: ${JSON.stringify([...new Set(missing)])}` : "the prompt is empty");
  const names = model.session.inputNames, layers = Number(model.meta.num_layers), hidden = Number(model.meta.hidden_size);
  let state = names.slice(1).map(() => new ort.Tensor("float32", new Float32Array(layers * hidden), [layers, 1, hidden]));
  let ids = chars.map((c) => lookup.get(c));
  const rng = new NumpyRandom(BigInt(seed));
  const generated = [];
  for (let n = 0; n <= maxChars; n++) {
    const feeds = { [names[0]]: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, ids.length]) };
    names.slice(1).forEach((name, i) => { feeds[name] = state[i]; });
    const out = await model.session.run(feeds);
    const outputs = model.session.outputNames;
    state = outputs.slice(1).map((name) => out[name]);
    if (n === maxChars) break;
    const logits = out[outputs[0]].data, size = vocab.length;
    const next = pick(logits.subarray(logits.length - size), temperature, rng, topK);
    generated.push(next);
    ids = [next];
  }
  return { prompt, text: generated.map((i) => vocab[i]).join(""), temperature, seed, top_k: topK, ids: generated };
}

// ---- the panels ----------------------------------------------------------------------------------

function about(task) {
  const figures = Object.entries(task.validation).map(([k, v]) => `${k} ${Number(v).toPrecision(4)}`).join(", ");
  return element("p", { class: "about" },
    `${task.registered} version ${task.version} (${task.run}, ${task.int8 ? "INT8" : "fp32"} ONNX, ${(task.bytes / 1e6).toFixed(1)} MB); validation: ${figures}`);
}

function panel(task, model, controls, run, render) {
  const output = element("div", { class: "output", id: `${task.name}-output` });
  const button = element("button", { id: `${task.name}-run` }, task.kind === "generator" ? "Generate" : task.kind === "forecaster" ? "Forecast" : "Classify");
  button.addEventListener("click", async () => {
    output.classList.remove("error");
    output.textContent = "…";
    try {
      const started = performance.now();
      const result = await run();
      result.ms = performance.now() - started;
      output.dataset.result = JSON.stringify(result);
      output.replaceChildren(...render(result));
    } catch (error) {
      output.classList.add("error");
      output.dataset.result = JSON.stringify({ error: error.message });
      output.textContent = error.message;
    }
  });
  return element("section", { id: `${task.name}-panel` }, element("h2", {}, `${task.name} (${task.kind})`), about(task), ...controls, button, output);
}

function classifierPanel(task, model) {
  const input = element("textarea", { id: `${task.name}-input` });
  input.value = task.request.inputs[0];
  return panel(task, model, [input], () => classify(model, input.value), (r) => [
    element("strong", {}, r.label),
    ...Object.entries(r.probabilities).map(([label, p]) => element("div", {}, `${label}: ${p.toFixed(4)}`,
      element("span", { class: "bar", style: `width:${(p * 20).toFixed(2)}rem` }))),
  ]);
}

function plot(result, target) {
  const history = result.history.map((row) => row[result.columns.indexOf(target)]);
  const ahead = result.forecast.map((step) => step[target]);
  const all = [...history, ...ahead], low = Math.min(...all), high = Math.max(...all), n = all.length;
  const x = (i) => (i / (n - 1)) * 600, y = (v) => 190 - ((v - low) / (high - low || 1)) * 180;
  const line = (values, offset) => values.map((v, i) => `${x(i + offset).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 600 200");
  svg.innerHTML = `<polyline fill="none" stroke="#888" stroke-width="1.5" points="${line(history, 0)}"/>` +
    `<polyline fill="none" stroke="#c33" stroke-width="2" points="${line([history[history.length - 1], ...ahead], history.length - 1)}"/>`;
  return svg;
}

function forecasterPanel(task, model) {
  const target = task.target ?? JSON.parse(task.meta.targets).at(-1);
  const file = element("input", { type: "file", accept: ".csv,text/csv", id: `${task.name}-file` });
  const note = element("span", { class: "about" }, ` or the bundled sample (${task.sample})`);
  const read = async () => {   // the file chosen when the button is clicked, else the sample
    const chosen = file.files[0];
    return chosen ? [await chosen.text(), chosen.name] : [await (await fetch(`${task.name}/${task.sample}`)).text(), task.sample];
  };
  return panel(task, model, [file, note], async () => forecast(model, ...(await read())),
    (r) => [plot(r, target), element("div", {}, `${target}, the next ${r.horizon} steps after ${r.after}: ` +
      r.forecast.map((s) => s[target].toFixed(3)).join(", "))]);
}

function generatorPanel(task, model) {
  const prompt = element("input", { type: "text", id: `${task.name}-input` });
  prompt.value = task.meta.sample_prompt;
  const number = (name, value, step) => { const i = element("input", { type: "number", id: `${task.name}-${name}`, step }); i.value = value; return i; };
  const [chars, temperature, topK, seed] = [number("max-chars", 200, 1), number("temperature", task.sampling.temperature, 0.1),
    number("top-k", task.sampling.top_k ?? "", 1), number("seed", task.sampling.seed, 1)];
  const labelled = (text, control) => element("label", {}, `${text} `, control);
  return panel(task, model, [prompt, element("div", {}, labelled("characters", chars), labelled("temperature", temperature),
    labelled("top-k", topK), labelled("seed", seed))],
  () => generate(model, prompt.value, { maxChars: Number(chars.value), temperature: Number(temperature.value),
    seed: Number(seed.value), topK: topK.value === "" ? null : Number(topK.value) }),
  (r) => [element("span", {}, r.prompt), element("strong", {}, r.text)]);
}

const PANELS = { classifier: classifierPanel, forecaster: forecasterPanel, generator: generatorPanel };

async function main() {
  const status = document.getElementById("status");
  try {
    const site = await (await fetch("site.json")).json();
    const sessionMs = {};
    for (const task of site.tasks) {
      const started = performance.now();
      const session = await ort.InferenceSession.create(`${task.name}/${task.model}`, { executionProviders: ["wasm"] });
      sessionMs[task.name] = performance.now() - started;   // fetching the model, and creating its session
      const model = { session, meta: task.meta, tokenizer: task.meta.tokenizer_json ? loadTokenizer(JSON.parse(task.meta.tokenizer_json)) : null };
      document.getElementById("panels").append(PANELS[task.kind](task, model));
    }
    status.textContent = `ready: ${site.tasks.length} models, onnxruntime-web ${site.onnxruntime_web}, ${ort.env.wasm.numThreads} thread(s).`;
    document.body.dataset.sessionMs = JSON.stringify(sessionMs);
    document.body.dataset.threads = String(ort.env.wasm.numThreads);
    document.body.dataset.ready = "true";
  } catch (error) {
    status.textContent = `failed: ${error.message}`;
    status.classList.add("error");
    document.body.dataset.ready = "error";
  }
}

if (typeof document !== "undefined") main();
