//! The browser API (wasm-bindgen), called by the npm package's Web Worker (`web/`). Narrow on purpose: the
//! worker owns downloading, IndexedDB and messaging; this owns the GPU. A model is loaded by
//! [`Engine::create`] (manifest → every buffer allocated, after checking the adapter's limits), then
//! [`Engine::write`] with pieces of shards as they are read from IndexedDB (straight into GPU buffers: the
//! wasm heap holds one piece at a time), then [`Engine::finish`] with the tokenizer, which makes the
//! [`Session`] that answers every request. Every error crosses as a JS error named after the package's
//! class ([`Error::class`]).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use wasm_bindgen::prelude::*;

use crate::gpu::{Context, ContextOptions};
use crate::loader::manifest::Manifest;
use crate::loader::stream::{Converted, Upload};
use crate::session::{Request, Session};
use crate::Error;

/// A crate error as a JS error named after the npm package's class ([`Error::class`]).
fn js_err(e: Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    err.set_name(e.class());
    err.into()
}

/// A misuse of the engine by its caller (the worker), as an EngineError.
fn misuse(msg: &str) -> JsValue {
    js_err(Error::request(msg))
}

/// The context a session will hold: the manifest's, or fewer tokens where the page asks (`maxContext`).
fn context_of(manifest: &Manifest, max_context: Option<u32>) -> usize {
    max_context.map_or(manifest.memory.context, |c| (c as usize).clamp(1, manifest.config.text.max_positions))
}

fn capabilities_json(c: &Context, manifest: &Manifest, context: usize) -> String {
    // the manifest's figures are for f16 activations and KV cache, at its own context; without shader-f16
    // they are f32, and the KV cache is for the context asked for
    let mut memory = manifest.memory.clone();
    if !c.caps.f16 {
        memory.kv_per_token *= 2;
        memory.activations *= 2;
    }
    memory.context = context;
    memory.total = memory.weights + memory.kv_per_token * memory.context as u64 + memory.activations;
    serde_json::json!({
        "adapter": c.describe(),
        "shader_f16": c.caps.f16,
        "subgroups": c.caps.subgroups,
        // the variants the kernels run, and why (activations follow shader-f16: crate::model::activation)
        "kernels": {
            "reductions": if c.caps.subgroups { "subgroups" } else { "workgroup memory" },
            "reductions_why": c.caps.subgroups_why,
            "activations": if c.caps.f16 { "f16" } else { "f32" },
            "activations_why": c.caps.f16_why,
            "decode_products": if c.int_dot_decode { "8-bit integer dot products" } else { "f32 products" },
            "decode_products_why": c.int_dot_why,
        },
        "max_binding": c.caps.max_binding,
        "model_memory": memory,
    })
    .to_string()
}

struct Inner {
    ctx: Context,
    manifest: Manifest,
    /// The session's context (the manifest's, or the page's `maxContext`).
    context: usize,
    upload: RefCell<Option<Upload>>,
    session: RefCell<Option<Session>>,
    interrupt: Cell<bool>,
}

/// One model on the GPU.
#[wasm_bindgen]
pub struct Engine {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl Engine {
    /// Before downloading: parses the manifest, opens the GPU and refuses a model the adapter cannot hold
    /// (a tensor or working buffer above its per-buffer limit). Resolves to the capabilities JSON.
    /// `max_context`: fewer tokens of context than the manifest's (less GPU memory for the KV cache).
    pub async fn check(manifest_json: Vec<u8>, max_context: Option<u32>) -> Result<String, JsValue> {
        let mut manifest = Manifest::parse(&manifest_json).map_err(js_err)?;
        let ctx = Context::new(ContextOptions::default()).await.map_err(js_err)?;
        let act = crate::model::activation(&ctx, None).map_err(js_err)?;
        let context = context_of(&manifest, max_context);
        manifest.memory.context = context;
        manifest.check_limits(ctx.caps.max_binding, act.size()).map_err(js_err)?;
        Ok(capabilities_json(&ctx, &manifest, context))
    }

    /// Parses the manifest, opens the GPU, checks the model against the adapter's limits, and allocates every
    /// tensor's buffers (an allocation the GPU refuses for lack of memory is a GPUMemoryError).
    pub async fn create(manifest_json: Vec<u8>, max_context: Option<u32>) -> Result<Engine, JsValue> {
        let manifest = Manifest::parse(&manifest_json).map_err(js_err)?;
        let ctx = Context::new(ContextOptions::default()).await.map_err(js_err)?;
        let weights = manifest.memory.weights;
        let upload = ctx.out_of_memory_scope("the model's weights", weights, async { Upload::new(&ctx, &manifest) }).await.map_err(js_err)?;
        Ok(Engine {
            inner: Rc::new(Inner { ctx, context: context_of(&manifest, max_context), manifest, upload: RefCell::new(Some(upload)), session: RefCell::new(None), interrupt: Cell::new(false) }),
        })
    }

