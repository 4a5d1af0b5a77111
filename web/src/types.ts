// The package's public types. The OpenAI-shaped chat (CompletionRequest, Completion, CompletionChunk) keeps
// OpenAI's names (max_tokens, finish_reason, prompt_tokens_details.cached_tokens) and llama.cpp's for what
// OpenAI lacks (top_k, repetition_penalty, cache_prompt); everything else is camelCase.

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
  shardLoaded?: number;
  shardTotal?: number;
  /** Download: bytes that were already stored when this load began (a resumed download). */
  resumed?: number;
  /** Bytes per second (download). */
  rate?: number;
  /** Seconds left (download), when known. */
  eta?: number | null;
  /** Bytes of the engine's wasm memory (it stays bounded however large the model). */
  heap?: number;
}
/** GPU memory a model needs, in bytes. */
export interface ModelMemory {
  weights: number;
  kvPerToken: number;
  /** The context the total is for. */
  context: number;
  activations: number;
  total: number;
}
/** The kernel variants the engine runs on this adapter, and why: a slow browser's cause is often here. */
export interface KernelVariants {
  /** Reductions across a workgroup through subgroup operations, or through workgroup memory (slower). */
  reductions: "subgroups" | "workgroup memory";
  reductionsWhy: string;
  /** Activations and KV cache in f16 (with shader-f16), or f32: twice the memory traffic. */
  activations: "f16" | "f32";
  activationsWhy: string;
  /** Decode's 4-bit products as 8-bit integer dot products (a GPU whose WGSL has them), or in f32. */
  decodeProducts: "8-bit integer dot products" | "f32 products";
  decodeProductsWhy: string;
}
/** What the worker found before downloading: the adapter and what the model needs. */
export interface Capabilities {
  adapter: string;
  shaderF16: boolean;
  subgroups: boolean;
  kernels: KernelVariants;
  /** The largest buffer the engine may bind, bytes. */
  maxBinding: number;
  modelMemory: ModelMemory;
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
/** Where an answer's time went, measured in the engine. */
export interface Timings {
  /** Encoding the image (0 when the image was already in the engine's cache). */
  imageSeconds: number;
  /** Running the prompt's new tokens. */
  prefillSeconds: number;
  /** From the request to the first token: image, prompt and the first token's step. */
  firstTokenSeconds: number;
  /** From the first token to the last. */
  decodeSeconds: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
}
export interface Usage {
  /** The prompt's tokens, the image's included. */
  promptTokens: number;
  /** Of those, the tokens the engine kept from the previous request (not run again). */
  cachedTokens: number;
  /** The image's tokens, when the conversation has an image. */
  imageTokens: number | null;
  completionTokens: number;
}
export interface Answer {
  text: string;
  spans: Span[];
  stop: "eos" | "length" | "interrupted";
  usage: Usage;
  timings: Timings;
}
export type Lang = "en" | "ko";
export type TaskKind = "describe" | "ocr" | "ground" | "refer";
export interface TaskOptions {
  /** The prompt's language (default "en"). */
  lang?: Lang;
  /** Each new piece of the answer as it is generated. */
  onText?: (piece: string) => void;
  maxTokens?: number;
  /** Aborting stops the answer after the current token. */
  signal?: AbortSignal;
  /** Reuse what the engine holds of this prompt's beginning (default true): the same image is not read again. */
  cachePrompt?: boolean;
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
  /** Reuse what the engine holds of this conversation's beginning (default true; llama.cpp's name). */
  cache_prompt?: boolean;
  signal?: AbortSignal;
}
export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** cached_tokens: the prompt's tokens that were not run again (an earlier turn, the same image). */
  prompt_tokens_details: { cached_tokens: number };
}
export interface Completion {
  id: string;
  object: "chat.completion";
  choices: { index: 0; message: { role: "assistant"; content: string }; finish_reason: "stop" | "length" }[];
  usage: CompletionUsage;
  /** varco-web: the answer's spans and boxes (grounding, referring, OCR). */
  spans: Span[];
  /** varco-web: where the time went. */
  timings: Timings;
}
export interface CompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  choices: { index: 0; delta: { content?: string }; finish_reason: "stop" | "length" | null }[];
  /** On the last chunk only (as OpenAI's stream_options.include_usage), with varco-web's spans and timings. */
  usage?: CompletionUsage;
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
  /** Tokens of context the engine holds (default: the model's, from its manifest): fewer need less GPU memory. */
  maxContext?: number;
  /** Where the worker script is (default: beside this module). */
  workerUrl?: string | URL;
  /** The GPU device was lost (a driver reset, the browser moving to another GPU): `lost` (the answer running
   * then fails with GPUDeviceLostError; the engine reloads the model from this computer, `onProgress` showing
   * it), then `recovered` (requests run again), or `failed` after two attempts (reload the page). */
  onDeviceLost?: (e: DeviceLostEvent) => void;
}
/** What the engine holds now: GPU buffers, their bytes and bind groups (as it made them), and the worker's
 * wasm memory. Once the first request has run, the same after every request. */
export interface EngineMemory {
  gpuBuffers: number;
  gpuBytes: number;
  bindGroups: number;
  wasmBytes: number;
}
export interface DeviceLostEvent {
  phase: "lost" | "recovered" | "failed";
  message: string;
}
