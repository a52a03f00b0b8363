// Open `loom serve` in headless Chromium, wait for the graph editor, queue a model-free
// prompt through the frontend and wait for its output image. Usage:
//   node boot.mjs http://127.0.0.1:PORT SCREENSHOT.png
import { chromium } from "playwright-core";

const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
await page.goto(url);
await page.waitForFunction(() => window.app && window.app.graph && document.querySelector("canvas"),
                           null, { timeout: 60000 });
const prompt = {
  "1": { class_type: "EmptyImage", inputs: { width: 256, height: 256, batch_size: 1, color: 3355647 } },
  "2": { class_type: "ImageInvert", inputs: { image: ["1", 0] } },
  "3": { class_type: "SaveImage", inputs: { images: ["2", 0], filename_prefix: "browser" } },
};
await page.evaluate(async (p) => { window.app.loadApiJson(p, "browser.json"); await window.app.queuePrompt(0, 1); },
                    prompt);
const img = await page.waitForSelector('img[src*="/api/view"], img[src*="view?"]', { timeout: 60000 })
  .catch(() => null);
const history = await page.evaluate(async () => (await fetch("/api/history")).json());
const outputs = Object.values(history).flatMap((h) => Object.values(h.outputs || {}));
await page.keyboard.press("Escape");  // first-run templates dialog
await page.waitForTimeout(1000);
await page.screenshot({ path: shot });
console.log(JSON.stringify({ booted: true, output_image_in_dom: !!img, src: img ? await img.getAttribute("src") : null,
                             history_outputs: outputs, page_errors: errors.slice(0, 5) }));
await browser.close();
