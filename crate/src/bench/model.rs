//! `varco bench model`: the whole model with VARCO-VISION-14B's shapes and random weights in the converter's
//! default formats, built directly on the GPU (no file), measured through the same [`Session`] that answers
//! the CLI and the browser: decode tokens/s at several contexts, prefill tokens/s, the vision tower, time to
//! first token for a 1024×768 image and for a follow-up question about it, peak GPU memory, a per-kernel
//! profile of one decode step, and the decode roofline (bytes a step reads ÷ the GPU's measured read
//! bandwidth).
//!
//! Portable: async, with `web_time` clocks and the library's own memory counts, so the same code runs
//! natively (`varco bench model`) and compiled to wasm on a browser's WebGPU (`benchModel`, feature
//! `bench`; `scripts/bench-wasm.mjs` runs it on Dawn under Node). Both return the same [`Figure`]s.

use std::fmt::Write as _;

use serde::Serialize;
use web_time::Instant;

use crate::chat::{ChatTemplate, IMAGE_PLACEHOLDER};
use crate::generate::Settings;
use crate::gpu::tensor::Weight;
use crate::gpu::{Context, DType, Recorder, Tensor};
use crate::image::AnyresConfig;
use crate::kernels::bandwidth;
use crate::loader::manifest::{Generation, Manifest};
use crate::loader::plan::{self, Kind, QuantPlan};
use crate::model::config::{ModelConfig, TextConfig, VisionConfig};
use crate::model::{Loaded, Model, Tensors};
use crate::session::{Answer, Prompt, Request, Session};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// VARCO-VISION-14B (MODEL.md §1), or a small model of the same structure for trying the benchmark on a CPU
/// driver.
pub fn config(shape: &str) -> Result<ModelConfig> {
    let (text, vision) = match shape {
        "14b" => (
            TextConfig {
                hidden: 5120,
                intermediate: 13824,
                layers: 48,
                heads: 40,
                kv_heads: 8,
                head_dim: 128,
                rms_eps: 1e-6,
                rope_theta: 1e6,
                vocab: 151680,
                tie_word_embeddings: false,
                max_positions: 32768,
                eos_token_id: 151645,
            },
            VisionConfig { hidden: 1152, intermediate: 4304, layers: 26, heads: 16, head_dim: 72, image_size: 384, patch_size: 14, ln_eps: 1e-6 },
        ),
        "small" => (
            TextConfig {
                hidden: 256,
                intermediate: 512,
                layers: 2,
                heads: 4,
                kv_heads: 2,
                head_dim: 64,
                rms_eps: 1e-6,
                rope_theta: 1e6,
                // the real vocabulary: the session speaks with the real tokenizer
                vocab: 151680,
                tie_word_embeddings: false,
                max_positions: 32768,
                eos_token_id: 151645,
            },
            VisionConfig { hidden: 144, intermediate: 288, layers: 2, heads: 2, head_dim: 72, image_size: 384, patch_size: 14, ln_eps: 1e-6 },
        ),
        _ => return Err(Error::request(format!("--shape {shape}: expected 14b or small"))),
    };
    Ok(ModelConfig { text, vision, anyres: AnyresConfig::default(), image_token_id: None })
}

