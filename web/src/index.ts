// varco-web: VARCO-VISION on the user's own GPU. Everything runs in a Web Worker; the model is downloaded
// once into IndexedDB (verified, resumable) and answers offline afterwards. Nothing is sent anywhere.

import { AbortError, EngineError, rebuild } from "./errors.js";
export * from "./errors.js";

export type ImageInput = Blob | File | ImageBitmap | ImageData | string | URL;
export type ContentPart = { type: "text"; text: string } | { type: "image"; image: ImageInput } | { type: "image_url"; image_url: { url: string } };
export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string | ContentPart[];
}
export interface Progress {
  /** download: into the cache; waiting: another tab is downloading this model; gpu: into GPU memory. */
  phase: "download" | "waiting" | "gpu";
  /** Bytes done of all shards (download: stored; gpu: uploaded). */
  loaded: number;
  total: number;
  /** The shard this event is about, of `shards`. */
  shard: number;
  shards: number;
  /** Download: bytes stored of this shard, and its size. */
  shard_loaded?: number;
  shard_total?: number;
  /** Download: bytes that were already stored when this load began (a resumed download). */
  resumed?: number;
  /** Bytes per second (download). */
  rate?: number;
  /** Seconds left (download), when known. */
  eta?: number | null;
  /** Bytes of the engine's wasm memory (it stays bounded however large the model). */
  heap?: number;
}
/** What the worker found before downloading: the adapter and what the model needs. */
export interface Capabilities {
  adapter: string;
  shader_f16: boolean;
  subgroups: boolean;
  /** The largest buffer the engine may bind, bytes. */
  max_binding: number;
  model_memory: { weights: number; kv_per_token: number; context: number; activations: number; total: number };
}
/** A box: corners in 0..1 of the original image's width (x) and height (y), and in its pixels. */
export interface Box {
  x1: number; y1: number; x2: number; y2: number;
  pixels: [number, number, number, number] | null;
}
/** A marked piece of an answer: an object (grounding, referring) or a piece of text (OCR), with its boxes. */
export interface Span {
  kind: "object" | "text";
  text: string;
  boxes: Box[];
}
export interface Timings {
  /** Seconds from the request to the first piece of text: image encoding and prefill. */
  prefill_s: number;
  /** Seconds from the first piece to the end. */
  decode_s: number;
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
}
export interface Answer {
  text: string;
  spans: Span[];
  stop: "eos" | "length" | "interrupted";
  usage: { prompt_tokens: number; completion_tokens: number; image_tokens: number | null };
  timings: Timings;
}
export type Lang = "en" | "ko";
export interface TaskOptions {
  /** The prompt's language (default "en"). */
  lang?: Lang;
  /** Each new piece of the answer as it is generated. */
  onText?: (piece: string) => void;
  max_tokens?: number;
  /** Aborting stops the answer after the current token. */
  signal?: AbortSignal;
}
export interface CompletionRequest {
  messages: ChatMessage[];
  stream?: boolean;
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  seed?: number;
  repetition_penalty?: number;
  signal?: AbortSignal;
}
export interface Completion {
  id: string;
  object: "chat.completion";
  choices: { index: 0; message: { role: "assistant"; content: string }; finish_reason: "stop" | "length" }[];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  /** varco-web: the answer's spans and boxes (grounding, referring, OCR). */
  spans: Span[];
  /** varco-web: prefill and decode speed. */
  timings: Timings;
}
export interface CompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  choices: { index: 0; delta: { content?: string }; finish_reason: "stop" | "length" | null }[];
  /** On the last chunk only (as OpenAI's stream_options.include_usage), with varco-web's spans and timings. */
  usage?: Completion["usage"];
  spans?: Span[];
  timings?: Timings;
}
export interface CachedModel {
  key: string; url: string; bytes: number; complete: boolean; added: number;
}
export interface EngineOptions {
  manifestUrl: string;
  onProgress?: (p: Progress) => void;
  /** Called once the GPU was checked against the model, before anything is downloaded. */
  onCapabilities?: (c: Capabilities) => void;
  signal?: AbortSignal;
  /** Keep the versions of this model cached before (default: once a newer manifest at the same URL has
   * loaded, the older versions' storage is freed). */
  keepOldVersions?: boolean;
  /** Where the worker script is (default: beside this module). */
  workerUrl?: string | URL;
}

type Pending = {
  resolve: (v: any) => void; reject: (e: Error) => void;
  onProgress?: (p: Progress) => void; onCapabilities?: (c: Capabilities) => void; onText?: (s: string) => void;
};

