// The Web Worker: owns the wasm engine, the downloads and the IndexedDB cache, so the page's main thread
// only posts messages. The protocol is messages.ts: a ToWorker in, FromWorker messages out.

import init, { Engine, Sha256, parse_answer, task_prompt } from "../pkg/varco_web.js";
import { Cache, CHUNK, type ModelRecord } from "./cache.js";
import {
  capabilities as readCapabilities, type EngineEvent, type FromWorker, type Op, type Ops, type ToWorker, type WireAnswer, type WireCapabilities,
} from "./messages.js";
import type { Progress, Span } from "./types.js";

type LoadMsg = Extract<ToWorker, { op: "load" }>;
type ChatMsg = Extract<ToWorker, { op: "chat" }>;

const post = (m: FromWorker, transfer: Transferable[] = []) => (self as unknown as DedicatedWorkerGlobalScope).postMessage(m, transfer);
const progress = (id: number, p: Progress) => post({ id, kind: "progress", progress: p });
const event = (e: EngineEvent) => post({ id: 0, kind: "event", event: e });

class Fail extends Error {
  constructor(public kind: string, message: string) {
    super(message);
  }
}

let engine: Engine | undefined;
/** What the loaded engine was made from: enough to make it again from the cache after a lost device. */
let made: { key: string; manifest: Manifest; bytes: ArrayBuffer; tokenizer: ArrayBuffer; maxContext?: number } | undefined;
/** Set while the engine is being made again after a lost device; requests wait for it. */
let recovering: Promise<void> | undefined;
/** Why each lost engine's device was lost (kept past the engine's freeing, for the answer it cut short). */
const lostReasons = new WeakMap<Engine, string>();
let cache: Cache | undefined;
let memory: WebAssembly.Memory | undefined;
/** Bytes of wasm linear memory (it only grows): reported with progress, bounded while loading. */
const heap = () => memory?.buffer.byteLength ?? 0;
const aborts = new Map<number, AbortController>();

async function sha256Hex(data: ArrayBuffer | Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data as BufferSource);
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Manifest {
  shard_size: number;
  total_bytes: number;
  shards: { file: string; bytes: number; sha256: string }[];
  tokenizer: { file: string; bytes: number; sha256: string };
  memory: { total: number; weights: number };
}

/** The manifest: from the network, else (offline) the one cached for this URL. */
async function manifestFor(url: string, signal: AbortSignal): Promise<{ bytes: ArrayBuffer; key: string; cached?: ModelRecord }> {
  try {
    const res = await fetch(url, { signal, cache: "no-cache" });
    if (!res.ok) throw new Fail("DownloadError", `${url}: HTTP ${res.status}`);
    const bytes = await res.arrayBuffer();
    const key = await sha256Hex(bytes);
    return { bytes, key, cached: await cache!.model(key) };
  } catch (e) {
    if (signal.aborted) throw new Fail("AbortError", "cancelled");
    const key = await cache!.keyForUrl(url);
    const cached = key ? await cache!.model(key) : undefined;
    if (!cached) throw e instanceof Fail ? e : new Fail("DownloadError", `${url}: ${(e as Error).message} (and no cached copy)`);
    return { bytes: cached.manifest, key: cached.key, cached };
  }
}

