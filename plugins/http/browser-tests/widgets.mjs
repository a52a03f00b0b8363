// Widget record for loom-http: open the ComfyUI web frontend served by `loom serve` in
// headless Chromium, create one node of every type in /object_info in the frontend's own
// graph, give every widget a distinct non-default value (so an order mistake shows), grow
// a few dynamic inputs, and write what the frontend saves (the UI workflow, trimmed to what
// a converter reads) next to what it sends (`app.graphToPrompt()`'s API prompt).
//
//   node widgets.mjs http://127.0.0.1:PORT path/to/output.json
//
// `nox -s widgets` starts the server and runs this (see ../README.md);
// tests/e2e/test_frontend_widgets.py checks Loom's UI->API converter against the record.
// Chromium gets a fake camera, so WebcamCapture captures a frame (its widget refuses to
// serialize without one) and uploads it as the frontend does. Environment: as browser.mjs says.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import * as browser from "./browser.mjs";

// Chromium's built-in test camera, granted without a permission prompt.
const FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"];

const [serverArg, outPath] = process.argv.slice(2);
if (!serverArg || !outPath) {
  console.error("usage: node widgets.mjs SERVER_URL OUTPUT.json");
  process.exit(2);
}
const server = new URL(serverArg);
const started = Date.now();
const log = (msg) => console.log(`[widgets ${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);

// Runs in the page: builds the graph and returns {workflow, prompt, failures}.
async function recordInPage() {
  const { app, LiteGraph } = window;
  const info = await (await fetch("/api/object_info")).json();
  app.graph.clear();
  const failures = [];
  // A source of every output type the grown inputs below need.
  const sources = {};
  const source = (type, cls) => {
    if (!sources[type]) {
      const node = LiteGraph.createNode(cls);
      app.graph.add(node);
      sources[type] = node;
    }
    return sources[type];
  };

  // Distinct, valid, non-default values: numbers count up from the widget's minimum by its
  // step, combos take their last option, toggles flip, text is numbered.
  let counter = 0;
  const setValue = (widget) => {
    counter += 1;
    const opts = widget.options ?? {};
    let value;
    if (widget.name === "control_after_generate" || widget.name === "control_filter_list") return;
    if (widget.type === "combo") {
      let values = opts.values;
      if (typeof values === "function") values = values(widget, null);
      if (!Array.isArray(values) || values.length < 2) return;
      value = values[values.length - 1];
    } else if (widget.type === "number") {
      const step = opts.step2 ?? (opts.step ? opts.step / 10 : 1);
      const min = Number.isFinite(opts.min) ? opts.min : 0;
      const max = Number.isFinite(opts.max) ? opts.max : min + 1000 * step;
      value = Math.min(max, min + step * (counter % 50 + 1));
      if (opts.round) value = Math.round(value / opts.round) * opts.round;
      value = Number(value.toFixed(opts.precision ?? 6));
      if (value === widget.value) value = Math.min(max, value + step);
    } else if (widget.type === "toggle") {
      value = !widget.value;
    } else if (widget.type === "text" || widget.type === "customtext") {
      value = `${widget.name} #${counter}`;
    } else {
      return;
    }
    widget.value = value;
    try { widget.callback?.(value, app.canvas, widget.node ?? undefined); } catch (e) { /* the value stands */ }
  };
  const setAll = (node, chosen = {}) => {
    const done = new Set();
    for (const widget of node.widgets ?? []) {
      if (!(widget.name in chosen)) continue;
      widget.value = chosen[widget.name];
      widget.callback?.(widget.value, app.canvas, node);
      done.add(widget);
    }
    for (let pass = 0; pass < 3; pass++) {
      for (const widget of [...(node.widgets ?? [])]) {
        if (done.has(widget)) continue;
        done.add(widget);
        if (widget.name === "control_after_generate") widget.value = "fixed";
        setValue(widget);
      }
    }
  };

  const nodes = {};
  for (const type of Object.keys(info).sort()) {
    try {
      const node = LiteGraph.createNode(type);
      if (!node) { failures.push(`${type}: createNode returned nothing`); continue; }
      app.graph.add(node);
      setAll(node);
      nodes[type] = node;
    } catch (e) {
      failures.push(`${type}: ${e.message ?? e}`);
    }
  }

  // More DynamicCombo options than the last one each type got above.
  const extra = (type, chosen) => {
    try {
      const node = LiteGraph.createNode(type);
      app.graph.add(node);
      setAll(node, chosen);
    } catch (e) {
      failures.push(`${type} with ${JSON.stringify(chosen)}: ${e.message ?? e}`);
    }
  };
  extra("ResizeImageMaskNode", { resize_type: "scale dimensions" });
  extra("ResizeImageMaskNode", { resize_type: "scale by multiplier" });

  // WebcamCapture: capture_on_queue was flipped off above, so its image widget serializes
  // only after a capture. Wait for the (fake) camera to stream, then press capture.
  const webcam = nodes.WebcamCapture;
  if (webcam) {
    const until = Date.now() + 30000;
    const pause = () => new Promise((r) => setTimeout(r, 100));
    const capture = () => (webcam.widgets ?? []).find((w) => w.type === "button" && w.name !== "image");
    while (capture()?.disabled !== false && Date.now() < until) await pause();
    if (capture()?.disabled === false) {
      capture().callback?.();
      while (!webcam.imgs?.length && Date.now() < until) await pause();
    }
    if (!webcam.imgs?.length) failures.push("WebcamCapture: the camera gave no frame to capture");
  }

  // Grown dynamic inputs: Autogrow sockets (two images into BatchImagesNode) get a new
  // slot when one is connected. (DynamicCombos such as ResizeImageMaskNode's resize_type
  // already took their last option above, which brings that option's widgets.)
  const grow = (type, inputPrefix, sourceType, sourceClass, count) => {
    const node = nodes[type];
    if (!node) return;
    for (let i = 0; i < count; i++) {
      const slot = node.inputs.findIndex((inp) => inp.name.startsWith(inputPrefix) && inp.link == null);
      if (slot < 0) { failures.push(`${type}: no free ${inputPrefix} slot`); return; }
      source(sourceType, sourceClass).connect(0, node, slot);
    }
  };
  // Widgets fed by a link: the input's socket takes the link and the saved value stays in
  // its widgets_values slot, which the converter must skip, not shift over.
  const feed = (type, inputName, sourceType, sourceClass) => {
    const node = nodes[type];
    if (!node) return;
    const slot = node.inputs.findIndex((inp) => inp.name === inputName);
    if (slot < 0) { failures.push(`${type}: no ${inputName} input socket`); return; }
    source(sourceType, sourceClass).connect(0, node, slot);
  };
  try {
    feed("KSampler", "steps", "INT", "PrimitiveInt");
    feed("KSamplerAdvanced", "cfg", "FLOAT", "PrimitiveFloat");
    feed("CLIPTextEncode", "text", "STRING", "PrimitiveStringMultiline");
    grow("BatchImagesNode", "images", "IMAGE", "EmptyImage", 2);
    grow("BatchMasksNode", "masks", "MASK", "SolidMask", 2);
    grow("BatchLatentsNode", "latents", "LATENT", "EmptyLatentImage", 2);
  } catch (e) {
    failures.push(`growing inputs: ${e.message ?? e}`);
  }

  const workflow = app.graph.serialize();
  const { output } = await app.graphToPrompt();
  return { workflow, prompt: output, failures };
}

