//! The browser API (wasm-bindgen), called by the npm package's Web Worker (`web/`). Narrow on purpose: the
//! worker owns downloading, IndexedDB and messaging; this owns the GPU. A model is loaded by
//! [`Engine::create`] (manifest → every buffer allocated, after checking the adapter's limits), then
//! [`Engine::write`] with pieces of shards as they are read from IndexedDB (straight into GPU buffers: the
//! wasm heap holds one piece at a time), then [`Engine::finish`] with the tokenizer.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use wasm_bindgen::prelude::*;

use crate::answer;
use crate::chat::{ChatTemplate, Message, Part, PromptIds};
use crate::generate::{generate_async, GenerateOptions};
use crate::gpu::{Context, ContextOptions, DType};
use crate::kernels::sample::Sampling;
use crate::loader::manifest::Manifest;
use crate::loader::stream::Upload;
use crate::model::Model;
use crate::tokenizer::Tokenizer;

fn js_err(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

/// An error with the name of the npm package's error class it becomes.
fn named(name: &str, e: impl std::fmt::Display) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    err.set_name(name);
    err.into()
}

/// A crate error as the npm package's class: limits and allocation → GPUMemoryError, a bad manifest →
/// ModelFormatError, no adapter → NoWebGPUError.
fn classify(e: crate::Error) -> JsValue {
    use crate::Error as E;
    let name = match &e {
        E::TooLarge { .. } => "GPUMemoryError",
        E::NoAdapter(_) | E::Device(_) => "NoWebGPUError",
        E::Checkpoint(_) => "ModelFormatError",
        _ => "EngineError",
    };
    named(name, e)
}

fn capabilities_json(c: &Context, manifest: &Manifest) -> String {
    // the manifest's figures are for f16 activations and KV cache; without shader-f16 they are f32
    let mut memory = manifest.memory.clone();
    if !c.caps.f16 {
        memory.kv_per_token *= 2;
        memory.activations *= 2;
        memory.total = memory.weights + memory.kv_per_token * memory.context as u64 + memory.activations;
    }
    serde_json::json!({
        "adapter": c.describe(),
        "shader_f16": c.caps.f16,
        "subgroups": c.caps.subgroups,
        "max_binding": c.caps.max_binding,
        "model_memory": memory,
    })
    .to_string()
}

struct Ready {
    model: Model,
    tok: Tokenizer,
    template: ChatTemplate,
}

struct Inner {
    ctx: Context,
    manifest: Manifest,
    upload: RefCell<Option<Upload>>,
    ready: RefCell<Option<Ready>>,
    interrupt: Cell<bool>,
    busy: Cell<bool>,
}

/// One model on the GPU.
#[wasm_bindgen]
pub struct Engine {
    inner: Rc<Inner>,
}

/// A generation request (JSON from the worker).
#[derive(serde::Deserialize)]
struct Request {
    messages: Vec<Message>,
    #[serde(default)]
    max_new_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    repetition_penalty: Option<f32>,
}

#[wasm_bindgen]
impl Engine {
    /// Before downloading: parses the manifest, opens the GPU and refuses a model the adapter cannot hold
    /// (a tensor or working buffer above its per-buffer limit). Resolves to the capabilities JSON.
    pub async fn check(manifest_json: Vec<u8>) -> Result<String, JsValue> {
        let manifest = Manifest::parse(&manifest_json).map_err(classify)?;
        let ctx = Context::new(ContextOptions::default()).await.map_err(classify)?;
        manifest.check_limits(ctx.caps.max_binding, if ctx.caps.f16 { 2 } else { 4 }).map_err(classify)?;
        Ok(capabilities_json(&ctx, &manifest))
    }