/** Downloads one shard into the cache, resuming from its stored chunks, retrying with backoff, verifying. */
async function downloadShard(
  base: URL, key: string, i: number, s: Manifest["shards"][0], signal: AbortSignal, onBytes: (n: number) => void,
): Promise<void> {
  const url = new URL(s.file, base).toString();
  for (let attempt = 0; ; attempt++) {
    let failures = 0;
    for (;;) {
      let offset = (await cache!.chunkCount(key, i)) * CHUNK;
      if (offset >= s.bytes) break;
      // bytes received but not yet stored as a whole record: counted in progress, taken back on a failure
      let fill = 0;
      try {
        const res = await fetch(url, { signal, cache: "no-store", headers: offset > 0 ? { Range: `bytes=${offset}-` } : {} });
        if (offset > 0 && res.status === 200) {
          // the server ignored the range: start the shard again
          await cache!.deleteShard(key, i);
          onBytes(-offset);
          offset = 0;
        } else if (!res.ok) {
          throw new Fail("DownloadError", `${url}: HTTP ${res.status}`);
        }
        const reader = res.body!.getReader();
        let buf = new Uint8Array(Math.min(CHUNK, s.bytes - offset));
        while (offset < s.bytes) {
          const { done, value } = await reader.read();
          if (done) break;
          let v = value;
          while (v.length > 0) {
            const n = Math.min(v.length, buf.length - fill);
            buf.set(v.subarray(0, n), fill);
            fill += n;
            v = v.subarray(n);
            onBytes(n);
            if (fill === buf.length) {
              await cache!.putChunk(key, i, offset / CHUNK, buf.buffer);
              offset += fill;
              failures = 0;
              fill = 0;
              if (offset >= s.bytes) {
                // the whole shard is stored; anything more the server sends is not ours
                await reader.cancel().catch(() => {});
                break;
              }
              buf = new Uint8Array(Math.min(CHUNK, s.bytes - offset));
            }
          }
        }
        if (offset < s.bytes) {
          throw new Fail("DownloadError", `${url}: the connection closed at byte ${offset + fill} of ${s.bytes}`);
        }
      } catch (e) {
        onBytes(-fill);
        if (signal.aborted) throw new Fail("AbortError", "cancelled");
        if ((e as Error)?.name === "QuotaExceededError") throw new Fail("QuotaError", `storing ${s.file}: the browser's storage quota for this site is used up`);
        if (++failures > 5) throw e instanceof Fail ? e : new Fail("DownloadError", `${url}: ${(e as Error).message}`);
        await sleep(200 * 2 ** failures);
      }
    }
    // verify the stored shard, a record at a time
    const h = new Sha256();
    try {
      for (let c = 0; c < Math.ceil(s.bytes / CHUNK); c++) h.update(new Uint8Array(await cache!.chunk(key, i, c)));
      if (h.hex() === s.sha256) return;
    } finally {
      h.free();
    }
    await cache!.deleteShard(key, i);
    onBytes(-s.bytes);
    if (attempt >= 1) throw new Fail("IntegrityError", `${s.file}: SHA-256 mismatch after a second download`);
  }
}

/** Runs `fn` holding the Web Lock `name`; while another context holds it, calls `onWait` and waits. */
async function exclusive<T>(name: string, signal: AbortSignal, onWait: () => void, fn: () => Promise<T>): Promise<T> {
  const locks: LockManager | undefined = (navigator as any).locks;
  if (!locks) return fn();
  const now = await locks.request(name, { ifAvailable: true }, async (lock) => (lock ? { value: await fn() } : null));
  if (now) return now.value;
  onWait();
  try {
    return await locks.request(name, { signal }, fn);
  } catch (e) {
    if (signal.aborted) throw new Fail("AbortError", "cancelled");
    throw e;
  }
}

