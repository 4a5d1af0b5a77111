// The npm package in headless Chromium (WebGPU on SwiftShader), with a local server acting as the CDN:
// a converted tiny model (every matrix in f16, so that the browser's f32 path must give transformers'
// answer) is downloaded into IndexedDB by the worker, uploaded to the GPU, and answers.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "./server.mjs";

const web = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const repo = path.resolve(web, "..");
const fixtures = path.join(process.env.VARCO_FIXTURES ?? path.join(repo, "..", "shared", "fixtures"), "tiny-varco-a");
const bin = [process.env.VARCO_BIN, path.join(repo, "target/release/varco"), path.join(repo, "target/debug/varco")].find((p) => p && fs.existsSync(p));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "varco-web-test-"));
const modelDir = path.join(tmp, "model");
const kase = JSON.parse(fs.readFileSync(path.join(fixtures, "cases/text_only_ko/case.json"), "utf8"));
let srv;

before(async () => {
  assert.ok(bin, "the varco binary (cargo build --bin varco) is needed to convert the test model");
  execFileSync(bin, ["convert", "--input", path.join(fixtures, "model-hf"), "--output", modelDir,
    "--llm", "f16", "--embed", "f16", "--lm-head", "f16", "--vision", "f16", "--shard-bytes", String(4 << 20)], { stdio: "inherit" });
  srv = await serve({ webDir: web, modelDir });
});

after(() => {
  srv?.server.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function browser(profile = fs.mkdtempSync(path.join(tmp, "profile-"))) {
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--enable-unsafe-webgpu", "--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking", "--disable-quic"],
  });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  page.on("console", (m) => m.type() === "error" && console.error("page:", m.text()));
  await page.goto(srv.url + "/");
  await page.waitForFunction(() => window.ready === true);
  return { ctx, page, profile };
}

const shardRequests = (from = 0) => srv.state.log.slice(from).filter((r) => r.path.startsWith("/model/shard-"));

test("loads into IndexedDB and the GPU, answers as transformers, then makes no request", async () => {
  srv.state.faults = { drop: new Map(), flip: new Set(), offline: false };
  const { ctx, page } = await browser();
  try {
    const start = srv.state.log.length;
    const r = await page.evaluate(async (messages) => {
      const phases = new Set();
      const e = await varco.createEngine({ manifestUrl: "/model/manifest.json", onProgress: (p) => phases.add(p.phase) });
      window.engine = e;
      const c = await e.chat.completions.create({ messages, max_tokens: 16 });
      return { c, phases: [...phases], cached: await e.cache.list() };
    }, kase.conversation);
    assert.equal(r.c.choices[0].message.content, kase.generated_text);
    assert.equal(r.c.usage.completion_tokens, kase.generated_ids.length);
    assert.deepEqual(r.phases.sort(), ["download", "gpu"]);
    assert.equal(r.cached.length, 1);
    assert.ok(r.cached[0].complete);
    const manifest = JSON.parse(fs.readFileSync(path.join(modelDir, "manifest.json"), "utf8"));
    assert.equal(new Set(shardRequests(start).map((x) => x.path)).size, manifest.shards.length, "every shard downloaded");
    // a second, streamed answer: the same text in pieces, and no network at all
    const before = srv.state.log.length;
    const pieces = await page.evaluate(async (messages) => {
      const out = [];
      for await (const chunk of await engine.chat.completions.create({ messages, max_tokens: 16, stream: true })) {
        if (chunk.choices[0].delta.content) out.push(chunk.choices[0].delta.content);
      }
      return out;
    }, kase.conversation);
    assert.ok(pieces.length > 1);
    assert.equal(pieces.join(""), kase.generated_text);
    assert.deepEqual(srv.state.log.slice(before), [], "no request after the model is loaded");
  } finally {
    await ctx.close();
  }
});

test("a connection dropped mid-shard resumes with a Range request; a corrupt shard is refused", async () => {
  srv.state.faults = { drop: new Map([["shard-00001.bin", 2_600_000]]), flip: new Set(), offline: false };
  let { ctx, page } = await browser();
  try {
    const start = srv.state.log.length;
    const text = await page.evaluate(async (messages) => {
      const e = await varco.createEngine({ manifestUrl: "/model/manifest.json" });
      return (await e.chat.completions.create({ messages, max_tokens: 4 })).choices[0].message.content;
    }, kase.conversation);
    assert.ok(text.length > 0);
    const resumed = shardRequests(start).filter((r) => r.path === "/model/shard-00001.bin");
    assert.equal(resumed.length, 2, "shard 1 fetched twice: the drop, then the rest");
    // the whole 1 MiB records stored before the drop are kept: the rest is asked for from the first byte
    // not stored (a multiple of 1 MiB, above 0, at most where the connection broke)
    const from = Number(/^bytes=(\d+)-$/.exec(resumed[1].range ?? "")?.[1]);
    assert.ok(from > 0 && from % (1 << 20) === 0 && from <= 2_600_000, `resumed, not restarted: ${resumed[1].range}`);
  } finally {
    await ctx.close();
  }
  srv.state.faults = { drop: new Map(), flip: new Set(["shard-00002.bin"]), offline: false };
  ({ ctx, page } = await browser());
  try {
    const err = await page.evaluate(async () => {
      try {
        await varco.createEngine({ manifestUrl: "/model/manifest.json" });
        return null;
      } catch (e) {
        return { name: e.name, message: e.message, typed: e instanceof varco.IntegrityError };
      }
    });
    assert.ok(err, "the corrupt model loaded");
    assert.equal(err.name, "IntegrityError");
    assert.ok(err.typed);
    assert.match(err.message, /shard-00002\.bin/);
  } finally {
    await ctx.close();
  }
});

test("with the CDN offline after the first load, a reload answers from IndexedDB; the page stays responsive", async () => {
  srv.state.faults = { drop: new Map(), flip: new Set(), offline: false };
  const first = await browser();
  const profile = first.profile;
  await first.page.evaluate(async () => { await varco.createEngine({ manifestUrl: "/model/manifest.json" }); });
  await first.ctx.close();
  const { ctx, page } = await browser(profile);
  try {
    srv.state.faults.offline = true;
    const before = srv.state.log.length;
    const r = await page.evaluate(async (messages) => {
      const e = await varco.createEngine({ manifestUrl: "/model/manifest.json" });
      // the main thread's timer keeps firing while the worker generates
      let last = performance.now();
      let worst = 0;
      const t = setInterval(() => { const now = performance.now(); worst = Math.max(worst, now - last); last = now; }, 10);
      const c = await e.chat.completions.create({ messages, max_tokens: 16 });
      clearInterval(t);
      return { text: c.choices[0].message.content, worst };
    }, kase.conversation);
    assert.equal(r.text, kase.generated_text);
    assert.ok(r.worst < 250, `the main thread stalled for ${r.worst} ms`);
    const reqs = srv.state.log.slice(before).filter((x) => x.path.startsWith("/model/"));
    // the manifest is asked for (to see a newer version; Chromium retries a dropped connection) and fails;
    // no shard and no tokenizer is asked for
    assert.ok(reqs.length >= 1 && reqs.every((x) => x.path === "/model/manifest.json"), JSON.stringify(reqs));
  } finally {
    srv.state.faults.offline = false;
    await ctx.close();
  }
});