    /// Parses the manifest, opens the GPU, checks the model against the adapter's limits, and allocates every
    /// tensor's buffers (an allocation the GPU refuses for lack of memory is a GPUMemoryError).
    pub async fn create(manifest_json: Vec<u8>) -> Result<Engine, JsValue> {
        let manifest = Manifest::parse(&manifest_json).map_err(classify)?;
        let ctx = Context::new(ContextOptions::default()).await.map_err(classify)?;
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let upload = Upload::new(&ctx, &manifest).map_err(classify);
        if let Some(e) = scope.pop().await {
            let gb = manifest.memory.weights as f64 / 1e9;
            return Err(named("GPUMemoryError", format!("the GPU could not allocate the model's {gb:.2} GB of weights: {e}")));
        }
        let upload = upload?;
        Ok(Engine {
            inner: Rc::new(Inner { ctx, manifest, upload: RefCell::new(Some(upload)), ready: RefCell::new(None), interrupt: Cell::new(false), busy: Cell::new(false) }),
        })
    }

    /// The adapter and what the model needs, as JSON.
    pub fn capabilities(&self) -> String {
        capabilities_json(&self.inner.ctx, &self.inner.manifest)
    }

    /// Writes `bytes` found at `offset` of shard `shard` into the GPU buffers they belong to.
    pub fn write(&self, shard: u32, offset: f64, bytes: &[u8]) -> Result<(), JsValue> {
        let mut up = self.inner.upload.borrow_mut();
        let up = up.as_mut().ok_or_else(|| js_err("the model is already loaded"))?;
        up.write(&self.inner.ctx, shard as usize, offset as u64, bytes).map_err(js_err)
    }

    /// Checks a shard's SHA-256 after it was written whole and in order.
    pub fn verify_shard(&self, shard: u32) -> Result<(), JsValue> {
        let mut up = self.inner.upload.borrow_mut();
        let up = up.as_mut().ok_or_else(|| js_err("the model is already loaded"))?;
        up.verify_shard(shard as usize).map_err(js_err)
    }

    /// Completes loading: every byte must have been written; `tokenizer_json` is the manifest's tokenizer.
    pub fn finish(&self, tokenizer_json: &[u8]) -> Result<(), JsValue> {
        let i = &self.inner;
        let up = i.upload.borrow_mut().take().ok_or_else(|| js_err("the model is already loaded"))?;
        let mut tensors = up.finish(&i.ctx).map_err(js_err)?;
        let act = if i.ctx.caps.f16 { DType::F16 } else { DType::F32 };
        let model = Model::new(&i.ctx, &i.manifest.config, act, &mut tensors).map_err(js_err)?;
        let tok = Tokenizer::from_bytes(tokenizer_json).map_err(js_err)?;
        *i.ready.borrow_mut() = Some(Ready { model, tok, template: ChatTemplate::new(&i.manifest.chat_template) });
        Ok(())
    }

    /// Answers a conversation (request JSON: `messages` with `text` and `image` parts, sampling options).
    /// `image`: the encoded file (JPEG, PNG, WebP, GIF, BMP) for the conversation's image part, decoded here
    /// exactly as natively (EXIF, alpha over white). `on_text` gets each new piece of text. Resolves to a
    /// JSON result: text, ids, stop, token counts and the parsed spans with boxes.
    pub fn generate(&self, request_json: String, image: Option<Vec<u8>>, on_text: js_sys::Function) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            if inner.busy.replace(true) {
                return Err(js_err("a generation is already running"));
            }
            inner.interrupt.set(false);
            // the KV cache and the activations are allocated per request: a GPU out of memory is caught here
            let scope = inner.ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let out = run(&inner, &request_json, image.as_deref(), &on_text).await;
            let oom = scope.pop().await;
            inner.busy.set(false);
            if let Some(e) = oom {
                return Err(named("GPUMemoryError", format!("the GPU ran out of memory for this request (a shorter conversation or a smaller image needs less): {e}")));
            }
            out.map(JsValue::from)
        })
    }

    /// Stops the running generation after the current token.
    pub fn interrupt(&self) {
        self.inner.interrupt.set(true);
    }
}