/// Every tensor of `cfg` in `plan`'s formats, filled on the GPU with random codes and small scales (norm
/// weights 1): the timing of every kernel is that of real weights.
pub fn random_tensors(ctx: &Context, cfg: &ModelConfig, plan: &QuantPlan) -> Result<Tensors> {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    const BLOCK: usize = 16 << 20;
    let codes: Vec<u8> = (0..BLOCK / 8).flat_map(|_| next().to_le_bytes()).collect();
    // f16 values of magnitude 0.001..0.004 (scales, and f16 weights)
    let small: Vec<u8> = (0..BLOCK / 2).flat_map(|i| half::f16::from_f32((0.001 + (i % 31) as f32 * 1e-4) * if i % 2 == 0 { 1.0 } else { -1.0 }).to_le_bytes()).collect();
    let fill = |buf: &wgpu::Buffer, pattern: &[u8]| {
        let mut off = 0;
        while off < buf.size() {
            let n = (buf.size() - off).min(pattern.len() as u64);
            ctx.queue.write_buffer(buf, off, &pattern[..n as usize]);
            off += n;
        }
        ctx.queue.submit([]);
        let _ = ctx.device.poll(wgpu::PollType::wait_indefinitely());
    };
    let mut out = Tensors::default();
    for spec in plan::specs(cfg, plan, true) {
        let t = match spec.kind {
            Kind::Vector { len } => {
                let norm = ["norm", "ln1_w", "ln2_w"].iter().any(|s| spec.name.ends_with(s));
                let v: Vec<f32> = (0..len).map(|i| if norm { 1.0 } else { 0.01 * ((i % 17) as f32 - 8.0) / 8.0 }).collect();
                Loaded::Vector(Tensor::from_f32(ctx, &v, &[len], DType::F32)?)
            }
            Kind::Matrix { format, n, k } => {
                let (w, _) = Weight::empty(ctx, format, n, k, ctx.caps.max_binding)?;
                for p in &w.parts {
                    fill(&p.data, if format.quant().is_some() { &codes } else { &small });
                    if let Some(s) = &p.scales {
                        fill(s, &small);
                    }
                }
                Loaded::Matrix(w)
            }
        };
        out.insert(spec.name, t);
    }
    Ok(out)
}

pub struct ModelBenchOptions {
    pub shape: String,
    pub contexts: Vec<usize>,
    /// Decode steps timed per context.
    pub steps: usize,
    /// Prompt length for the prefill figure.
    pub prompt: usize,
    /// Tile counts for the vision figure.
    pub tiles: Vec<usize>,
    pub plan: QuantPlan,
    /// Runs of each figure; the median is reported.
    pub runs: usize,
    /// Activations (None: the device's best).
    pub act: Option<DType>,
    /// Decode figures and the decode profile only (for comparing kernel variants).
    pub decode_only: bool,
    /// Replaces some of the fused kernel's decode shapes the model picks (`DecodeShapes::with`'s spec).
    pub decode_shapes: Option<String>,
    /// Tokens a prefill chunk takes (None: the model's default).
    pub prefill_chunk: Option<usize>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `n` token ids (the image placeholder at `image_at`), all different from those of `salt`s other than
/// this one.
fn prompt_ids(n: usize, vocab: usize, image_at: Option<usize>, salt: usize) -> Vec<i64> {
    (0..n).map(|i| if Some(i) == image_at { IMAGE_PLACEHOLDER } else { ((i * 7919 + salt * 104_729) % 150_000.min(vocab)) as i64 }).collect()
}

/// What the session speaks with (the weights are random and of the benchmark's shape): a converted
/// model's tokenizer, chat template and generation defaults.
pub struct Text {
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    pub generation: Generation,
}

impl Text {
    /// From a converted model's `manifest.json` and tokenizer file.
    pub fn from_bytes(manifest: &[u8], tokenizer: &[u8]) -> Result<Text> {
        let m = Manifest::parse(manifest)?;
        Ok(Text { tokenizer: Tokenizer::from_bytes(tokenizer)?, template: ChatTemplate::new(&m.chat_template), generation: m.generation })
    }

    /// From a converted model's directory.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path) -> Result<Text> {
        let read = |f: &str| std::fs::read(dir.join(f)).map_err(|e| Error::request(format!("{}: {e} (--like names a converted model's directory)", dir.join(f).display())));
        let manifest = read(crate::loader::manifest::MANIFEST_FILE)?;
        let m = Manifest::parse(&manifest)?;
        Text::from_bytes(&manifest, &read(&m.tokenizer.file)?)
    }
}

/// One measured figure, for tables that compare runs (native against wasm: `scripts/bench-wasm.mjs`).
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// What was measured, e.g. "decode tokens/s at 1024 context"; the same words on every target.
    pub name: String,
    pub value: f64,
    /// Whether more is better (tokens/s) or worse (seconds, bytes).
    pub higher_is_better: bool,
}

/// A benchmark's results: the Markdown report and its figures.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub markdown: String,
    pub figures: Vec<Figure>,
}

fn figure(figures: &mut Vec<Figure>, name: String, value: f64, higher_is_better: bool) {
    figures.push(Figure { name, value, higher_is_better });
}

