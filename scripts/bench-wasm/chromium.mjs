// `varco bench model` compiled to wasm (web/pkg-bench), run in a Chromium page: the browser's own WebGPU,
// with its GPU process between the page and the GPU (Dawn under Node, run.mjs, has none, so it only bounds
// the browser from above). Prints the report; --out writes it.
//
//   node scripts/bench-wasm/chromium.mjs [--chromium /usr/bin/chromium] [--flag ARG ...] [--out FILE]
//        [--shape 14b] [--contexts 1024] [--steps 32] [--runs 3] [--act f16|f32] [--no-subgroups] [--no-int-dot] [--decode-only]
//        [--all] [--worker] [--gpu-info FILE] [--decode-shapes ROLE=WG:ROWS:BLOCKS[:dot4],...]
//
// --gpu-info writes what the page's WebGPU adapter reports (vendor, architecture, features, limits) and the
// text of chrome://gpu to FILE: where Chromium cannot get the GPU, this says why.
// --worker runs it in a dedicated worker, where the npm package runs its engine, instead of in the page.
// Chromium's flags: --enable-unsafe-webgpu, plus each --flag (on the H200, e.g. --flag=--enable-features=Vulkan
// --flag=--use-angle=vulkan --flag=--disable-vulkan-surface
// --flag=--enable-dawn-features=vulkan_enable_f16_on_nvidia). playwright-core comes from web/node_modules.
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const { chromium } = createRequire(path.join(root, "web/package.json"))("playwright-core");

const o = { shape: "14b", contexts: [1024], steps: 32, prompt: 4725, tiles: [7], runs: 3, act: null, noSubgroups: false, decodeOnly: true };
let exe = process.env.CHROMIUM ?? "/usr/bin/chromium", out = null, inWorker = false, gpuInfo = null;
const flags = ["--enable-unsafe-webgpu", "--no-sandbox", "--disable-dev-shm-usage"];
const args = process.argv.slice(2);
const fail = (why) => { console.error(`bench-wasm/chromium: ${why}`); process.exit(2); };
const list = (v) => v.split(",").map((x) => { const n = Number(x); if (!Number.isInteger(n) || n <= 0) fail(`not a count: ${x}`); return n; });
for (let i = 0; i < args.length; i++) {
  const [a, inline] = args[i].startsWith("--flag=") ? ["--flag", args[i].slice(7)] : [args[i], undefined];
  const v = () => inline ?? args[++i] ?? fail(`${a} needs a value`);
  switch (a) {
    case "--chromium": exe = v(); break;
    case "--flag": flags.push(v()); break;
    case "--out": out = v(); break;
    case "--shape": o.shape = v(); break;
    case "--contexts": o.contexts = list(v()); break;
    case "--tiles": o.tiles = list(v()); break;
    case "--steps": case "--prompt": case "--runs": o[a.slice(2)] = list(v())[0]; break;
    case "--act": o.act = v(); break;
    case "--no-subgroups": o.noSubgroups = true; break;
    case "--no-int-dot": o.noIntDot = true; break;
    case "--decode-shapes": o.decodeShapes = v(); break;
    case "--decode-only": o.decodeOnly = true; break;
    case "--all": o.decodeOnly = false; break;
    case "--worker": inWorker = true; break;
    case "--gpu-info": gpuInfo = v(); break;
    default: fail(`unknown argument ${a}`);
  }
}
if (!fs.existsSync(path.join(root, "web/pkg-bench/varco_web_bg.wasm"))) fail("web/pkg-bench is missing: bash scripts/build-web.sh --bench");

