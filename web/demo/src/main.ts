// The varco-web demo: loads a model with the npm package (download progress, capabilities, errors), takes an
// image (picker, drop, paste), asks in one of five modes, streams the answer and draws its boxes.
//
// Safety: everything the model or a file says is put into the page as text (textContent, SVG text nodes),
// never as HTML.

import { createEngine, type Capabilities, type ChatMessage, type CompletionChunk, type ContentPart, type Progress, type Span, type VarcoEngine } from "varco-web";
import { drawRegion, fitLabels, renderSpans, readingOrder, setImageSize, type Region } from "./overlay";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);
const DEFAULT_MANIFEST = "./models/small/manifest.json";

type Mode = "describe" | "ground" | "refer" | "ocr" | "chat";
interface Picture { blob: Blob; name: string; width: number; height: number; url: string }
interface Result { mode: Mode; image: { name: string; width: number; height: number } | null; prompt: string; text: string; spans: Span[] }

let engine: VarcoEngine | undefined;
let loading: AbortController | undefined;
let running: AbortController | undefined;
let picture: Picture | undefined;
let region: Region | undefined;
let chat: ChatMessage[] = [];
let last: Result | undefined;

function setState(s: "idle" | "loading" | "ready" | "running" | "error") {
  document.body.dataset.state = s;
  $("run").toggleAttribute("disabled", s !== "ready");
  $("stop").toggleAttribute("disabled", s !== "running");
  $("cancel").toggleAttribute("disabled", s !== "loading");
  $("load").toggleAttribute("disabled", s === "loading" || s === "running");
  // the image is not changed under a running answer
  for (const b of document.querySelectorAll("#samples button")) b.toggleAttribute("disabled", s === "running");
}

const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`;
const gb = (b: number) => `${(b / 1e9).toFixed(2)} GB`;
const secs = (s: number) => (s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`);

/** A message about what the user did (not a failure of the engine). */
class UserError extends Error {}

function showError(e: unknown) {
  const err = e as Error;
  const advice: Record<string, string> = {
    NoWebGPUError: "This browser offers no WebGPU. Use a recent Chrome or Edge (113+), or Safari/Firefox with WebGPU enabled.",
    GPUMemoryError: "This GPU cannot hold the model.",
    GPUDeviceLostError: "The GPU was reset during the answer; the model is being loaded again from this computer — ask again in a moment.",
    QuotaError: "There is not enough storage for the model. Free some space (or delete older models) and try again.",
    DownloadError: "The download failed. Loading again resumes where it stopped.",
    IntegrityError: "A downloaded file is damaged (its checksum does not match, twice). The server may hold a broken copy.",
    ModelFormatError: "This is not a model this version of varco-web can read.",
    AbortError: "Cancelled. Loading again resumes where it stopped.",
  };
  const p = $("error");
  p.hidden = false;
  // the page's own messages (no image, no box, busy, a file it cannot read) say all there is to say
  if (err instanceof UserError) p.textContent = `${err.message}.`;
  else p.textContent = `${advice[err?.name] ?? "Something went wrong."} (${err?.name ?? "Error"}: ${err?.message ?? String(e)})`;
}

// ---------------------------------------------------------------------------------------------- model

function renderCaps(c: Capabilities, storage?: StorageEstimate) {
  const dl = $("caps");
  dl.replaceChildren();
  const mem = c.modelMemory;
  const rows: [string, string][] = [
    ["Adapter", c.adapter],
    ["Activations", `${c.kernels.activations}: ${c.kernels.activationsWhy}`],
    ["Reductions", `${c.kernels.reductions}: ${c.kernels.reductionsWhy}`],
    ["Decode products", `${c.kernels.decodeProducts}: ${c.kernels.decodeProductsWhy}`],
    ["Largest buffer", `${(c.maxBinding / 2 ** 20).toFixed(0)} MiB`],
    ["Model needs (GPU)", `${gb(mem.total)}: weights ${gb(mem.weights)}, KV cache ${gb(mem.kvPerToken * mem.context)} at ${mem.context} tokens, activations ${gb(mem.activations)}`],
    ["GPU memory available", "not told by WebGPU; the model was checked against the adapter's limits before downloading"],
  ];
  if (storage?.quota !== undefined) rows.push(["Storage", `${mb(storage.usage ?? 0)} used of ${mb(storage.quota)} this site may use`]);
  const dm = (navigator as any).deviceMemory;
  if (dm) rows.push(["Device memory", `≥ ${dm} GB (as the browser rounds it)`]);
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dl.append(dt, dd);
  }
  ($("caps-panel") as HTMLDetailsElement).open = true;
}

