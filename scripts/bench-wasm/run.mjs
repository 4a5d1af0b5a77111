// `varco bench model` compiled to wasm (web/pkg-bench: `bash scripts/build-web.sh --bench`), run on Dawn —
// Chrome's WebGPU — under Node through the npm package `webgpu`; with --native, the native binary first,
// with the same options, then one table of both and their ratio per figure.
//
//   node scripts/bench-wasm/run.mjs [--native target/release/varco] [--f16-on-nvidia] [--out FILE]
//        [--shape 14b] [--contexts 1024,8192] [--steps 32] [--prompt 4725] [--tiles 7,37] [--runs 3]
//        [--act f16|f32] [--no-subgroups] [--no-int-dot] [--decode-only] [--like web/demo/public/models/small]
//
// Dawn's toggles: allow_unsafe_apis, and timestamp_quantization off (per-kernel profiles need exact
// timestamps); --f16-on-nvidia adds vulkan_enable_f16_on_nvidia (Chrome withholds shader-f16 on NVIDIA
// under Linux without it). DAWN_TOGGLES_ON / DAWN_TOGGLES_OFF replace the lists.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { create, globals } from "webgpu";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

// ------------------------------------------------------------------------------------------- options
const o = {
  shape: "14b", contexts: [1024, 8192], steps: 32, prompt: 4725, tiles: [7, 37], runs: 3,
  act: null, noSubgroups: false, decodeOnly: false,
};
let native = null, out = null, like = path.join(root, "web/demo/public/models/small"), f16OnNvidia = false;
const args = process.argv.slice(2);
const list = (v) => v.split(",").map((x) => { const n = Number(x); if (!Number.isInteger(n) || n <= 0) usage(`not a count: ${x}`); return n; });
function usage(why) {
  console.error(`bench-wasm: ${why}\n(see the top of ${path.relative(process.cwd(), fileURLToPath(import.meta.url))})`);
  process.exit(2);
}
for (let i = 0; i < args.length; i++) {
  const a = args[i], v = () => args[++i] ?? usage(`${a} needs a value`);
  switch (a) {
    case "--native": native = v(); break;
    case "--out": out = v(); break;
    case "--like": like = v(); break;
    case "--f16-on-nvidia": f16OnNvidia = true; break;
    case "--shape": o.shape = v(); break;
    case "--contexts": o.contexts = list(v()); break;
    case "--tiles": o.tiles = list(v()); break;
    case "--steps": case "--prompt": case "--runs": o[a.slice(2)] = list(v())[0]; break;
    case "--act": o.act = v(); if (!["f16", "f32"].includes(o.act)) usage(`--act ${o.act}: expected f16 or f32`); break;
    case "--no-subgroups": o.noSubgroups = true; break;
    case "--no-int-dot": o.noIntDot = true; break;
    case "--decode-only": o.decodeOnly = true; break;
    default: usage(`unknown argument ${a}`);
  }
}
const cliArgs = [
  "bench", "model", "--shape", o.shape, "--contexts", o.contexts.join(","), "--steps", `${o.steps}`, "--prompt", `${o.prompt}`,
  "--tiles", o.tiles.join(","), "--runs", `${o.runs}`, "--like", like,
  ...(o.act ? ["--act", o.act] : []), ...(o.noSubgroups ? ["--no-subgroups"] : []), ...(o.noIntDot ? ["--no-int-dot"] : []), ...(o.decodeOnly ? ["--decode-only"] : []),
];

// ------------------------------------------------------------------------------------------- native
let nativeFigures = null, nativeReport = "";
if (native) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "varco-bench-"));
  const figs = path.join(tmp, "figures.json");
  console.log(`== native: ${native} ${cliArgs.join(" ")}`);
  const r = spawnSync(native, [...cliArgs, "--figures", figs], { stdio: ["ignore", "pipe", "inherit"], encoding: "utf8", maxBuffer: 1 << 26 });
  if (r.status !== 0) usage(`the native benchmark failed (${r.signal ? `signal ${r.signal}` : `exit ${r.status}`}${r.error ? `: ${r.error.message}` : ""})`);
  nativeReport = r.stdout;
  console.log(nativeReport);
  nativeFigures = JSON.parse(fs.readFileSync(figs, "utf8"));
  fs.rmSync(tmp, { recursive: true });
}

// ------------------------------------------------------------------------------------------- wasm on Dawn
// wgpu's web backend finds WebGPU as a page or a worker does: `navigator.gpu`, once a `Window` (or
// `WorkerGlobalScope`) global exists. Node has neither: this harness provides them, the library nothing.
const on = process.env.DAWN_TOGGLES_ON ?? ["allow_unsafe_apis", ...(f16OnNvidia ? ["vulkan_enable_f16_on_nvidia"] : [])].join(",");
const off = process.env.DAWN_TOGGLES_OFF ?? "timestamp_quantization";
const dawn = [...(on ? [`enable-dawn-features=${on}`] : []), ...(off ? [`disable-dawn-features=${off}`] : [])];
Object.assign(globalThis, globals);
globalThis.Window ??= function Window() {};
Object.defineProperty(globalThis, "navigator", { value: { gpu: create(dawn), userAgent: `node ${process.version}` }, configurable: true });

const pkg = path.join(root, "web/pkg-bench");
if (!fs.existsSync(path.join(pkg, "varco_web_bg.wasm"))) usage(`${pkg} is missing: bash scripts/build-web.sh --bench`);
const wasm = await import(path.join(pkg, "varco_web.js"));
await wasm.default({ module_or_path: fs.readFileSync(path.join(pkg, "varco_web_bg.wasm")) });
const manifest = fs.readFileSync(path.join(like, "manifest.json"));
const tokenizer = fs.readFileSync(path.join(like, JSON.parse(manifest).tokenizer.file));
console.log(`== wasm on Dawn (${dawn.join(" ")}): ${JSON.stringify(o)}`);
let report;
try {
  report = JSON.parse(await wasm.benchModel(JSON.stringify(o), manifest, tokenizer));
} catch (e) {
  usage(`the wasm benchmark failed: ${e?.name ?? "Error"}: ${e?.message ?? e}`);
}
console.log(report.markdown);

// ------------------------------------------------------------------------------------------- the table
let table = "";
if (nativeFigures) {
  table += `\n| figure | native | wasm on Dawn | wasm as a fraction of native |\n|---|---:|---:|---:|\n`;
  const fmt = (v) => (Math.abs(v) >= 1e6 ? `${(v / 1e9).toFixed(2)} G` : Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(3));
  for (const n of nativeFigures) {
    const w = report.figures.find((f) => f.name === n.name);
    // the ratio reads as wasm's speed against native's: throughput wasm/native, times native/wasm
    const ratio = w ? (n.higher_is_better ? w.value / n.value : n.value / w.value) : NaN;
    table += `| ${n.name} | ${fmt(n.value)} | ${w ? fmt(w.value) : "—"} | ${w ? `${(100 * ratio).toFixed(0)} %` : "—"} |\n`;
  }
  console.log(table);
}
if (out) fs.writeFileSync(out, `${nativeReport}\n${report.markdown}\n${table}`);
process.exit(0);