    /// The adapter and what the model needs, as JSON.
    pub fn capabilities(&self) -> String {
        capabilities_json(&self.inner.ctx, &self.inner.manifest, self.inner.context)
    }

    /// Writes `bytes` found at `offset` of shard `shard` into the GPU buffers they belong to.
    pub fn write(&self, shard: u32, offset: f64, bytes: &[u8]) -> Result<(), JsValue> {
        let mut up = self.inner.upload.borrow_mut();
        let up = up.as_mut().ok_or_else(|| misuse("the model is already loaded"))?;
        up.write(&self.inner.ctx, shard as usize, offset as u64, bytes).map_err(js_err)
    }

    /// Checks a shard's SHA-256 after it was written whole and in order.
    pub fn verify_shard(&self, shard: u32) -> Result<(), JsValue> {
        let mut up = self.inner.upload.borrow_mut();
        let up = up.as_mut().ok_or_else(|| misuse("the model is already loaded"))?;
        up.verify_shard(shard as usize).map_err(js_err)
    }

    /// Completes loading: every byte must have been written; `tokenizer_json` is the manifest's tokenizer.
    /// The session's KV cache holds the context given at `create`.
    pub async fn finish(&self, tokenizer_json: Vec<u8>) -> Result<(), JsValue> {
        let i = &self.inner;
        let up = i.upload.borrow_mut().take().ok_or_else(|| misuse("the model is already loaded"))?;
        let mut tensors = up.finish(&i.ctx).map_err(js_err)?;
        let converted = Converted::new(&i.ctx, &i.manifest, &mut tensors, &tokenizer_json, None).map_err(js_err)?;
        let session = converted.session(&i.ctx, Some(i.context)).await.map_err(js_err)?;
        *i.session.borrow_mut() = Some(session);
        Ok(())
    }

    /// Answers a conversation (request JSON: `messages` with `text` and `image` parts, generation settings,
    /// `cache_prompt`). `image`: the encoded file (JPEG, PNG, WebP, GIF, BMP) for the conversation's image
    /// part, decoded here exactly as natively (EXIF, alpha over white). `on_text` gets each new piece of
    /// text. Resolves to the answer as JSON (the session's `Answer`, as `varco run --json` prints it).
    pub fn generate(&self, request_json: String, image: Option<Vec<u8>>, on_text: js_sys::Function) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            // one request at a time: a second one while the first runs is refused, not queued
            let Ok(mut session) = inner.session.try_borrow_mut() else {
                return Err(misuse("a generation is already running"));
            };
            let session = session.as_mut().ok_or_else(|| misuse("the model is not loaded yet"))?;
            inner.interrupt.set(false);
            let image = image.map(|b| crate::image::decode(&b, Default::default())).transpose().map_err(js_err)?;
            let req = Request::from_json(&request_json, image).map_err(js_err)?;
            let answer = session
                .answer(
                    &inner.ctx,
                    &req,
                    &mut |piece| {
                        let _ = on_text.call1(&JsValue::NULL, &JsValue::from_str(piece));
                    },
                    &|| inner.interrupt.get(),
                )
                .await
                .map_err(js_err)?;
            Ok(JsValue::from(serde_json::to_string(&answer).map_err(|e| misuse(&e.to_string()))?))
        })
    }

    /// Stops the running generation after the current token (or prefill chunk).
    pub fn interrupt(&self) {
        self.inner.interrupt.set(true);
    }

    /// Calls `callback` when the GPU device is lost (a driver reset, the browser moving to another GPU): the
    /// engine is unusable from then on; the worker makes a new one from the cache.
    pub fn on_device_lost(&self, callback: js_sys::Function) {
        crate::gpu::on_device_lost(move || {
            let _ = callback.call0(&JsValue::NULL);
        });
    }

    /// Why this engine's device was lost, if it was.
    pub fn lost(&self) -> Option<String> {
        self.inner.ctx.lost()
    }

    /// Test builds only (feature `test-hooks`): loses the device as a driver reset would.
    #[cfg(feature = "test-hooks")]
    pub fn lose_device_for_test(&self) {
        self.inner.ctx.device.destroy();
    }

    /// Test builds only: the `nth` buffer the engine creates from now on is refused by the device, inside the
    /// error scope that a real out-of-memory refusal meets.
    #[cfg(feature = "test-hooks")]
    pub fn refuse_allocation_for_test(&self, nth: u32) {
        self.inner.ctx.refuse_allocation(nth as u64);
    }

    /// What the engine holds on the GPU now (JSON: `buffers`, `bytes`, `bind_groups`): the same after every
    /// request once the first has run.
    pub fn memory(&self) -> String {
        let l = self.inner.ctx.live.counts();
        serde_json::json!({ "buffers": l.buffers, "bytes": l.bytes, "bind_groups": l.bind_groups }).to_string()
    }
}