function renderProgress(p: Progress) {
  if (p.phase === "waiting") {
    $("status").textContent = "Another tab is downloading this model: waiting for it…";
    return;
  }
  $("progress").hidden = false;
  const bar = $<HTMLProgressElement>("total-bar");
  bar.value = p.total ? p.loaded / p.total : 0;
  if (p.phase === "download") {
    const rate = p.rate ? `${mb(p.rate)}/s` : "";
    const eta = p.eta != null && p.rate ? `, ${secs(p.eta)} left` : "";
    const resumed = p.resumed ? ` (resumed: ${mb(p.resumed)} were already stored)` : "";
    $("total-text").textContent = `Downloading ${mb(p.loaded)} of ${mb(p.total)} ${rate}${eta}${resumed}`;
    $("status").textContent = `Downloading shard ${p.shard + 1} of ${p.shards}`;
  } else {
    $("total-text").textContent = `Loading into the GPU: ${mb(p.loaded)} of ${mb(p.total)}`;
    $("status").textContent = `Loading shard ${p.shard + 1} of ${p.shards} into the GPU`;
  }
  const grid = $("shards");
  if (grid.childElementCount !== p.shards) {
    grid.replaceChildren(...Array.from({ length: p.shards }, (_, i) => {
      const m = document.createElement("meter");
      m.max = 1;
      m.value = 0;
      m.title = `shard ${i + 1}`;
      return m;
    }));
  }
  const cell = grid.children[p.shard] as HTMLMeterElement | undefined;
  if (cell) {
    const frac = p.phase === "download" ? (p.shardLoaded ?? 0) / (p.shardTotal || 1) : 1;
    cell.value = frac;
    cell.className = p.phase;
    cell.title = `shard ${p.shard + 1}: ${p.phase === "download" ? `${mb(p.shardLoaded ?? 0)} of ${mb(p.shardTotal ?? 0)}` : "in the GPU"}`;
  }
}

async function load(url: string) {
  loading?.abort();
  await engine?.unload().catch(() => {});
  engine = undefined;
  loading = new AbortController();
  $("error").hidden = true;
  $("notice").hidden = new URL(url, location.href).href !== new URL(DEFAULT_MANIFEST, location.href).href;
  $("samples").hidden = $("notice").hidden; // scenes for the small model, not for another
  $("status").textContent = "Checking the GPU…";
  setState("loading");
  const t0 = performance.now();
  try {
    const ctxField = $<HTMLInputElement>("max-context").value;
    engine = await createEngine({
      manifestUrl: url,
      signal: loading.signal,
      // fewer tokens of context: a smaller KV cache, for a GPU with less memory (the capability panel shows it)
      maxContext: ctxField ? Number(ctxField) : undefined,
      onCapabilities: async (c) => renderCaps(c, await navigator.storage?.estimate?.().catch(() => undefined)),
      onProgress: renderProgress,
      onDeviceLost: (e) => {
        if (e.phase === "lost") {
          $("status").textContent = "The GPU was reset; reloading the model from this computer…";
          $("progress").hidden = false;
          if (!running) setState("loading");
        } else if (e.phase === "recovered") {
          $("status").textContent = "The GPU was reset; the model is loaded again. Ready.";
          $("progress").hidden = true;
          if (!running) setState("ready");
        } else {
          $("status").textContent = "The GPU was reset, and the model could not be loaded onto it again (tried twice).";
          engine = undefined;
          showError(new UserError(`${e.message}. Reload the page to try again`));
          setState("error");
        }
      },
    });
    // the browser tests' builds only (VITE_VARCO_TEST_HOOKS): the engine, for its test hooks
    if (import.meta.env.VITE_VARCO_TEST_HOOKS === "1") (window as unknown as { varcoEngine: VarcoEngine }).varcoEngine = engine;
    $("status").textContent = `Ready (loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s).`;
    $("progress").hidden = true;
    setState("ready");
  } catch (e) {
    $("status").textContent = "Not loaded.";
    showError(e);
    setState("error");
  } finally {
    loading = undefined;
  }
}

