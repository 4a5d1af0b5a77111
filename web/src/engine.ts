// The page's side of varco-web: the engine lives in a Web Worker (worker.ts) and this talks to it through
// the typed protocol of messages.ts.

import { AbortError, EngineError, rebuild } from "./errors.js";
import type { EngineEvent, FromWorker, Op, Ops, ToWorker, WireAnswer, WireMessage, WirePart } from "./messages.js";
import type {
  Answer, CachedModel, Capabilities, ChatMessage, Completion, CompletionChunk, CompletionRequest, DeviceLostEvent, EngineMemory, EngineOptions, ImageInput, Lang,
  Progress, Span, TaskKind, TaskOptions,
} from "./types.js";

interface CreateCompletion {
  (req: CompletionRequest & { stream: true }): Promise<AsyncGenerator<CompletionChunk>>;
  (req: CompletionRequest & { stream?: false }): Promise<Completion>;
  (req: CompletionRequest): Promise<Completion | AsyncGenerator<CompletionChunk>>;
}

type Pending = {
  resolve: (v: Ops[Op]["result"]) => void; reject: (e: Error) => void;
  onProgress?: (p: Progress) => void; onCapabilities?: (c: Capabilities) => void; onText?: (s: string) => void;
};
type Events = Pick<Pending, "onProgress" | "onCapabilities" | "onText">;