/** Downloads what the cache lacks of a model (shards, tokenizer); returns the tokenizer's bytes. */
async function download(m: LoadMsg, key: string, manifest: Manifest, base: URL, signal: AbortSignal): Promise<ArrayBuffer> {
  // read again: another tab may have stored shards while this one waited
  const c = cache!;
  const record = (await c.model(key))!;
  // bytes stored per shard (the complete ones, and the records of partial ones: what a resume keeps)
  const perShard = await Promise.all(manifest.shards.map(async (s, i) => (record.done[i] ? s.bytes : Math.min(s.bytes, (await c.chunkCount(key, i)) * CHUNK))));
  const total = manifest.total_bytes;
  let loaded = perShard.reduce((a, b) => a + b, 0);
  const missing = total - loaded;
  if (missing > 0) {
    const est = await navigator.storage?.estimate?.();
    if (est && est.quota !== undefined && est.usage !== undefined && est.quota - est.usage < missing) {
      throw new Fail("QuotaError", `the model needs ${(missing / 1e6).toFixed(1)} MB more storage; this site may use ${((est.quota - est.usage) / 1e6).toFixed(1)} MB`);
    }
  }
  // downloads: a few shards at a time; progress at most every 50 ms per shard, and at its end
  const t0 = performance.now();
  const start = loaded;
  const sent = perShard.map(() => 0);
  const report = (shard: number, force = false) => {
    const now = performance.now();
    if (!force && now - sent[shard] < 50 && perShard[shard] < manifest.shards[shard].bytes) return;
    sent[shard] = now;
    const secs = (now - t0) / 1000;
    const rate = secs > 0 ? (loaded - start) / secs : 0;
    progress(m.id, {
      phase: "download", loaded, total, shard, shardLoaded: perShard[shard], shardTotal: manifest.shards[shard].bytes,
      shards: manifest.shards.length, resumed: start, rate, eta: rate > 0 ? (total - loaded) / rate : null, heap: heap(),
    });
  };
  // what is stored already (a resumed download), shown before anything arrives
  if (missing > 0) perShard.forEach((n, i) => n > 0 && report(i, true));
  const queue = manifest.shards.map((_, i) => i).filter((i) => !record.done[i]);
  const worker = async () => {
    for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
      const shard = i;
      await downloadShard(base, key, shard, manifest.shards[shard], signal, (n) => {
        loaded += n;
        perShard[shard] += n;
        report(shard);
      });
      record.done[shard] = true;
      await c.putModel(record);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  let tok = await c.file(key, "tokenizer");
  if (!tok) {
    const res = await fetch(new URL(manifest.tokenizer.file, base), { signal });
    if (!res.ok) throw new Fail("DownloadError", `${manifest.tokenizer.file}: HTTP ${res.status}`);
    tok = await res.arrayBuffer();
    if ((await sha256Hex(tok)) !== manifest.tokenizer.sha256) throw new Fail("IntegrityError", `${manifest.tokenizer.file}: SHA-256 mismatch`);
    await c.putFile(key, "tokenizer", tok);
  }
  return tok;
}

/** A shard whose stored copy failed its check while going into the GPU. */
class Damaged extends Error {
  constructor(readonly shard: number, message: string) {
    super(message);
  }
}

/** Makes an engine from the model stored under `key`: every shard from IndexedDB into the GPU, a record at a
 * time, each shard's SHA-256 checked again on the way; then the tokenizer. */
async function makeEngine(
  key: string, manifest: Manifest, bytes: ArrayBuffer, tok: ArrayBuffer, maxContext: number | undefined, signal: AbortSignal | undefined,
  onProgress: (p: Progress) => void,
): Promise<Engine> {
  const e = await Engine.create(new Uint8Array(bytes), maxContext);
  let up = 0;
  try {
    // a record missing from the store, or a shard whose hash fails, is the store's damage (the shard is
    // fetched again); what the engine refuses while writing (a NaN scale) is the model's own
    const damaged = (i: number, err: unknown) => new Damaged(i, String((err as Error)?.message ?? err));
    for (let i = 0; i < manifest.shards.length; i++) {
      const n = Math.ceil(manifest.shards[i].bytes / CHUNK);
      for (let c = 0; c < n; c++) {
        if (signal?.aborted) throw new Fail("AbortError", "cancelled");
        let chunk: Uint8Array;
        try {
          chunk = new Uint8Array(await cache!.chunk(key, i, c));
        } catch (err) {
          throw damaged(i, err);
        }
        e.write(i, c * CHUNK, chunk);
        up += chunk.length;
        onProgress({ phase: "gpu", loaded: up, total: manifest.total_bytes, shard: i, shards: manifest.shards.length, heap: heap() });
      }
      try {
        e.verify_shard(i);
      } catch (err) {
        throw damaged(i, err);
      }
    }
    await e.finish(new Uint8Array(tok));
  } catch (err) {
    e.free();
    throw err;
  }
  e.on_device_lost(() => void deviceLost());
  return e;
}

/** The engine's device was lost: the running answer (if any) fails with GPUDeviceLostError; the engine is
 * made again from this computer's cache, no network; twice at most. */
async function deviceLost() {
  const lost = engine?.lost();
  if (!lost || recovering || !made) return;
  lostReasons.set(engine!, lost);
  event({ type: "deviceLost", message: lost });
  const m = made;
  recovering = (async () => {
    let last: unknown;
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        engine?.free();
        engine = undefined;
        engine = await makeEngine(m.key, m.manifest, m.bytes, m.tokenizer, m.maxContext, undefined, (p) => event({ type: "progress", progress: p }));
        event({ type: "recovered" });
        return;
      } catch (e) {
        last = e;
      }
    }
    made = undefined;
    const message = `the GPU could not be used again (${String((last as Error)?.message ?? last)}); reload the page to try once more`;
    event({ type: "recoveryFailed", message });
    throw new Fail("GPUDeviceLostError", message);
  })();
  try {
    await recovering;
  } catch {
    // told to the page above
  } finally {
    recovering = undefined;
  }
}