/// A request's failure: a buffer above the adapter's limits is a GPUMemoryError, anything else (a prompt longer
/// than the context, a bad image) an EngineError.
fn request_err(e: crate::Error) -> JsValue {
    match e {
        crate::Error::TooLarge { .. } => named("GPUMemoryError", e),
        e => named("EngineError", e),
    }
}

async fn run(inner: &Inner, request_json: &str, image: Option<&[u8]>, on_text: &js_sys::Function) -> Result<String, JsValue> {
    let ready = inner.ready.borrow();
    let r = ready.as_ref().ok_or_else(|| js_err("the model is not loaded yet"))?;
    let req: Request = serde_json::from_str(request_json).map_err(|e| js_err(format!("request: {e}")))?;
    let has_image = req.messages.iter().flat_map(|m| &m.content).any(|p| matches!(p, Part::Image));
    let (rgb, feats) = match (has_image, image) {
        (true, Some(bytes)) => {
            let img = crate::image::decode(bytes, Default::default()).map_err(js_err)?;
            let (plan, f) = r.model.encode_image(&inner.ctx, &img).map_err(request_err)?;
            (Some((img.dimensions(), plan.n_tokens)), Some(f))
        }
        (false, None) => (None, None),
        (true, None) => return Err(js_err("the conversation has an image part but no image was given")),
        (false, Some(_)) => return Err(js_err("an image was given but no message has an image part")),
    };
    let prompt = r.template.render(&req.messages, true).map_err(js_err)?;
    let ids = PromptIds::new(&r.tok, &prompt).map_err(js_err)?;
    let g = &inner.manifest.generation;
    let opts = GenerateOptions {
        max_new_tokens: req.max_new_tokens.unwrap_or(g.max_new_tokens),
        sampling: Sampling { temperature: req.temperature.unwrap_or(g.temperature), top_k: req.top_k.unwrap_or(g.top_k), top_p: req.top_p.unwrap_or(g.top_p) },
        seed: req.seed.unwrap_or(0),
        repetition_penalty: req.repetition_penalty.unwrap_or(g.repetition_penalty),
    };
    let gen = generate_async(
        &inner.ctx,
        &r.model,
        &r.tok,
        &ids.llava_next,
        feats.as_ref(),
        &opts,
        |piece| {
            let _ = on_text.call1(&JsValue::NULL, &JsValue::from_str(piece));
        },
        || inner.interrupt.get(),
    )
    .await
    .map_err(request_err)?;
    let spans = answer::parse(&gen.text, rgb.map(|(wh, _)| wh));
    Ok(serde_json::json!({
        "text": gen.text,
        "ids": gen.ids,
        "stop": gen.stop,
        "prompt_tokens": gen.prompt_tokens,
        "image_tokens": rgb.map(|(_, n)| n),
        "spans": spans,
    })
    .to_string())
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
        Some(l) => return Err(js_err(format!("language {l:?}: the prompts are in en or ko"))),
    };
    let phrase = phrase.filter(|p| !p.trim().is_empty());
    Ok(match kind {
        "ocr" => prompts::ocr(),
        "describe" if ko => prompts::ko::describe(),
        "describe" => prompts::describe(),
        "ground" if ko => prompts::ko::ground(phrase.as_deref()),
        "ground" => prompts::ground(phrase.as_deref()),
        "refer" => {
            let b = bbox.filter(|b| b.len() == 4 && b.iter().all(|v| (0.0..=1.0).contains(v))).ok_or_else(|| js_err("refer needs a box of four numbers in 0..1"))?;
            let q = phrase.unwrap_or_default();
            if ko {
                prompts::refer(prompts::ko::REFER_LABEL, [b[0], b[1], b[2], b[3]], q.trim())
            } else {
                prompts::refer("this", [b[0], b[1], b[2], b[3]], &format!(" {}", q.trim()))
            }
        }
        _ => return Err(js_err(format!("unknown task {kind:?}"))),
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