/// The text of a task prompt: `ocr`, `ground` (optional phrase), `refer` (box x1,y1,x2,y2 in 0..1 and a
/// question), `describe` — the model's own conventions (answer::prompts), in English or, with `lang` "ko",
/// Korean.
#[wasm_bindgen]
pub fn task_prompt(kind: &str, phrase: Option<String>, bbox: Option<Vec<f32>>, lang: Option<String>) -> Result<String, JsValue> {
    use crate::answer::prompts;
    let ko = match lang.as_deref() {
        None | Some("en") => false,
        Some("ko") => true,
        Some(l) => return Err(misuse(&format!("language {l:?}: the prompts are in en or ko"))),
    };
    let phrase = phrase.filter(|p| !p.trim().is_empty());
    Ok(match kind {
        "ocr" => prompts::ocr(),
        "describe" if ko => prompts::ko::describe(),
        "describe" => prompts::describe(),
        "ground" if ko => prompts::ko::ground(phrase.as_deref()),
        "ground" => prompts::ground(phrase.as_deref()),
        "refer" => {
            let b = bbox.filter(|b| b.len() == 4 && b.iter().all(|v| (0.0..=1.0).contains(v))).ok_or_else(|| misuse("refer needs a box of four numbers in 0..1"))?;
            let q = phrase.unwrap_or_default();
            if ko {
                prompts::refer(prompts::ko::REFER_LABEL, [b[0], b[1], b[2], b[3]], q.trim())
            } else {
                prompts::refer("this", [b[0], b[1], b[2], b[3]], &format!(" {}", q.trim()))
            }
        }
        _ => return Err(misuse(&format!("unknown task {kind:?}"))),
    })
}

/// The spans and boxes of an answer's text (as `generate` returns them), for results saved earlier;
/// `width`, `height`: the image's, for pixel coordinates (0: none).
#[wasm_bindgen]
pub fn parse_answer(text: &str, width: u32, height: u32) -> String {
    let wh = (width > 0 && height > 0).then_some((width, height));
    serde_json::to_string(&crate::answer::parse(text, wh)).unwrap_or_else(|_| "[]".into())
}

/// SHA-256 fed in pieces: the worker checks a stored shard a record at a time (WebCrypto has no streaming
/// digest, and the shard should not be assembled whole).
#[wasm_bindgen]
pub struct Sha256(sha2::Sha256);

#[wasm_bindgen]
impl Sha256 {
    #[wasm_bindgen(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Sha256 {
        use sha2::Digest;
        Sha256(sha2::Sha256::new())
    }

    pub fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        self.0.update(bytes);
    }

    /// The digest so far, lowercase hex.
    pub fn hex(&self) -> String {
        use sha2::Digest;
        crate::loader::stream::hex(&self.0.clone().finalize())
    }
}

/// `varco bench model` on this browser's WebGPU (feature `bench`; never in the npm package): random weights
/// of `shape` built on the GPU, the session speaking with a converted model's tokenizer and template
/// (`manifest_json`, `tokenizer_json`). `options_json` holds the CLI's options by their camelCase names, all
/// given (scripts/bench-wasm.mjs passes the same ones to both). Resolves to `{markdown, figures}` as JSON.
#[cfg(feature = "bench")]
#[wasm_bindgen(js_name = benchModel)]
pub async fn bench_model(options_json: String, manifest_json: Vec<u8>, tokenizer_json: Vec<u8>) -> Result<String, JsValue> {
    use crate::bench::model::{run_model, ModelBenchOptions, Text};
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Options {
        shape: String,
        contexts: Vec<usize>,
        steps: usize,
        prompt: usize,
        tiles: Vec<usize>,
        runs: usize,
        act: Option<String>,
        no_subgroups: bool,
        decode_only: bool,
        #[serde(default)]
        decode_shapes: Option<String>,
        #[serde(default)]
        no_int_dot: bool,
    }
    let o: Options = serde_json::from_str(&options_json).map_err(|e| misuse(&format!("benchModel options: {e}")))?;
    let act = o.act.as_deref().map(crate::gpu::DType::parse_act).transpose().map_err(|e| misuse(&e.to_string()))?;
    let ctx = Context::new(ContextOptions { allow_subgroups: !o.no_subgroups, int_dot_decode: !o.no_int_dot, ..Default::default() }).await.map_err(js_err)?;
    let text = Text::from_bytes(&manifest_json, &tokenizer_json).map_err(js_err)?;
    let opts = ModelBenchOptions {
        shape: o.shape,
        contexts: o.contexts,
        steps: o.steps,
        prompt: o.prompt,
        tiles: o.tiles,
        plan: crate::loader::plan::QuantPlan::DEFAULT,
        runs: o.runs,
        act,
        decode_only: o.decode_only,
        decode_shapes: o.decode_shapes,
        prefill_chunk: None,
    };
    let report = run_model(&ctx, &opts, text).await.map_err(js_err)?;
    serde_json::to_string(&report).map_err(|e| misuse(&e.to_string()))
}