class Rpc {
  private next = 1;
  private pending = new Map<number, Pending>();
  /** Set once the worker failed or was ended: every later call fails at once with it. */
  private dead?: Error;
  constructor(readonly worker: Worker) {
    // a worker that fails to start or dies fails every pending call instead of leaving it waiting
    worker.onerror = (ev) => {
      ev.preventDefault();
      this.end(new EngineError(`the varco-web worker failed: ${ev.message || "it could not be loaded"}`));
    };
    worker.onmessage = (ev) => {
      const m = ev.data;
      const p = this.pending.get(m.id);
      if (!p) return;
      if (m.type === "progress") p.onProgress?.(m);
      else if (m.type === "capabilities") p.onCapabilities?.(m.capabilities);
      else if (m.type === "text") p.onText?.(m.piece);
      else {
        this.pending.delete(m.id);
        if (m.type === "result") p.resolve(m.value);
        else p.reject(rebuild(m));
      }
    };
  }
  /** Ends the worker; pending and later calls fail with `err`. */
  end(err: Error) {
    this.dead ??= err;
    this.worker.terminate();
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
  call(op: string, args: object = {}, extra: Partial<Pending> = {}, transfer: Transferable[] = [], signal?: AbortSignal): Promise<any> {
    const id = this.next++;
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, ...extra });
      if (signal) {
        if (signal.aborted) {
          this.pending.delete(id);
          return reject(new AbortError("cancelled"));
        }
        signal.addEventListener("abort", () => this.worker.postMessage({ id: this.next++, op: "abort", target: id }), { once: true });
      }
      this.worker.postMessage({ id, op, ...args }, transfer);
    });
  }
}

/** Encoded image bytes (the engine decodes them exactly as the native runtime does, EXIF included). */
async function imageBytes(img: ImageInput): Promise<ArrayBuffer> {
  if (typeof img === "string" || img instanceof URL) {
    const res = await fetch(img.toString());
    if (!res.ok) throw new Error(`${img}: HTTP ${res.status}`);
    return res.arrayBuffer();
  }
  if (img instanceof Blob) return img.arrayBuffer();
  // pixels: re-encoded losslessly as PNG
  const canvas = new OffscreenCanvas(img.width, img.height);
  const g = canvas.getContext("2d")!;
  if (img instanceof ImageData) g.putImageData(img, 0, 0);
  else g.drawImage(img, 0, 0);
  return (await canvas.convertToBlob({ type: "image/png" })).arrayBuffer();
}

/** OpenAI-shaped messages → the engine's (text and image parts) and the one image's bytes. */
async function convert(messages: ChatMessage[]): Promise<{ messages: any[]; image?: ArrayBuffer }> {
  let image: ArrayBuffer | undefined;
  const out = [];
  for (const m of messages) {
    const parts = typeof m.content === "string" ? [{ type: "text" as const, text: m.content }] : m.content;
    const content = [];
    for (const p of parts) {
      if (p.type === "text") content.push({ type: "text", text: p.text });
      else {
        if (image) throw new Error("varco-web takes one image per conversation");
        image = await imageBytes(p.type === "image" ? p.image : p.image_url.url);
        content.push({ type: "image" });
      }
    }
    out.push({ role: m.role, content });
  }
  return { messages: out, image };
}

export class VarcoEngine {
  /** What the worker found: adapter, shader-f16, subgroups, limits, the model's memory needs. */
  capabilities!: Capabilities;
  private constructor(private rpc: Rpc, readonly modelKey: string) {}

  static async create(o: EngineOptions): Promise<VarcoEngine> {
    // written out so that bundlers (Vite, webpack) see the worker and bundle it with its wasm
    const worker = o.workerUrl ? new Worker(o.workerUrl, { type: "module" }) : new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    const rpc = new Rpc(worker);
    // the cache should not be evicted under storage pressure (asked here: persist() exists on pages only)
    void navigator.storage?.persist?.().catch(() => false);
    try {
      const r = await rpc.call("load", { manifestUrl: new URL(o.manifestUrl, location.href).toString(), keepOldVersions: o.keepOldVersions }, { onProgress: o.onProgress, onCapabilities: o.onCapabilities }, [], o.signal);
      const e = new VarcoEngine(rpc, r.key);
      e.capabilities = r.capabilities;
      return e;
    } catch (err) {
      rpc.end(new EngineError("this engine failed to load"));
      throw err;
    }
  }

  /** Settles when the answer before the latest request has ended: requests run one after another. */
  private turn: Promise<void> = Promise.resolve();

  private async answer(req: CompletionRequest, onText?: (s: string) => void): Promise<Answer> {
    const before = this.turn;
    let done!: () => void;
    this.turn = new Promise<void>((r) => (done = r));
    try {
      await before;
      return await this.answerNow(req, onText);
    } finally {
      done();
    }
  }

  private async answerNow(req: CompletionRequest, onText?: (s: string) => void): Promise<Answer> {
    const { messages, image } = await convert(req.messages);
    if (req.signal?.aborted) throw new AbortError("cancelled");
    const request = {
      messages, max_new_tokens: req.max_tokens, temperature: req.temperature, top_p: req.top_p, top_k: req.top_k, seed: req.seed,
      repetition_penalty: req.repetition_penalty,
    };
    const onAbort = () => this.interrupt();
    req.signal?.addEventListener("abort", onAbort, { once: true });
    const t0 = performance.now();
    let t1: number | undefined;
    const first = (s: string) => { t1 ??= performance.now(); onText?.(s); };
    try {
      const r = await this.rpc.call("chat", { request, image }, { onText: first }, image ? [image] : []);
      const t2 = performance.now();
      const prefill = ((t1 ?? t2) - t0) / 1000;
      const decode = (t2 - (t1 ?? t2)) / 1000;
      const n = r.ids.length;
      const timings = { prefill_s: prefill, decode_s: decode, prefill_tokens_per_s: prefill > 0 ? r.prompt_tokens / prefill : 0, decode_tokens_per_s: decode > 0 && n > 1 ? (n - 1) / decode : 0 };
      return { text: r.text, spans: r.spans, stop: r.stop, usage: { prompt_tokens: r.prompt_tokens, completion_tokens: n, image_tokens: r.image_tokens }, timings };
    } finally {
      req.signal?.removeEventListener("abort", onAbort);
    }
  }