function trim(workflow) {
  // Only what a UI->API converter reads: no positions, sizes, colours, or properties.
  const nodes = workflow.nodes.map((n) => ({
    id: n.id,
    type: n.type,
    mode: n.mode ?? 0,
    inputs: (n.inputs ?? []).map((i) => {
      const kept = { name: i.name, type: i.type, link: i.link ?? null };
      if (i.widget) kept.widget = i.widget;
      return kept;
    }),
    outputs: (n.outputs ?? []).map((o) => ({ name: o.name, type: o.type, links: o.links ?? null })),
    widgets_values: n.widgets_values ?? [],
  }));
  return { last_node_id: workflow.last_node_id, last_link_id: workflow.last_link_id, nodes,
           links: workflow.links, version: workflow.version };
}

async function main() {
  await browser.seedSettings(server);
  const { page, close } = await browser.launchBrowser(server, FAKE_CAMERA);
  try {
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    await page.goto(server.href, { timeout: browser.TIMEOUT });
    await browser.waitFor("the graph editor", () => page.evaluate(() =>
      Boolean(window.app?.graph && window.LiteGraph?.registered_node_types?.SaveImage)));
    const frontend = await browser.frontendVersion(page);
    log(`graph editor ready (frontend ${frontend})`);
    const { workflow, prompt, failures } = await page.evaluate(recordInPage);
    for (const f of failures) log(`not recorded: ${f}`);
    // Only the widget inputs of the API prompt: linked inputs are [node_id, slot] pairs.
    const api = {};
    for (const [id, entry] of Object.entries(prompt)) {
      const inputs = {};
      for (const [name, value] of Object.entries(entry.inputs)) {
        const isLink = Array.isArray(value) && value.length === 2 && typeof value[0] === "string"
          && Number.isInteger(value[1]);
        if (!isLink) inputs[name] = value;
      }
      api[id] = { class_type: entry.class_type, inputs };
    }
    const record = { frontend, workflow: trim(workflow), api, not_recorded: failures };
    mkdirSync(dirname(outPath), { recursive: true });
    writeFileSync(outPath, JSON.stringify(record, null, 0) + "\n");
    log(`${workflow.nodes.length} nodes, ${Object.keys(api).length} in the API prompt -> ${outPath}`);
  } finally {
    await close();
  }
}

try {
  await main();
} catch (error) {
  console.error(`\nWIDGET RECORD FAILED: ${error.message ?? error}`);
  process.exit(1);
}
