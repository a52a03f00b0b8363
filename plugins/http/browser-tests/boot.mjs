// Browser check for loom-http: open the ComfyUI web frontend served by `loom serve` in
// headless Chromium, wait for the graph editor, queue a prompt that needs no model weights
// (EmptyImage -> ImageInvert -> SaveImage) through the frontend itself, and wait until the
// output image is displayed. Saves a screenshot either way; exits 1 with a reason on failure.
//
//   node boot.mjs http://127.0.0.1:PORT path/to/screenshot.png
//
// `nox -s browser` starts the server and runs this (see ../README.md). Works with frontend
// 1.35.x (ComfyUI 0.8's pin) and 1.58.x. Environment: as browser.mjs says.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import * as browser from "./browser.mjs";

const [serverArg, shotPath] = process.argv.slice(2);
if (!serverArg || !shotPath) {
  console.error("usage: node boot.mjs SERVER_URL SCREENSHOT.png");
  process.exit(2);
}
const server = new URL(serverArg);
const started = Date.now();
const log = (msg) => console.log(`[browser ${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);

// Model-free: core nodes only. The colour makes the inverted output easy to recognise (orange).
const PROMPT = {
  1: { class_type: "EmptyImage", inputs: { width: 256, height: 256, batch_size: 1, color: 0x3366ff } },
  2: { class_type: "ImageInvert", inputs: { image: ["1", 0] } },
  3: { class_type: "SaveImage", inputs: { images: ["2", 0], filename_prefix: "loom_browser" } },
};

// Seen while the page runs; printed on failure.
const seen = { pageErrors: [], consoleErrors: [], failedRequests: [], wsTypes: [], views: [] };
let step = "start";

async function closeDialogs(page) {
  // Belt and braces: anything modal left open (release notes, missing-node warnings, a
  // template browser from a frontend that ignores the setting) would hide the canvas.
  const dialogs = page.locator(".p-dialog:visible");
  const count = await dialogs.count();
  for (let i = count - 1; i >= 0; i--) {
    const dialog = dialogs.nth(i);
    const title = (await dialog.locator(".p-dialog-title, h2, h3").first().textContent().catch(() => ""))?.trim();
    log(`closing a dialog left open: ${JSON.stringify(title || "(untitled)")}`);
    const close = dialog.locator('.p-dialog-close-button, button[aria-label="Close"], button[aria-label="close"]');
    if (await close.count()) await close.first().click().catch(() => {});
    else await page.keyboard.press("Escape");
  }
  return count;
}

function onWebSocket(ws, state) {
  if (!new URL(ws.url()).pathname.endsWith("/ws")) return;
  ws.on("framereceived", ({ payload }) => {
    if (typeof payload !== "string") return; // binary preview frames
    let msg;
    try { msg = JSON.parse(payload); } catch { return; }
    seen.wsTypes.push(msg.type);
    if (msg.type === "executed") state.executed.push(msg.data);
  });
}

// browser.waitFor, remembering what it waits for (the failure report names it).
function waitFor(what, predicate, timeout) {
  step = what;
  return browser.waitFor(what, predicate, timeout);
}

async function main() {
  step = "seeding settings";
  await browser.seedSettings(server);

  step = "starting Chromium";
  const { page, close } = await browser.launchBrowser(server);
  const state = { executed: [], promptResponse: null };
  try {
    page.on("pageerror", (e) => seen.pageErrors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") seen.consoleErrors.push(m.text()); });
    page.on("requestfailed", (r) => seen.failedRequests.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
    page.on("websocket", (ws) => onWebSocket(ws, state));
    page.on("response", (r) => {
      const url = new URL(r.url());
      if (url.origin !== server.origin) return;
      if (url.pathname.endsWith("/view")) {
        seen.views.push({ filename: url.searchParams.get("filename"), type: url.searchParams.get("type"),
                          status: r.status(), contentType: r.headers()["content-type"] });
      }
      if (url.pathname.endsWith("/prompt") && r.request().method() === "POST") state.promptResponse = r;
    });

    step = "loading the page";
    await page.goto(server.href, { timeout: browser.TIMEOUT });
    await waitFor("the graph editor (app.graph, #graph-canvas, SaveImage registered)", () => page.evaluate(() => {
      const app = window.app;
      const canvas = document.querySelector("#graph-canvas");
      return Boolean(app?.graph && app.canvas && canvas && canvas.clientWidth > 0
                     && window.LiteGraph?.registered_node_types?.SaveImage);
    }));
    step = "checking the frontend version";
    const frontend = await browser.frontendVersion(page);
    log(`graph editor ready (frontend ${frontend ?? "version unknown"})`);
    await closeDialogs(page);

    step = "loading the API prompt and queueing it (app.loadApiJson + app.queuePrompt)";
    await page.evaluate(async (prompt) => {
      await window.app.loadApiJson(prompt, "loom-browser-check.json");
      await window.app.queuePrompt(0, 1);
    }, PROMPT);
    const promptResponse = await waitFor("POST /api/prompt", () => state.promptResponse);
    const promptBody = await promptResponse.json().catch(() => null);
    if (promptResponse.status() !== 200 || !promptBody?.prompt_id) {
      throw new Error(`POST /api/prompt answered ${promptResponse.status()}: ${JSON.stringify(promptBody)}`);
    }
    log(`queued prompt ${promptBody.prompt_id}`);

    const executed = await waitFor("an `executed` websocket message with an output image",
      () => state.executed.find((d) => d.prompt_id === promptBody.prompt_id && d.output?.images?.length));
    const image = executed.output.images[0];
    log(`executed node ${executed.node}: ${image.type}/${image.subfolder ? image.subfolder + "/" : ""}${image.filename}`);

    const view = await waitFor(`GET /api/view?filename=${image.filename}`,
      () => seen.views.find((v) => v.filename === image.filename));
    if (view.status !== 200 || !String(view.contentType).startsWith("image/")) {
      throw new Error(`GET /api/view for ${image.filename} answered ${view.status} (${view.contentType})`);
    }

    // Displayed: the frontend keeps a node's loaded preview images in node.imgs (drawn on
    // the LiteGraph canvas in 1.35.x); Vue-rendered nodes and the queue/assets panels show
    // an <img> instead. Either must have finished loading the file the server produced.
    const shown = await waitFor(`${image.filename} displayed in the page`, () => page.evaluate((filename) => {
      const loaded = (img) => img?.complete && img.naturalWidth > 0 && decodeURIComponent(img.src).includes(filename);
      const graph = window.app.graph;
      for (const node of graph.nodes ?? graph._nodes ?? []) {
        const img = (node.imgs ?? []).find(loaded);
        if (img) return { where: `node ${node.id} (${node.type}) preview`, width: img.naturalWidth, height: img.naturalHeight };
      }
      const img = [...document.querySelectorAll("img")].find(loaded);
      if (img) return { where: "an <img> in the page", width: img.naturalWidth, height: img.naturalHeight };
      return null;
    }, image.filename));
    if (shown.width !== 256 || shown.height !== 256) {
      throw new Error(`output image displayed at ${shown.width}x${shown.height}, expected 256x256`);
    }
    log(`output image displayed by ${shown.where}, ${shown.width}x${shown.height}`);

    step = "taking the screenshot";
    await closeDialogs(page);
    await page.evaluate(() => window.app.canvas.setDirty(true, true));
    await page.waitForTimeout(500); // one more frame of the canvas
    mkdirSync(dirname(shotPath), { recursive: true });
    await page.screenshot({ path: shotPath });
    log(`screenshot: ${shotPath}`);
    console.log(JSON.stringify({ ok: true, frontend, prompt_id: promptBody.prompt_id, image, displayed: shown,
                                 seconds: (Date.now() - started) / 1000 }));
  } catch (error) {
    mkdirSync(dirname(shotPath), { recursive: true });
    await page.screenshot({ path: shotPath }).catch(() => {});
    throw error;
  } finally {
    await close();
  }
}

try {
  await main();
} catch (error) {
  console.error(`\nBROWSER CHECK FAILED while ${step}:\n  ${error.message ?? error}`);
  console.error(`  websocket messages seen: ${JSON.stringify([...new Set(seen.wsTypes)])}`);
  console.error(`  /view responses: ${JSON.stringify(seen.views)}`);
  for (const [label, list] of [["page errors", seen.pageErrors], ["console errors", seen.consoleErrors],
                               ["failed requests", seen.failedRequests]]) {
    if (list.length) console.error(`  ${label} (${list.length}):\n    ${list.slice(0, 8).join("\n    ")}`);
  }
  console.error(`  screenshot of the page as it was: ${shotPath}`);
  process.exit(1);
}