async function load(m: LoadMsg, signal: AbortSignal, retried = false): Promise<Ops["load"]["result"]> {
  memory = (await init()).memory;
  if (!(navigator as any).gpu) throw new Fail("NoWebGPUError", "this browser has no WebGPU");
  cache ??= await Cache.open();
  const { bytes, key, cached } = await manifestFor(m.manifestUrl, signal);
  let manifest: Manifest;
  try {
    manifest = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new Fail("ModelFormatError", `manifest.json: ${(e as Error).message}`);
  }
  // refuse a model this GPU cannot hold before downloading any of it
  const capabilities = readCapabilities(JSON.parse(await Engine.check(new Uint8Array(bytes), m.maxContext)) as WireCapabilities);
  post({ id: m.id, kind: "capabilities", capabilities });
  const fresh: ModelRecord = cached ?? { key, url: m.manifestUrl, manifest: bytes, done: manifest.shards.map(() => false), bytes: manifest.total_bytes, added: Date.now() };
  await cache.putModel(fresh);
  const base = new URL(m.manifestUrl, self.location.href);
  // one tab downloads a model at a time: another tab loading it waits, then finds it stored
  const tok = await exclusive(`varco-web:${key}`, signal, () => progress(m.id, { phase: "waiting", loaded: 0, total: manifest.total_bytes, shard: 0, shards: manifest.shards.length }),
    async () => download(m, key, manifest, base, signal));
  // into the GPU, shard by shard, chunk by chunk (each shard checked again on the way)
  engine?.free();
  engine = undefined;
  let e: Engine;
  try {
    e = await makeEngine(key, manifest, bytes, tok, m.maxContext, signal, (p) => progress(m.id, p));
  } catch (err) {
    if (!(err instanceof Damaged)) throw err;
    // the stored copy of this shard is damaged or gone (storage cleared, disk error): drop it and fetch it
    // again, once
    await cache.deleteShard(key, err.shard);
    const r = await cache.model(key);
    if (r) {
      r.done[err.shard] = false;
      await cache.putModel(r);
    }
    if (retried) throw new Fail("IntegrityError", `${manifest.shards[err.shard].file}: the stored copy is damaged again after downloading it anew (${err.message})`);
    return load(m, signal, true);
  }
  made = { key, manifest, bytes, tokenizer: tok, maxContext: m.maxContext };
  engine = e;
  // older versions of this model (cached from the same URL) are superseded now: free their storage
  if (m.keepOldVersions !== true) {
    for (const old of await cache.list()) if (old.url === fresh.url && old.key !== key) await cache.delete(old.key);
  }
  return { key, capabilities: readCapabilities(JSON.parse(e.capabilities()) as WireCapabilities) };
}