$("model-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const url = $<HTMLInputElement>("manifest").value.trim();
  const q = new URLSearchParams(location.search);
  q.set("manifest", url);
  history.replaceState(null, "", `?${q}`);
  void load(url);
});
$("cancel").addEventListener("click", () => loading?.abort());

// ---------------------------------------------------------------------------------------------- image

/** Shows `blob` as the image to ask about; false (and a message) where it is refused. */
async function takeImage(blob: Blob, name = "image"): Promise<boolean> {
  const busy = () => {
    showError(new UserError("Wait for the answer (or press Stop) before changing the image"));
    return false;
  };
  if (running) return busy();
  if (!blob.type.startsWith("image/") && blob.type !== "") {
    showError(new UserError(`${name} is not an image`));
    return false;
  }
  // decoded upright (EXIF) to know its size; the engine decodes the same file the same way
  let bmp: ImageBitmap;
  try {
    bmp = await createImageBitmap(blob, { imageOrientation: "from-image" });
  } catch {
    showError(new UserError(`${name}: the browser cannot decode this image`));
    return false;
  }
  if (running) {
    bmp.close();
    return busy(); // an answer started while the image was decoding
  }
  if (picture) URL.revokeObjectURL(picture.url);
  picture = { blob, name, width: bmp.width, height: bmp.height, url: URL.createObjectURL(blob) };
  bmp.close();
  const img = $<HTMLImageElement>("photo");
  img.src = picture.url;
  $("stage").hidden = false;
  setImageSize(picture.width, picture.height);
  $("image-info").textContent = `${name}, ${picture.width} × ${picture.height}`;
  setRegion(undefined);
  chat = [];
  $("transcript").replaceChildren();
  showSpans([]);
  $("error").hidden = true;
  return true;
}

$("file").addEventListener("change", (ev) => {
  const f = (ev.target as HTMLInputElement).files?.[0];
  if (f) void takeImage(f, f.name);
});
// a file dropped anywhere on the page is taken (and never opened by the browser in place of the page)
const drop = $("drop");
document.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
document.addEventListener("dragleave", (ev) => { if (!ev.relatedTarget) drop.classList.remove("over"); });
document.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  const f = ev.dataTransfer?.files[0];
  if (f) void takeImage(f, f.name);
});
document.addEventListener("paste", (ev) => {
  const item = [...(ev.clipboardData?.items ?? [])].find((i) => i.type.startsWith("image/"));
  const f = item?.getAsFile();
  if (f) void takeImage(f, f.name || "pasted image");
});

// the samples ship with the page (public/samples): scenes like the small model's training ones, picked
// where it grounds or reads them whole; a sample picks the mode it is for
for (const b of document.querySelectorAll<HTMLButtonElement>("#samples button")) {
  b.addEventListener("click", async () => {
    const name = `${b.dataset.sample}.png`;
    let blob: Blob;
    try {
      const r = await fetch(`./samples/${name}`);
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      blob = await r.blob();
    } catch (e) {
      return showError(new UserError(`The sample ${name} could not be fetched (${(e as Error).message})`));
    }
    if (await takeImage(blob, name)) document.querySelector<HTMLInputElement>(`input[name=mode][value=${b.dataset.mode}]`)?.click();
  });
}

// ---------------------------------------------------------------------------------------------- refer box