async fn ask(ctx: &Context, s: &mut Session, ids: Vec<i64>, image: Option<&image::RgbImage>, max_new_tokens: usize, reuse: bool) -> Result<Answer> {
    let req = Request {
        prompt: Prompt::Ids(ids),
        image: image.cloned(),
        settings: Settings { max_new_tokens: Some(max_new_tokens), ignore_eos: true, ..Settings::default() },
        reuse,
    };
    s.answer(ctx, &req, &mut |_| {}, &|| false).await
}

/// Decode at `context` tokens already in the cache: tokens/s between the first generated token and the
/// last, each read back (generation's own pipelined loop).
async fn decode(ctx: &Context, s: &mut Session, context: usize, steps: usize) -> Result<f64> {
    let vocab = s.model.cfg.text.vocab;
    let filler: Vec<u32> = prompt_ids(context, vocab, None, 0).iter().map(|&i| i as u32).collect();
    s.reset();
    s.assume_prefilled(&filler)?;
    let mut ids: Vec<i64> = filler.iter().map(|&i| i as i64).collect();
    ids.push(1);
    let a = ask(ctx, s, ids, None, steps + 1, true).await?;
    if a.usage.cached_tokens != context || a.generated_ids.len() != steps + 1 {
        return Err(Error::request(format!("decode at {context}: {} cached, {} generated", a.usage.cached_tokens, a.generated_ids.len())));
    }
    Ok(a.timings.decode_tokens_per_s)
}

/// The vision tower and projector on `tiles` tiles (GPU, waited for).
async fn vision(ctx: &Context, m: &Model, tiles: usize) -> Result<f64> {
    let s = m.cfg.vision.image_size;
    let px: Vec<f32> = (0..tiles * 3 * s * s).map(|i| ((i % 255) as f32 / 127.5) - 1.0).collect();
    let pixels = Tensor::from_f32(ctx, &px, &[tiles, 3, s, s], DType::F32)?;
    let t = Instant::now();
    let mut rec = Recorder::new(ctx);
    let hidden = m.vision.forward(&mut rec, &pixels, m.llm.act)?;
    let _ = m.projector.forward(&mut rec, &hidden)?;
    rec.submit()?;
    ctx.sync().await?;
    Ok(t.elapsed().as_secs_f64())
}

