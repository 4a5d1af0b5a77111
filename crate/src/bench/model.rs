//! `varco bench model`: the whole model with VARCO-VISION-14B's shapes and random weights in the converter's
//! default formats, built directly on the GPU (no file), measured through the same code as the real model:
//! decode tokens/s at several contexts, prefill tokens/s, the vision tower, time to first token for a
//! 1024×768 image, peak GPU memory, a per-kernel profile of one decode step, and the decode roofline
//! (bytes a step reads ÷ the GPU's measured read bandwidth).

use std::fmt::Write as _;
use std::time::Instant;

use crate::gpu::tensor::Weight;
use crate::gpu::{Context, DType, Recorder, Tensor};
use crate::image::AnyresConfig;
use crate::generate::{decode as decode_loop, SplitMix};
use crate::kernels::sample::Sampling;
use crate::kernels::{bandwidth, sample};
use crate::loader::plan::{self, Kind, QuantPlan};
use crate::loader::{Loaded, Tensors};
use crate::model::config::{ModelConfig, TextConfig, VisionConfig};
use crate::model::llm::KvCache;
use crate::model::Model;
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
                vocab: 4096,
                tie_word_embeddings: false,
                max_positions: 32768,
                eos_token_id: 1,
            },
            VisionConfig { hidden: 144, intermediate: 288, layers: 2, heads: 2, head_dim: 72, image_size: 384, patch_size: 14, ln_eps: 1e-6 },
        ),
        _ => return Err(Error::Checkpoint(format!("--shape {shape}: expected 14b or small"))),
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
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Greedy sampling of `logits` and the one u32 read back: what generation does after each step.
fn pick(rec: &mut Recorder, logits: &Tensor, picked: &Tensor) -> Result<()> {
    sample::sample(rec, logits, picked, sample::Sampling::GREEDY, 0.5)
}

fn read_id(ctx: &Context, picked: &Tensor) -> Result<u32> {
    Ok(pollster::block_on(picked.to_u32(ctx))?[0] % 1000)
}

/// Decode at `context` tokens already in the cache, through generation's own (pipelined) decode loop with
/// the GPU sampler: wall time per token, each read back.
fn decode(ctx: &Context, m: &Model, context: usize, steps: usize) -> Result<f64> {
    let mut cache: KvCache = m.llm.new_cache(ctx, context + 2 * steps + 8)?;
    cache.len = context;
    let mut rng = SplitMix(1);
    let mut run = |n: usize, cache: &mut KvCache| -> Result<f64> {
        let logits = m.step(ctx, 1, cache)?;
        pollster::block_on(ctx.sync())?;
        let t = Instant::now();
        pollster::block_on(decode_loop(ctx, m, logits, cache, n, Sampling::GREEDY, &mut rng, &mut |_| Ok(true)))?;
        Ok(t.elapsed().as_secs_f64() / n as f64)
    };
    run(3, &mut cache)?;
    run(steps, &mut cache)
}

/// A prompt of `n` token ids (and the image placeholder at `image_at`).
fn prompt_ids(n: usize, vocab: usize, image_at: Option<usize>) -> Vec<i64> {
    (0..n).map(|i| if Some(i) == image_at { crate::chat::IMAGE_PLACEHOLDER } else { ((i * 7919) % vocab) as i64 }).collect()
}

/// Prefill of `ids` (with image features): wall time to the first token read back.
fn prefill(ctx: &Context, m: &Model, ids: &[i64], image: Option<&Tensor>) -> Result<f64> {
    let n = ids.len() + image.map_or(0, |t| t.shape[0]);
    let mut cache = m.llm.new_cache(ctx, n + 1)?;
    let picked = Tensor::empty(ctx, &[1], DType::U32)?;
    let t = Instant::now();
    let logits = m.prefill(ctx, ids, image, &mut cache)?;
    let mut rec = Recorder::new(ctx);
    pick(&mut rec, &logits, &picked)?;
    rec.submit()?;
    read_id(ctx, &picked)?;
    Ok(t.elapsed().as_secs_f64())
}

/// The vision tower and projector on `tiles` tiles (GPU, waited for).
fn vision(ctx: &Context, m: &Model, tiles: usize) -> Result<f64> {
    let s = m.cfg.vision.image_size;
    let px: Vec<f32> = (0..tiles * 3 * s * s).map(|i| ((i % 255) as f32 / 127.5) - 1.0).collect();
    let pixels = Tensor::from_f32(ctx, &px, &[tiles, 3, s, s], DType::F32)?;
    let t = Instant::now();
    let mut rec = Recorder::new(ctx);
    let hidden = m.vision.forward(&mut rec, &pixels, m.llm.act)?;
    let _ = m.projector.forward(&mut rec, &hidden)?;
    rec.submit()?;
    pollster::block_on(ctx.sync())?;
    Ok(t.elapsed().as_secs_f64())
}

/// GB/s of a whole-buffer read (median of 5, GPU timestamps).
fn read_bandwidth(ctx: &Context) -> Result<Option<f64>> {
    let bytes = (1u64 << 30).min(ctx.caps.max_binding / 16 * 16);
    let src = ctx.create_buffer(&wgpu::BufferDescriptor { label: Some("bandwidth"), size: bytes, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false });
    let wgs = 8192;
    let out = Tensor::empty(ctx, &[wgs as usize * 256], DType::U32)?;
    let mut times = Vec::new();
    for _ in 0..6 {
        let mut rec = Recorder::new(ctx);
        bandwidth::read(&mut rec, &src, &out, wgs)?;
        match pollster::block_on(rec.submit_timed())? {
            Some(t) => times.push(t),
            None => return Ok(None),
        }
    }
    times.remove(0);
    Ok(Some(bytes as f64 / median(times) / 1e9))
}