  readonly chat = {
    completions: {
      create: (req: CompletionRequest): any => (req.stream ? this.stream(req) : this.complete(req)),
    },
  };

  private async complete(req: CompletionRequest): Promise<Completion> {
    const a = await this.answer(req);
    return {
      id: `chatcmpl-${Date.now()}`,
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content: a.text }, finish_reason: a.stop === "length" ? "length" : "stop" }],
      usage: { prompt_tokens: a.usage.prompt_tokens, completion_tokens: a.usage.completion_tokens, total_tokens: a.usage.prompt_tokens + a.usage.completion_tokens },
      spans: a.spans,
      timings: a.timings,
    };
  }

  private async *stream(req: CompletionRequest): AsyncGenerator<CompletionChunk> {
    const id = `chatcmpl-${Date.now()}`;
    const queue: string[] = [];
    let wake: (() => void) | undefined;
    let finished: Answer | undefined;
    let failed: unknown;
    this.answer(req, (s) => { queue.push(s); wake?.(); })
      .then((a) => { finished = a; wake?.(); }, (e) => { failed = e ?? new EngineError("failed"); wake?.(); });
    try {
      for (;;) {
        while (queue.length) yield { id, object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: queue.shift()! }, finish_reason: null }] };
        if (failed) throw failed;
        if (finished) {
          const u = finished.usage;
          yield {
            id, object: "chat.completion.chunk", choices: [{ index: 0, delta: {}, finish_reason: finished.stop === "length" ? "length" : "stop" }],
            usage: { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.prompt_tokens + u.completion_tokens },
            spans: finished.spans, timings: finished.timings,
          };
          return;
        }
        await new Promise<void>((r) => (wake = r));
      }
    } finally {
      // the caller stopped reading before the end: stop generating too
      if (!finished && !failed) this.interrupt();
    }
  }

  private async task(image: ImageInput, kind: string, o: TaskOptions, phrase?: string, bbox?: number[]): Promise<Answer> {
    const text: string = await this.rpc.call("prompt", { kind, phrase, bbox, lang: o.lang });
    return this.answer({ messages: [{ role: "user", content: [{ type: "image", image }, { type: "text", text }] }], max_tokens: o.max_tokens, signal: o.signal }, o.onText);
  }
  /** A description of the image. */
  describe(image: ImageInput, o: TaskOptions = {}) { return this.task(image, "describe", o); }
  /** Every piece of text with its box. */
  ocr(image: ImageInput, o: TaskOptions = {}) { return this.task(image, "ocr", o); }
  /** The objects the description mentions with their boxes, or only `phrase`. */
  ground(image: ImageInput, phrase?: string, o: TaskOptions = {}) { return this.task(image, "ground", o, phrase); }
  /** A question about a region: box as [x1, y1, x2, y2] in 0..1 of the image. */
  refer(image: ImageInput, box: [number, number, number, number], question: string, o: TaskOptions = {}) { return this.task(image, "refer", o, question, box); }
  /** The prompt text a task sends (what `ocr`, `ground`, `refer`, `describe` ask), e.g. to start a chat. */
  prompt(kind: "describe" | "ocr" | "ground" | "refer", o: { lang?: Lang; phrase?: string; box?: [number, number, number, number] } = {}): Promise<string> {
    return this.rpc.call("prompt", { kind, phrase: o.phrase, bbox: o.box, lang: o.lang });
  }
  /** The spans and boxes of an answer's text (e.g. a result saved earlier); the image size adds pixels. */
  parseAnswer(text: string, width = 0, height = 0): Promise<Span[]> {
    return this.rpc.call("parse", { text, width, height });
  }

  /** Stops the running answer after the current token. */
  interrupt() { this.rpc.call("interrupt").catch(() => {}); }
  /** Frees the GPU memory and ends the worker (the cache stays). */
  async unload() {
    await this.rpc.call("unload").catch(() => {});
    this.rpc.end(new EngineError("the engine was unloaded"));
  }

  readonly cache = {
    list: (): Promise<CachedModel[]> => this.rpc.call("cache.list"),
    delete: (key: string): Promise<void> => this.rpc.call("cache.delete", { key }),
    usage: (): Promise<{ usage?: number; quota?: number }> => this.rpc.call("cache.usage"),
  };
}

export function createEngine(o: EngineOptions): Promise<VarcoEngine> {
  return VarcoEngine.create(o);
}
