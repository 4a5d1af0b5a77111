// The protocol between the page (engine.ts) and the Web Worker (worker.ts): every message a `kind`-tagged
// member of a union, and each operation's result typed by its name. Also the engine's own JSON (wasm ↔
// worker), as the Rust side writes it (crate/src/session.rs, web.rs): snake_case on the wire.

import type { CachedModel, Capabilities, EngineMemory, KernelVariants, Lang, Progress, Span, TaskKind } from "./types.js";

/** A message part as the engine reads it: the image's bytes travel beside the request. */
export type WirePart = { type: "text"; text: string } | { type: "image" };
export interface WireMessage {
  role: "system" | "user" | "assistant";
  content: WirePart[];
}
/** A request to the engine (web.rs WireRequest): generation settings over the model's defaults. */
export interface WireRequest {
  messages: WireMessage[];
  max_new_tokens?: number;
  temperature?: number;
  top_k?: number;
  top_p?: number;
  seed?: number;
  repetition_penalty?: number;
  cache_prompt?: boolean;
}
/** The engine's answer (session.rs Answer). */
export interface WireAnswer {
  text: string;
  generated_ids: number[];
  stop: "eos" | "length" | "interrupted";
  usage: { prompt_tokens: number; cached_tokens: number; image_tokens: number | null; completion_tokens: number };
  spans: Span[];
  timings: { image_s: number; prefill_s: number; first_token_s: number; decode_s: number; prefill_tokens_per_s: number; decode_tokens_per_s: number };
}
/** The engine's capabilities (web.rs capabilities_json). */
export interface WireCapabilities {
  adapter: string;
  shader_f16: boolean;
  subgroups: boolean;
  kernels: {
    reductions: KernelVariants["reductions"];
    reductions_why: string;
    activations: KernelVariants["activations"];
    activations_why: string;
    decode_products: KernelVariants["decodeProducts"];
    decode_products_why: string;
  };
  max_binding: number;
  model_memory: { weights: number; kv_per_token: number; context: number; activations: number; total: number };
}

export function capabilities(w: WireCapabilities): Capabilities {
  const m = w.model_memory;
  return {
    adapter: w.adapter,
    shaderF16: w.shader_f16,
    subgroups: w.subgroups,
    kernels: {
      reductions: w.kernels.reductions,
      reductionsWhy: w.kernels.reductions_why,
      activations: w.kernels.activations,
      activationsWhy: w.kernels.activations_why,
      decodeProducts: w.kernels.decode_products,
      decodeProductsWhy: w.kernels.decode_products_why,
    },
    maxBinding: w.max_binding,
    modelMemory: { weights: m.weights, kvPerToken: m.kv_per_token, context: m.context, activations: m.activations, total: m.total },
  };
}

/** Each operation: what the page sends (besides `id` and `op`) and what the worker resolves it with. */
export interface Ops {
  load: { args: { manifestUrl: string; keepOldVersions?: boolean; maxContext?: number }; result: { key: string; capabilities: Capabilities } };
  chat: { args: { request: WireRequest; image?: ArrayBuffer }; result: WireAnswer };
  prompt: { args: { kind: TaskKind; phrase?: string; bbox?: number[]; lang?: Lang }; result: string };
  parse: { args: { text: string; width: number; height: number }; result: Span[] };
  interrupt: { args: Record<string, never>; result: void };
  abort: { args: { target: number }; result: void };
  unload: { args: Record<string, never>; result: void };
  "cache.list": { args: Record<string, never>; result: CachedModel[] };
  "cache.delete": { args: { key: string }; result: void };
  "cache.usage": { args: Record<string, never>; result: StorageEstimate | undefined };
  memory: { args: Record<string, never>; result: EngineMemory };
  /** Test builds of the engine only: loses the GPU device as a driver reset would. */
  "test.loseDevice": { args: Record<string, never>; result: void };
  /** Test builds of the engine only: the device refuses the `nth` buffer the engine creates from now on. */
  "test.refuseAllocation": { args: { nth: number }; result: void };
}

/** What the engine tells the page unasked (message id 0). */
export type EngineEvent =
  | { type: "progress"; progress: Progress }
  | { type: "deviceLost"; message: string }
  | { type: "recovered" }
  | { type: "recoveryFailed"; message: string };
export type Op = keyof Ops;

/** Page → worker. */
export type ToWorker = { [O in Op]: { id: number; op: O } & Ops[O]["args"] }[Op];

/** Worker → page. */
export type FromWorker =
  | { id: number; kind: "progress"; progress: Progress }
  | { id: number; kind: "capabilities"; capabilities: Capabilities }
  | { id: number; kind: "text"; piece: string }
  | { id: number; kind: "result"; value: Ops[Op]["result"] }
  | { id: number; kind: "error"; name: string; message: string }
  | { id: 0; kind: "event"; event: EngineEvent };