/// Runs everything and returns a Markdown report.
pub fn run_model(ctx: &Context, o: &ModelBenchOptions) -> Result<String> {
    let cfg = config(&o.shape)?;
    let mut r = String::new();
    let t = Instant::now();
    let mut tensors = random_tensors(ctx, &cfg, &o.plan)?;
    let act = if ctx.caps.f16 { DType::F16 } else { DType::F32 };
    let m = Model::new(ctx, &cfg, act, &mut tensors)?;
    let _ = writeln!(r, "# varco bench model --shape {}\n", o.shape);
    let _ = writeln!(r, "adapter: {}; activations {act:?}; plan {:?}", ctx.describe(), o.plan);
    let _ = writeln!(r, "weights: {:.2} GB on the GPU (LLM {:.2} GB), built in {:.1} s\n", ctx.buffer_memory() as f64 / 1e9, m.llm.weight_bytes() as f64 / 1e9, t.elapsed().as_secs_f64());

    let bw = read_bandwidth(ctx)?;
    let _ = writeln!(r, "measured read bandwidth: {}\n", bw.map_or("n/a (no timestamps)".into(), |b| format!("{b:.0} GB/s")));
    let _ = writeln!(r, "| decode | ms/token | tokens/s | bytes/step | roofline tokens/s | fraction |\n|---|---:|---:|---:|---:|---:|");
    for &c in &o.contexts {
        let s = decode(ctx, &m, c, o.steps)?;
        let bytes = m.llm.decode_read_bytes(c);
        let (floor, frac) = match bw {
            Some(b) => (format!("{:.0}", b * 1e9 / bytes as f64), format!("{:.0} %", 100.0 / s / (b * 1e9 / bytes as f64))),
            None => ("n/a".into(), "n/a".into()),
        };
        let _ = writeln!(r, "| {c} context | {:.2} | {:.1} | {:.2} GB | {floor} | {frac} |", s * 1e3, 1.0 / s, bytes as f64 / 1e9);
    }

    let ids = prompt_ids(o.prompt, cfg.text.vocab, None);
    prefill(ctx, &m, &ids[..o.prompt.min(64)], None)?; // compiles the prefill pipelines
    let p = prefill(ctx, &m, &ids, None)?;
    let _ = writeln!(r, "\nprefill, {} tokens: {:.2} s, {:.0} tokens/s (to the first token read back)", o.prompt, p, o.prompt as f64 / p);

    for &tiles in &o.tiles {
        vision(ctx, &m, tiles.min(2))?;
        let v = vision(ctx, &m, tiles)?;
        let _ = writeln!(r, "vision tower + projector, {tiles} tiles: {:.3} s", v);
    }

    // time to first token for a 1024×768 image: tiles (CPU), tower and merge, prefill of the whole prompt
    let img = image::RgbImage::from_fn(1024, 768, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8]));
    let question = prompt_ids(26, cfg.text.vocab, Some(5));
    let run_ttft = || -> Result<(f64, f64, usize)> {
        let t = Instant::now();
        let (plan, feats) = m.encode_image(ctx, &img)?;
        pollster::block_on(ctx.sync())?;
        let enc = t.elapsed().as_secs_f64();
        prefill(ctx, &m, &question, Some(&feats))?;
        Ok((t.elapsed().as_secs_f64(), enc, question.len() - 1 + plan.n_tokens as usize))
    };
    run_ttft()?;
    let (ttft, enc, n) = run_ttft()?;
    let _ = writeln!(r, "time to first token, 1024×768 image ({n} prompt tokens): {:.2} s (image encoding {:.2} s, prefill {:.2} s)", ttft, enc, ttft - enc);
    let _ = writeln!(r, "peak GPU memory (buffers at any submit): {:.2} GB", ctx.stats.peak_bytes.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9);

    // one decode step at the first context, every dispatch timed on its own
    let c = o.contexts.first().copied().unwrap_or(1024);
    let mut cache = m.llm.new_cache(ctx, c + 2)?;
    cache.len = c;
    let picked = Tensor::empty(ctx, &[1], DType::U32)?;
    let mut rec = Recorder::new(ctx);
    let logits = m.record_step(&mut rec, 1, &mut cache)?;
    pick(&mut rec, &logits, &picked)?;
    let n_dispatch = rec.len();
    if let Some(prof) = pollster::block_on(rec.submit_profiled())? {
        let total: f64 = prof.iter().map(|p| p.1).sum();
        let mut by: Vec<(String, usize, f64)> = Vec::new();
        for (name, s) in prof {
            let key = name.split('[').next().unwrap_or("").to_string();
            match by.iter_mut().find(|b| b.0 == key) {
                Some(b) => {
                    b.1 += 1;
                    b.2 += s;
                }
                None => by.push((key, 1, s)),
            }
        }
        by.sort_by(|a, b| b.2.total_cmp(&a.2));
        let _ = writeln!(r, "\none decode step at {c} context: {n_dispatch} dispatches, {:.2} ms of GPU time when timed one by one\n", total * 1e3);
        let _ = writeln!(r, "| kernel | dispatches | µs | share |\n|---|---:|---:|---:|");
        for (k, n, s) in by {
            let _ = writeln!(r, "| {k} | {n} | {:.0} | {:.1} % |", s * 1e6, 100.0 * s / total);
        }
    } else {
        let _ = writeln!(r, "\none decode step: {n_dispatch} dispatches (no timestamps for a profile)");
    }
    Ok(r)
}