/// GB/s of a whole-buffer read (median of 5, GPU timestamps); None without timestamps, or where the device
/// refuses the buffer (a CPU renderer may hold less than 1 GiB).
async fn read_bandwidth(ctx: &Context) -> Result<Option<f64>> {
    let bytes = (1u64 << 30).min(ctx.caps.max_binding).min(ctx.caps.max_buffer) / 16 * 16;
    let made = ctx
        .out_of_memory_scope("the bandwidth probe", bytes, async {
            let src = ctx.create_buffer(&wgpu::BufferDescriptor { label: Some("bandwidth"), size: bytes, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false });
            Ok(src)
        })
        .await;
    let src = match made {
        Ok(src) => src,
        Err(Error::OutOfMemory { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let wgs = 8192;
    let out = Tensor::empty(ctx, &[wgs as usize * 256], DType::U32)?;
    let mut times = Vec::new();
    for _ in 0..6 {
        let mut rec = Recorder::new(ctx);
        bandwidth::read(&mut rec, &src, &out, wgs)?;
        match rec.submit_timed().await? {
            Some(t) if t > 0.0 => times.push(t),
            _ => return Ok(None),
        }
    }
    times.remove(0);
    Ok(Some(bytes as f64 / median(times) / 1e9))
}

/// A per-kernel table of a profile (dispatches grouped by shader); `floors`: bytes a kernel must move (per
/// shader name) and the measured read bandwidth, for each kernel's own floor.
fn profile_table(r: &mut String, what: &str, prof: Option<Vec<(String, f64)>>, floors: &[(&str, u64)], bw: Option<f64>) {
    let Some(prof) = prof else {
        let _ = writeln!(r, "\n{what}: no timestamps for a profile");
        return;
    };
    let total: f64 = prof.iter().map(|p| p.1).sum();
    let mut by: Vec<(String, usize, f64)> = Vec::new();
    for (name, t) in &prof {
        let key = name.split('[').next().unwrap_or("").to_string();
        match by.iter_mut().find(|b| b.0 == key) {
            Some(b) => {
                b.1 += 1;
                b.2 += t;
            }
            None => by.push((key, 1, *t)),
        }
    }
    by.sort_by(|a, b| b.2.total_cmp(&a.2));
    let _ = writeln!(r, "\n{what}: {} dispatches, {:.2} ms of GPU time when timed one by one\n", prof.len(), total * 1e3);
    let _ = writeln!(r, "| kernel | dispatches | µs | share | bytes | floor µs | of floor |\n|---|---:|---:|---:|---:|---:|---:|");
    for (k, n, t) in by {
        let floor = floors.iter().find(|f| f.0 == k).map(|f| f.1);
        let (bytes, fl, frac) = match (floor, bw) {
            (Some(b), Some(bw)) => {
                let f = b as f64 / (bw * 1e9);
                (format!("{:.1} MB", b as f64 / 1e6), format!("{:.0}", f * 1e6), format!("{:.0} %", 100.0 * f / t))
            }
            _ => ("".into(), "".into(), "".into()),
        };
        let _ = writeln!(r, "| {k} | {n} | {:.0} | {:.1} % | {bytes} | {fl} | {frac} |", t * 1e6, 100.0 * t / total);
    }
}

/// What a decode step's bandwidth-bound kernels must read at `context`: every matrix the fused kernel
/// streams (the layers' and lm_head), and the KV cache the attention reads.
fn step_floors(m: &Model, context: usize) -> Vec<(&'static str, u64)> {
    let c = &m.cfg.text;
    let kv = (c.layers * 2 * c.kv_heads * context * c.head_dim * m.llm.act.size()) as u64;
    vec![("matvec_fused", m.llm.decode_read_bytes(context) - kv), ("attention_decode", kv)]
}

/// How decode attention splits its keys at each measured context (`--decode-block`, `--decode-workgroups`).
fn decode_attention_label(ctx: &Context, act: DType, c: &TextConfig, contexts: &[usize]) -> Result<String> {
    use crate::kernels::attention;
    let (block, wgs) = attention::decode_tuning(ctx, act, c.head_dim as u32, crate::gpu::DecodeTuning::default())?;
    let splits: Vec<String> = contexts.iter().map(|&n| format!("{} at {n}", attention::decode_split(n as u32, c.kv_heads as u32, block, wgs).1)).collect();
    Ok(format!("{block}-key blocks, splits for {wgs} workgroups (splits a KV head: {})", splits.join(", ")))
}

/// The library's own count of the bytes its buffers held at once (the same on every target).
fn peak_memory(ctx: &Context, r: &mut String, f: &mut Vec<Figure>) {
    let peak = ctx.live.peak_bytes.load(std::sync::atomic::Ordering::Relaxed) as f64;
    let _ = writeln!(r, "\npeak GPU memory (the engine's buffers at once): {:.2} GB", peak / 1e9);
    figure(f, "peak GPU memory bytes".into(), peak, false);
}

/// Runs everything; the report and its figures.
pub async fn run_model(ctx: &Context, o: &ModelBenchOptions, text: Text) -> Result<Report> {
    let mut f = Vec::new();
    let cfg = config(&o.shape)?;
    let runs = o.runs.max(1);
    let mut r = String::new();
    let t = Instant::now();
    let mut tensors = random_tensors(ctx, &cfg, &o.plan)?;
    let act = crate::model::activation(ctx, o.act)?;
    let m = Model::new(ctx, &cfg, act, &mut tensors)?;
    let Text { tokenizer: tok, template, generation } = text;
    let built = t.elapsed().as_secs_f64();
    let context = (o.contexts.iter().max().copied().unwrap_or(1024) + o.steps + 2).max(o.prompt + 2).max(8192).min(cfg.text.max_positions);
    let mut s = Session::new(ctx, m, tok, template, generation, context).await?;
    if let Some(spec) = &o.decode_shapes {
        s.model.llm.decode_shapes = s.model.llm.decode_shapes.with(spec, true)?;
    }
    if let Some(n) = o.prefill_chunk {
        if n == 0 {
            return Err(Error::request("--prefill-chunk must be at least 1"));
        }
        s.model.prefill_chunk = n;
    }
    let _ = writeln!(r, "# varco bench model --shape {}\n", o.shape);
    let _ = writeln!(
        r,
        "adapter: {}; kernels: {act:?} activations, {}{}{}; plan {:?}; median of {runs} runs",
        ctx.describe(),
        if ctx.caps.subgroups { "subgroup reductions" } else { "workgroup-memory reductions (no subgroups)" },
        if ctx.runtime_checks { ", naga's runtime checks" } else { ", no runtime checks" },
        if crate::kernels::linear::matmul_coop(ctx, act) {
            format!(", cooperative-matrix matmul (KT {}, {} tiles a subgroup{}){}", ctx.coop_shape.kt, ctx.coop_shape.ri * 4, if ctx.coop_shape.bufs == 2 { ", double-buffered" } else { "" }, if ctx.coop_attention { " and attention" } else { "" })
        } else {
            let attention = crate::kernels::attention::prefill_kernel(ctx, cfg.text.head_dim as u32).label();
            format!(", {}tiled matmul (variants: {}), prefill attention: {attention}", if crate::kernels::linear::matmul_packed(ctx, act) { "packed-f16 " } else { "" }, ctx.tiled_matmul.label())
        },
        o.plan
    );
    let _ = writeln!(r, "decode shapes (WG:ROWS:BLOCKS of the fused kernel): {}", s.model.llm.decode_shapes);
    let _ = writeln!(r, "decode attention: {}", decode_attention_label(ctx, act, &cfg.text, &o.contexts)?);
    let _ = writeln!(r, "prefill chunks: up to {} tokens", s.model.prefill_chunk);
    let _ = writeln!(
        r,
        "weights: {:.2} GB on the GPU (LLM {:.2} GB), built in {built:.1} s; session: {context} tokens of context\n",
        ctx.live.counts().bytes as f64 / 1e9,
        s.model.llm.weight_bytes() as f64 / 1e9,
    );

    let bw = read_bandwidth(ctx).await?;
    // the probe's buffer (up to 1 GiB) is gone: the peak-memory figure is the model's and the session's
    ctx.live.peak_bytes.store(ctx.live.bytes.load(std::sync::atomic::Ordering::Relaxed), std::sync::atomic::Ordering::Relaxed);
    if let Some(b) = bw {
        figure(&mut f, "read bandwidth GB/s".into(), b, true);
    }
    let _ = writeln!(r, "measured read bandwidth: {}\n", bw.map_or("n/a (no timestamps)".into(), |b| format!("{b:.0} GB/s")));
    let _ = writeln!(r, "| decode | ms/token | tokens/s | bytes/step | roofline tokens/s | fraction |\n|---|---:|---:|---:|---:|---:|");
    decode(ctx, &mut s, 64, 4).await?; // compiles the decode pipelines
    for &c in &o.contexts {
        let mut all = Vec::new();
        for _ in 0..runs {
            all.push(decode(ctx, &mut s, c, o.steps).await?);
        }
        let tps = median(all);
        figure(&mut f, format!("decode tokens/s at {c} context"), tps, true);
        let bytes = s.model.llm.decode_read_bytes(c);
        let (floor, frac) = match bw {
            Some(b) => (format!("{:.0}", b * 1e9 / bytes as f64), format!("{:.0} %", 100.0 * tps / (b * 1e9 / bytes as f64))),
            None => ("n/a".into(), "n/a".into()),
        };
        let _ = writeln!(r, "| {c} context | {:.2} | {tps:.1} | {:.2} GB | {floor} | {frac} |", 1e3 / tps, bytes as f64 / 1e9);
    }

    let vocab = cfg.text.vocab;
    let c = o.contexts.first().copied().unwrap_or(1024);
    let floors = step_floors(&s.model, c);
    if o.decode_only {
        peak_memory(ctx, &mut r, &mut f);
        let step = s.profile_step(ctx, c).await?;
        profile_table(&mut r, &format!("one decode step at {c} context"), step, &floors, bw);
        return Ok(Report { markdown: r, figures: f });
    }
    s.reset();
    ask(ctx, &mut s, prompt_ids(o.prompt.min(64), vocab, None, 1), None, 1, false).await?; // compiles the prefill pipelines
    let mut all = Vec::new();
    for i in 0..runs {
        all.push(ask(ctx, &mut s, prompt_ids(o.prompt, vocab, None, 2 + i), None, 1, false).await?.timings.first_token_s);
    }
    let p = median(all);
    figure(&mut f, format!("prefill tokens/s, {} tokens", o.prompt), o.prompt as f64 / p, true);
    let _ = writeln!(r, "\nprefill, {} tokens: {:.2} s, {:.0} tokens/s (to the first token read back)", o.prompt, p, o.prompt as f64 / p);

    for &tiles in &o.tiles {
        vision(ctx, &s.model, tiles.min(2)).await?;
        let mut all = Vec::new();
        for _ in 0..runs {
            all.push(vision(ctx, &s.model, tiles).await?);
        }
        let v = median(all);
        figure(&mut f, format!("vision tower + projector s, {tiles} tiles"), v, false);
        let _ = writeln!(r, "vision tower + projector, {tiles} tiles: {:.3} s", v);
    }

    // time to first token for a 1024×768 image: tiles (CPU), tower and merge, prefill of the whole prompt
    let img = image::RgbImage::from_fn(1024, 768, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8]));
    let question = |salt: usize| -> Vec<i64> {
        // the template's 14 tokens before the image, then a 20-token question after it
        let mut ids = prompt_ids(14, vocab, None, 9);
        ids.push(IMAGE_PLACEHOLDER);
        ids.extend(prompt_ids(20, vocab, None, 100 + salt));
        ids
    };
    ask(ctx, &mut s, question(0), Some(&img), 1, false).await?;
    let mut firsts = Vec::new();
    for i in 0..runs {
        firsts.push(ask(ctx, &mut s, question(1 + i), Some(&img), 1, false).await?);
    }
    let a = &firsts[0];
    let ttft = median(firsts.iter().map(|a| a.timings.first_token_s).collect());
    let enc = median(firsts.iter().map(|a| a.timings.image_s).collect());
    let _ = writeln!(
        r,
        "time to first token, 1024×768 image ({} prompt tokens): {ttft:.2} s (image encoding {enc:.2} s, prefill {:.2} s)",
        a.usage.prompt_tokens,
        ttft - enc
    );
    figure(&mut f, "time to first token s, 1024×768 image".into(), ttft, false);
    let _ = writeln!(r, "its prefill chunks (the last run; a session's first prompt starts with 1,024 tokens, later ones at its measured pace): {:?}", s.prefill_chunks());
    // a follow-up question about the same image after a first answer: only the question runs
    let mut follow = Vec::new();
    for i in 0..runs {
        // the first answer (the cache holds the image from the requests above)
        ask(ctx, &mut s, question(10 + 2 * i), Some(&img), 8, true).await?;
        let b = ask(ctx, &mut s, question(11 + 2 * i), Some(&img), 1, true).await?;
        follow.push((b.timings.first_token_s, b.usage.prompt_tokens - b.usage.cached_tokens));
    }
    let up = median(follow.iter().map(|f| f.0).collect());
    let _ = writeln!(r, "follow-up question about the same image (20 tokens, {} prompt tokens run): time to first token {:.0} ms", follow[0].1, up * 1e3);
    figure(&mut f, "follow-up question, time to first token s".into(), up, false);
    peak_memory(ctx, &mut r, &mut f);

    // one decode step at the first context, and the follow-up question's prefill, every dispatch timed on
    // its own
    let step = s.profile_step(ctx, c).await?;
    profile_table(&mut r, &format!("one decode step at {c} context"), step, &floors, bw);
    let question: Vec<u32> = prompt_ids(20, vocab, None, 77).iter().map(|&i| i as u32).collect();
    let at = a.usage.prompt_tokens - 20;
    let prefill = s.profile_prefill(ctx, &question, at).await?;
    profile_table(&mut r, &format!("the follow-up question's prefill (20 tokens after {at})"), prefill, &[], bw);
    // the long prompt's last 1,024 positions as one chunk (where its attention is longest: the real prompt's
    // chunks are 1,024 tokens and the rest), for where a prefill's time goes
    let chunk: Vec<u32> = prompt_ids(s.model.prefill_chunk.min(o.prompt.max(1)), vocab, None, 78).iter().map(|&i| i as u32).collect();
    let at = o.prompt.saturating_sub(chunk.len()).min(s.context().saturating_sub(chunk.len() + 1));
    let last = s.profile_prefill(ctx, &chunk, at).await?;
    profile_table(&mut r, &format!("one prefill chunk ({} tokens after {at})", chunk.len()), last, &[], bw);
    Ok(Report { markdown: r, figures: f })
}
