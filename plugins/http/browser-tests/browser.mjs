// What boot.mjs and widgets.mjs share: the first-run settings they seed on the server,
// the polling wait, headless Chromium launched hermetically against the server, and the
// frontend version check. Environment: LOOM_CHROMIUM (default /usr/bin/chromium),
// LOOM_BROWSER_TIMEOUT_S (per wait, default 60), LOOM_EXPECT_FRONTEND (fail unless the page
// reports this frontend version).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.LOOM_CHROMIUM || "/usr/bin/chromium";
export const TIMEOUT = 1000 * Number(process.env.LOOM_BROWSER_TIMEOUT_S || 60);

export async function seedSettings(server) {
  // A fresh user dir makes the frontend treat this as a first run: it opens the templates
  // dialog over the canvas (1.35.x and 1.58.x both skip it once Comfy.TutorialCompleted is
  // true). The server's default graph would need the sampler plugin: don't warn about it.
  const settings = {
    "Comfy.TutorialCompleted": true,
    "Comfy.Workflow.ShowMissingNodesWarning": false,
    "Comfy.Workflow.ShowMissingModelsWarning": false,
  };
  const res = await fetch(new URL("/api/settings", server), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(settings),
  }).catch((e) => { throw new Error(`cannot reach ${server.origin}: ${e.cause?.message ?? e.message}`); });
  if (!res.ok) throw new Error(`POST /api/settings answered ${res.status}: ${await res.text()}`);
}

// Polls `predicate` (every 100 ms) until it returns something truthy, which it returns.
export async function waitFor(what, predicate, timeout = TIMEOUT) {
  const until = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out after ${timeout / 1000}s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// Headless Chromium with a throw-away profile; `close()` ends it and removes the profile.
export async function launchBrowser(server, extraArgs = []) {
  const profile = mkdtempSync(join(tmpdir(), "loom-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 800 },
      args: [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        // Hermetic: every host name fails to resolve except the server's own, so the
        // frontend's calls to api.comfy.org, fonts, registries, ... fail fast and the same
        // way on every machine. (IP literals such as 127.0.0.1 are never resolved.)
        `--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE ${server.hostname}`,
        ...extraArgs,
      ],
    });
  } catch (error) {
    rmSync(profile, { recursive: true, force: true });
    throw error;
  }
  const close = async () => {
    await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, page: context.pages()[0] ?? (await context.newPage()), close };
}

// The frontend version the page reports; throws when LOOM_EXPECT_FRONTEND names another.
export async function frontendVersion(page) {
  const frontend = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  const expected = process.env.LOOM_EXPECT_FRONTEND;
  if (expected && frontend !== expected) throw new Error(`the server serves frontend ${frontend}, expected ${expected}`);
  return frontend;
}