// the page, the module and the tokenizer's model from one local origin (WebGPU needs a secure context)
const types = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json" };
// the benchmark itself: in the page, or (--worker) in a dedicated worker, where the npm package runs the engine
const bench = `import init, { benchModel } from "/web/pkg-bench/varco_web.js";
const run = async (options) => {
  await init();
  const [manifest, tokenizer] = await Promise.all(["manifest.json", "tokenizer.json"].map(async (f) => new Uint8Array(await (await fetch("/web/demo/public/models/small/" + f)).arrayBuffer())));
  return JSON.parse(await benchModel(JSON.stringify(options), manifest, tokenizer));
};`;
const worker = `${bench}
self.onmessage = async (m) => { try { self.postMessage({ report: await run(m.data) }); } catch (e) { self.postMessage({ error: String(e?.message ?? e) }); } };`;
const page = `<!doctype html><meta charset="utf-8"><script type="module">
${inWorker ? `window.run = (options) => new Promise((resolve, reject) => {
  const w = new Worker("/worker.js", { type: "module" });
  w.onmessage = (m) => (m.data.error ? reject(new Error(m.data.error)) : resolve(m.data.report));
  w.onerror = (e) => reject(new Error(e.message));
  w.postMessage(options);
});` : `${bench}\nwindow.run = run;`}
</script>`;
const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x").pathname;
  if (url === "/") return res.writeHead(200, { "content-type": "text/html" }).end(page);
  if (url === "/worker.js") return res.writeHead(200, { "content-type": "text/javascript" }).end(worker);
  const file = path.join(root, path.normalize(url));
  if (!file.startsWith(root) || !(url.startsWith("/web/pkg-bench/") || url.startsWith("/web/demo/public/models/small/")) || !fs.existsSync(file)) return res.writeHead(404).end();
  res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream" }).end(fs.readFileSync(file));
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "varco-bench-chromium-"));
const ctx = await chromium.launchPersistentContext(profile, { executablePath: exe, headless: true, args: flags });
let code = 0;
try {
  const p = await ctx.newPage();
  p.on("console", (m) => m.type() === "error" && console.error(`page: ${m.text()}`));
  await p.goto(`http://127.0.0.1:${server.address().port}/`);
  await p.waitForFunction(() => typeof window.run === "function");
  // A page that asks for an adapter while the browser's GPU process is still starting gets null (Chromium
  // logs "kTransientFailure: Failed to send GpuControl.CreateCommandBuffer"; seen on the H200, where a
  // worker, asked a moment later, got the GPU): wait until the page gets one, as a user's page would be
  // opened long after the browser.
  const waited = await p.evaluate(async () => {
    for (let i = 0; i < 40; i++) {
      if (await navigator.gpu?.requestAdapter()) return i;
      await new Promise((r) => setTimeout(r, 250));
    }
    return -1;
  });
  console.log(waited < 0 ? "the page got no adapter in 10 s" : `the page got an adapter after ${waited * 250} ms`);
  if (gpuInfo) {
    const adapter = await p.evaluate(async () => {
      if (!navigator.gpu) return { error: "navigator.gpu is missing" };
      const a = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
      if (!a) return { error: "requestAdapter() gave null" };
      const limits = {};
      for (const k in a.limits) limits[k] = a.limits[k];
      return { info: { vendor: a.info.vendor, architecture: a.info.architecture, device: a.info.device, description: a.info.description, subgroupMinSize: a.info.subgroupMinSize, subgroupMaxSize: a.info.subgroupMaxSize }, features: [...a.features].sort(), limits };
    });
    console.log(`adapter in the page: ${JSON.stringify(adapter.info ?? adapter)}`);
    const g = await ctx.newPage();
    let text = "";
    try {
      await g.goto("chrome://gpu");
      // the page fills in as the GPU process reports: wait for its driver section
      await g.waitForFunction(() => (document.querySelector("info-view")?.shadowRoot?.textContent ?? "").includes("Driver Information"), null, { timeout: 20000 }).catch(() => {});
      text = await g.evaluate(() => {
        const root = document.querySelector("info-view")?.shadowRoot;
        return root ? [...root.children].filter((e) => e.tagName !== "STYLE").map((e) => e.innerText).join("\n") : document.body.innerText;
      });
    } catch (e) {
      text = `chrome://gpu: ${e.message}`;
    }
    await g.close();
    fs.writeFileSync(gpuInfo, `${JSON.stringify(adapter, null, 1)}\n\n${text.replace(/\n\s*\n+/g, "\n")}\n`);
  }
  console.log(`== wasm in ${await ctx.browser()?.version?.() ?? "Chromium"}${inWorker ? ", in a worker" : ""} (${flags.join(" ")}): ${JSON.stringify(o)}`);
  const report = await p.evaluate((opts) => window.run(opts), o);
  console.log(report.markdown);
  console.log(JSON.stringify(report.figures));
  if (out) fs.writeFileSync(out, `${report.markdown}\n\n${JSON.stringify(report.figures, null, 1)}\n`);
} catch (e) {
  console.error(`bench-wasm/chromium: the benchmark failed in the page: ${e.message}`);
  code = 1;
} finally {
  await ctx.close();
  server.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