const boxInputs = ["x1", "y1", "x2", "y2"].map((id) => $<HTMLInputElement>(id));
function setRegion(r: Region | undefined, fromFields = false) {
  region = r;
  drawRegion(r);
  if (!fromFields) boxInputs.forEach((inp, i) => (inp.value = r ? String(r[i]) : ""));
}
for (const inp of boxInputs) {
  inp.addEventListener("input", () => {
    const v = boxInputs.map((i) => Number(i.value));
    const ok = boxInputs.every((i) => i.value !== "") && v.every((x) => x >= 0 && x <= 1) && v[0] < v[2] && v[1] < v[3];
    setRegion(ok ? (v as Region) : undefined, true);
  });
}
const overlay = $("overlay") as unknown as SVGSVGElement;
new ResizeObserver(fitLabels).observe(overlay);
let dragStart: [number, number] | undefined;
const at = (ev: PointerEvent): [number, number] => {
  const r = overlay.getBoundingClientRect();
  const clamp = (v: number) => Math.min(1, Math.max(0, v));
  return [clamp((ev.clientX - r.left) / r.width), clamp((ev.clientY - r.top) / r.height)];
};
const round3 = (v: number) => Math.round(v * 1000) / 1000;
overlay.addEventListener("pointerdown", (ev) => {
  if (mode() !== "refer" || !picture) return;
  dragStart = at(ev);
  overlay.setPointerCapture(ev.pointerId);
});
overlay.addEventListener("pointermove", (ev) => {
  if (!dragStart) return;
  const [x, y] = at(ev);
  const [a, b] = dragStart;
  setRegion([round3(Math.min(a, x)), round3(Math.min(b, y)), round3(Math.max(a, x)), round3(Math.max(b, y))]);
});
overlay.addEventListener("pointerup", () => (dragStart = undefined));
overlay.addEventListener("pointercancel", () => (dragStart = undefined));

// ---------------------------------------------------------------------------------------------- asking

const mode = () => (document.querySelector<HTMLInputElement>("input[name=mode]:checked")!.value as Mode);
function showMode() {
  document.body.dataset.mode = mode();
  drawRegion(mode() === "refer" ? region : undefined);
}
document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", showMode));
showMode();
$("new-chat").addEventListener("click", () => {
  if (running) return;
  chat = [];
  $("transcript").replaceChildren();
  showSpans([]);
});

function turn(role: "user" | "assistant", text: string): HTMLElement {
  const li = document.createElement("li");
  li.className = role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Model";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(who, body);
  $("transcript").append(li);
  return body;
}

function showSpans(spans: Span[], m: Mode = mode()) {
  const ordered = m === "ocr" ? readingOrder(spans) : spans;
  renderSpans(ordered, $("spans"));
  $("results").hidden = ordered.length === 0;
}

$("ask-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  void ask();
});
$("stop").addEventListener("click", () => running?.abort());

async function ask() {
  if (!engine || running) return;
  const m = mode();
  if (m !== "chat" && !picture) return showError(new UserError("Choose an image first"));
  if (m === "refer" && !region) return showError(new UserError("Draw a box on the image first"));
  const run = (running = new AbortController());
  setState("running");
  $("error").hidden = true;
  try {
    await answer(m, run.signal);
  } catch (e) {
    showError(e);
    $("speed").textContent = "";
  } finally {
    running = undefined;
    setState(engine ? "ready" : "error");
  }
}