class Rpc {
  private next = 1;
  private pending = new Map<number, Pending>();
  /** Set once the worker failed or was ended: every later call fails at once with it. */
  private dead?: Error;
  /** What the engine tells unasked: progress while it recovers, and the lost device's phases. */
  onEvent?: (e: EngineEvent) => void;
  constructor(readonly worker: Worker) {
    // a worker that fails to start or dies fails every pending call instead of leaving it waiting
    worker.onerror = (ev) => {
      ev.preventDefault();
      this.end(new EngineError(`the varco-web worker failed: ${ev.message || "it could not be loaded"}`));
    };
    worker.onmessage = (ev: MessageEvent<FromWorker>) => {
      const m = ev.data;
      if (m.kind === "event") {
        this.onEvent?.(m.event);
        return;
      }
      const p = this.pending.get(m.id);
      if (!p) return;
      switch (m.kind) {
        case "progress": p.onProgress?.(m.progress); break;
        case "capabilities": p.onCapabilities?.(m.capabilities); break;
        case "text": p.onText?.(m.piece); break;
        case "result": this.pending.delete(m.id); p.resolve(m.value); break;
        case "error": this.pending.delete(m.id); p.reject(rebuild(m)); break;
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
  private post(m: ToWorker, transfer: Transferable[] = []) {
    this.worker.postMessage(m, transfer);
  }
  call<O extends Op>(op: O, args: Ops[O]["args"], events: Events = {}, transfer: Transferable[] = [], signal?: AbortSignal): Promise<Ops[O]["result"]> {
    const id = this.next++;
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as Pending["resolve"], reject, ...events });
      if (signal) {
        if (signal.aborted) {
          this.pending.delete(id);
          return reject(new AbortError("cancelled"));
        }
        signal.addEventListener("abort", () => this.post({ id: this.next++, op: "abort", target: id }), { once: true });
      }
      this.post({ id, op, ...args } as ToWorker, transfer);
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
async function convert(messages: ChatMessage[]): Promise<{ messages: WireMessage[]; image?: ArrayBuffer }> {
  let image: ArrayBuffer | undefined;
  const out: WireMessage[] = [];
  for (const m of messages) {
    const parts = typeof m.content === "string" ? [{ type: "text" as const, text: m.content }] : m.content;
    const content: WirePart[] = [];
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
    rpc.onEvent = (e) => {
      if (e.type === "progress") o.onProgress?.(e.progress);
      else {
        const phase: DeviceLostEvent["phase"] = e.type === "deviceLost" ? "lost" : e.type === "recovered" ? "recovered" : "failed";
        o.onDeviceLost?.({ phase, message: e.type === "recovered" ? "the model is back on the GPU" : e.message });
      }
    };
    // the cache should not be evicted under storage pressure (asked here: persist() exists on pages only)
    void navigator.storage?.persist?.().catch(() => false);
    try {
      const args = { manifestUrl: new URL(o.manifestUrl, location.href).toString(), keepOldVersions: o.keepOldVersions, maxContext: o.maxContext };
      const r = await rpc.call("load", args, { onProgress: o.onProgress, onCapabilities: o.onCapabilities }, [], o.signal);
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
      repetition_penalty: req.repetition_penalty, cache_prompt: req.cache_prompt,
    };
    const onAbort = () => this.interrupt();
    req.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return answer(await this.rpc.call("chat", { request, image }, { onText }, image ? [image] : []));
    } finally {
      req.signal?.removeEventListener("abort", onAbort);
    }
  }

  /** OpenAI's `chat.completions.create`: a Completion, or with `stream: true` its chunks as they come. */
  readonly chat: { completions: { create: CreateCompletion } } = {
    completions: {
      create: ((req: CompletionRequest) => (req.stream ? Promise.resolve(this.stream(req)) : this.complete(req))) as CreateCompletion,
    },
  };

  private async complete(req: CompletionRequest): Promise<Completion> {
    const a = await this.answer(req);
    return {
      id: `chatcmpl-${Date.now()}`,
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content: a.text }, finish_reason: a.stop === "length" ? "length" : "stop" }],
      usage: completionUsage(a),
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
          yield {
            id, object: "chat.completion.chunk", choices: [{ index: 0, delta: {}, finish_reason: finished.stop === "length" ? "length" : "stop" }],
            usage: completionUsage(finished), spans: finished.spans, timings: finished.timings,
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

  private async task(image: ImageInput, kind: TaskKind, o: TaskOptions, phrase?: string, bbox?: number[]): Promise<Answer> {
    const text = await this.rpc.call("prompt", { kind, phrase, bbox, lang: o.lang });
    const messages: ChatMessage[] = [{ role: "user", content: [{ type: "image", image }, { type: "text", text }] }];
    return this.answer({ messages, max_tokens: o.maxTokens, signal: o.signal, cache_prompt: o.cachePrompt }, o.onText);
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
  prompt(kind: TaskKind, o: { lang?: Lang; phrase?: string; box?: [number, number, number, number] } = {}): Promise<string> {
    return this.rpc.call("prompt", { kind, phrase: o.phrase, bbox: o.box, lang: o.lang });
  }
  /** The spans and boxes of an answer's text (e.g. a result saved earlier); the image size adds pixels. */
  parseAnswer(text: string, width = 0, height = 0): Promise<Span[]> {
    return this.rpc.call("parse", { text, width, height });
  }

  /** What the engine holds now (GPU buffers, their bytes, bind groups; the worker's wasm memory). */
  memory(): Promise<EngineMemory> {
    return this.rpc.call("memory", {});
  }

  /** Stops the running answer after the current token. */
  interrupt() { this.rpc.call("interrupt", {}).catch(() => {}); }
  /** Frees the GPU memory and ends the worker (the cache stays). */
  async unload() {
    await this.rpc.call("unload", {}).catch(() => {});
    this.rpc.end(new EngineError("the engine was unloaded"));
  }

  readonly cache = {
    list: (): Promise<CachedModel[]> => this.rpc.call("cache.list", {}),
    delete: (key: string): Promise<void> => this.rpc.call("cache.delete", { key }),
    usage: (): Promise<StorageEstimate | undefined> => this.rpc.call("cache.usage", {}),
  };
}

/** The engine's answer in the package's terms. */
function answer(w: WireAnswer): Answer {
  const u = w.usage;
  const t = w.timings;
  return {
    text: w.text,
    spans: w.spans,
    stop: w.stop,
    usage: { promptTokens: u.prompt_tokens, cachedTokens: u.cached_tokens, imageTokens: u.image_tokens, completionTokens: u.completion_tokens },
    timings: {
      imageSeconds: t.image_s, prefillSeconds: t.prefill_s, firstTokenSeconds: t.first_token_s, decodeSeconds: t.decode_s,
      prefillTokensPerSecond: t.prefill_tokens_per_s, decodeTokensPerSecond: t.decode_tokens_per_s,
    },
  };
}

function completionUsage(a: Answer): Completion["usage"] {
  const u = a.usage;
  return {
    prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.promptTokens + u.completionTokens,
    prompt_tokens_details: { cached_tokens: u.cachedTokens },
  };
}

export function createEngine(o: EngineOptions): Promise<VarcoEngine> {
  return VarcoEngine.create(o);
}