async function chat(m: ChatMsg, retried = false): Promise<WireAnswer> {
  // after a lost device, the engine is being made again: this request runs on the new one
  if (engine?.lost()) void deviceLost();
  if (recovering) await recovering.catch(() => {});
  if (!engine) throw new Fail(made === undefined && recovering === undefined ? "EngineError" : "GPUDeviceLostError", "no model is loaded");
  const image = m.image ? new Uint8Array(m.image) : undefined;
  const e = engine;
  let streamed = false;
  try {
    const out = await e.generate(JSON.stringify(m.request), image, (piece: string) => {
      streamed = true;
      post({ id: m.id, kind: "text", piece });
    });
    return JSON.parse(out as string) as WireAnswer;
  } catch (err) {
    // a device lost mid-answer fails the read back first; the browser tells the loss itself a little later
    // (once the loss is told, the engine is freed: its reason is kept aside)
    const reason = () => lostReasons.get(e) ?? (engine === e ? e.lost() : undefined);
    let lost = reason();
    for (let i = 0; !lost && i < 20; i++) {
      await new Promise((r) => setTimeout(r, 100));
      lost = reason();
    }
    if (!lost) throw err;
    // a device lost before the answer's first word (e.g. while idle, told only once this request ran): the
    // page has seen nothing of it, so it is answered again on the engine made anew
    if (!streamed && !retried) return chat(m, true);
    throw new Fail("GPUDeviceLostError", `the GPU device was lost during the answer: ${lost}; the model is being loaded again from this computer`);
  }
}

/** Runs one operation; its result (typed by the operation's name in messages.ts). */
async function run(m: ToWorker, signal: AbortSignal): Promise<Ops[Op]["result"]> {
  switch (m.op) {
    case "load": return load(m, signal);
    case "chat": return chat(m);
    case "prompt": return task_prompt(m.kind, m.phrase ?? undefined, m.bbox ? new Float32Array(m.bbox) : undefined, m.lang ?? undefined);
    case "parse": return JSON.parse(parse_answer(m.text, m.width, m.height)) as Span[];
    case "interrupt": engine?.interrupt(); return;
    case "abort": aborts.get(m.target)?.abort(); return;
    case "unload": engine?.free(); engine = undefined; return;
    case "cache.list":
      cache ??= await Cache.open();
      return (await cache.list()).map((r) => ({ key: r.key, url: r.url, bytes: r.bytes, complete: r.done.every(Boolean), added: r.added }));
    case "cache.delete": cache ??= await Cache.open(); await cache.delete(m.key); return;
    case "cache.usage": return navigator.storage?.estimate?.();
    case "memory": {
      const m = engine ? (JSON.parse(engine.memory()) as { buffers: number; bytes: number; bind_groups: number }) : { buffers: 0, bytes: 0, bind_groups: 0 };
      return { gpuBuffers: m.buffers, gpuBytes: m.bytes, bindGroups: m.bind_groups, wasmBytes: heap() };
    }
    case "test.refuseAllocation": {
      const hook = (engine as unknown as { refuse_allocation_for_test?: (n: number) => void } | undefined)?.refuse_allocation_for_test;
      if (!hook) throw new Fail("EngineError", "this build of the engine has no test hooks");
      hook.call(engine, m.nth);
      return;
    }
    case "test.loseDevice": {
      const hook = (engine as unknown as { lose_device_for_test?: () => void } | undefined)?.lose_device_for_test;
      if (!hook) throw new Fail("EngineError", "this build of the engine has no test hooks");
      hook.call(engine);
      return;
    }
  }
}

async function handle(m: ToWorker) {
  const ac = new AbortController();
  aborts.set(m.id, ac);
  try {
    post({ id: m.id, kind: "result", value: await run(m, ac.signal) });
  } catch (e) {
    // Fail: ours; an Error named after one of the package's classes: from the wasm engine
    const name = (e as Error)?.name;
    const kind = e instanceof Fail ? e.kind : /^(GPUMemory|GPUDeviceLost|NoWebGPU|ModelFormat|Quota)Error$/.test(name) ? name : "EngineError";
    post({ id: m.id, kind: "error", name: kind, message: String((e as Error)?.message ?? e) });
  } finally {
    aborts.delete(m.id);
  }
}

self.onmessage = (ev: MessageEvent<ToWorker>) => void handle(ev.data);