async function answer(m: Mode, signal: AbortSignal) {
  const lang = $<HTMLSelectElement>("lang").value as "en" | "ko";
  const maxField = $<HTMLInputElement>("max-tokens").value;
  const max_tokens = maxField ? Number(maxField) : undefined;
  let prompt: string;
  if (m === "chat") {
    prompt = $<HTMLTextAreaElement>("message").value.trim();
    if (!prompt) return;
  } else if (m === "refer") {
    prompt = await engine!.prompt("refer", { lang, box: region, phrase: $<HTMLInputElement>("question").value });
  } else {
    prompt = await engine!.prompt(m, { lang, phrase: m === "ground" ? $<HTMLInputElement>("phrase").value : undefined });
  }
  if (m !== "chat") {
    chat = [];
    $("transcript").replaceChildren();
  }
  // a new chat's first message carries the image
  const content: ContentPart[] = [];
  if (picture && (m !== "chat" || chat.length === 0)) content.push({ type: "image", image: picture.blob });
  content.push({ type: "text", text: prompt });
  chat.push({ role: "user", content });
  turn("user", prompt);
  const out = turn("assistant", "");
  $("speed").textContent = "Reading the image and the prompt…";
  let text = "";
  try {
    let done: CompletionChunk | undefined;
    for await (const chunk of await engine!.chat.completions.create({ messages: chat, stream: true, max_tokens, signal })) {
      const piece = chunk.choices[0].delta.content;
      if (piece) {
        text += piece;
        out.textContent = text;
        if (!done) $("speed").textContent = "Writing…";
      }
      if (chunk.choices[0].finish_reason) done = chunk;
    }
    chat.push({ role: "assistant", content: text });
    const t = done!.timings!;
    const u = done!.usage!;
    const cached = u.prompt_tokens_details.cached_tokens;
    const run = u.prompt_tokens - cached;
    // what the engine kept from the previous question (an earlier turn, the same image) is not read again
    const reused = cached > 0 ? ` (${cached} tokens reused)` : "";
    $("speed").textContent = `Prefill ${run} of ${u.prompt_tokens} tokens${reused} in ${t.prefillSeconds.toFixed(2)} s (${t.prefillTokensPerSecond.toFixed(0)} tokens/s) · decode ${u.completion_tokens} tokens at ${t.decodeTokensPerSecond.toFixed(1)} tokens/s`;
    const spans = done!.spans ?? [];
    last = { mode: m, image: picture ? { name: picture.name, width: picture.width, height: picture.height } : null, prompt, text, spans };
    showSpans(spans, m);
  } catch (e) {
    chat.pop();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------- results

function download(name: string, type: string, data: string) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([data], { type }));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
const asText = (r: Result) => (r.mode === "ocr" ? readingOrder(r.spans) : r.spans).map((s) => s.text).join("\n");
const base = () => (last?.image?.name ?? "result").replace(/\.[^.]*$/, "");
$("copy").addEventListener("click", () => last && void navigator.clipboard.writeText(asText(last)));
$("save-json").addEventListener("click", () => last && download(`${base()}.varco.json`, "application/json", JSON.stringify(last, null, 2)));
$("save-txt").addEventListener("click", () => last && download(`${base()}.txt`, "text/plain", asText(last)));

// a result saved before: its text is parsed again by the engine and drawn over the current image
$("open-result").addEventListener("change", async (ev) => {
  const f = (ev.target as HTMLInputElement).files?.[0];
  (ev.target as HTMLInputElement).value = "";
  if (!f || !engine) return;
  try {
    const r = JSON.parse(await f.text()) as Partial<Result>;
    if (typeof r.text !== "string") throw new Error(`${f.name} has no "text"`);
    const spans = await engine.parseAnswer(r.text, picture?.width ?? 0, picture?.height ?? 0);
    last = { mode: r.mode ?? "ocr", image: picture ? { name: picture.name, width: picture.width, height: picture.height } : null, prompt: String(r.prompt ?? ""), text: r.text, spans };
    document.querySelector<HTMLInputElement>(`input[name=mode][value=${last.mode === "chat" ? "chat" : last.mode}]`)?.click();
    chat = [];
    $("transcript").replaceChildren();
    turn("assistant", r.text);
    showSpans(spans);
  } catch (e) {
    showError(new UserError(`${f.name}: ${(e as Error).message}`));
  }
});

// ---------------------------------------------------------------------------------------------- start

const manifest = params.get("manifest") ?? DEFAULT_MANIFEST;
$<HTMLInputElement>("manifest").value = manifest;
if (params.get("max_tokens")) $<HTMLInputElement>("max-tokens").value = params.get("max_tokens")!;
if (params.get("max_context")) $<HTMLInputElement>("max-context").value = params.get("max_context")!;
setState("idle");
// a model on this page's own host loads at once; one elsewhere (a link may name any) only when asked
let origin: string;
try {
  origin = new URL(manifest, location.href).origin;
} catch {
  origin = "";
}
if (origin === location.origin) void load(manifest);
else $("status").textContent = `Press Load to download the model from ${origin || manifest}.`;
