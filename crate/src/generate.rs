//! Generation: greedy or sampled (temperature, top-k, top-p on the GPU, so a step reads back one id;
//! a repetition penalty switches to the CPU sampler, which sees the whole row), stop at `<|im_end|>` or
//! max_new_tokens, text streamed as whole characters.

use crate::gpu::{Context, DType, Recorder, Tensor};
use crate::kernels::sample::{self, Sampling};
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    pub seed: u64,
    /// transformers' RepetitionPenaltyLogitsProcessor (1 = off).
    pub repetition_penalty: f32,
}

impl Default for GenerateOptions {
    /// The model card's settings: greedy, 1024 new tokens.
    fn default() -> Self {
        GenerateOptions { max_new_tokens: 1024, sampling: Sampling::GREEDY, seed: 0, repetition_penalty: 1.0 }
    }
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub prompt_tokens: usize,
    pub ids: Vec<u32>,
    pub text: String,
    /// Why it stopped: "eos", "length" or "interrupted".
    pub stop: &'static str,
}

/// The generator's random numbers (one uniform per sampled token).
pub struct SplitMix(pub u64);
impl SplitMix {
    pub fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// One token's sampled id on its way back: copied into its own mappable buffer at the end of the submission
/// that sampled it.
struct InFlight {
    staging: wgpu::Buffer,
    index: wgpu::SubmissionIndex,
}

/// Samples `logits` into `picked` (on the GPU) and queues the id's copy back; submits `rec`.
fn sample_and_submit(ctx: &Context, mut rec: Recorder, logits: &Tensor, picked: &Tensor, s: Sampling, u: f32) -> Result<InFlight> {
    sample::sample(&mut rec, logits, picked, s, u.min(0.999_999))?;
    let staging = ctx.create_buffer(&wgpu::BufferDescriptor {
        label: Some("token"),
        size: 4,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    rec.copy(&picked.buffer, 0, &staging, 0, 4);
    let index = rec.submit_index();
    Ok(InFlight { staging, index })
}

async fn read_token(ctx: &Context, t: InFlight) -> Result<u32> {
    let bytes = ctx.read_mapped(&t.staging, t.index).await?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Decodes up to `budget` tokens after `logits` with the GPU sampler; `on_token` gets each id in order and
/// returns false to stop. Pipelined: each step reads its input token on the GPU (the previous step's
/// sampler output), so step i + 1 is recorded and queued before token i is read back, and the GPU never
/// waits for the CPU to record. The cost: one step's work after the last token is queued and thrown away.
#[allow(clippy::too_many_arguments)]
pub async fn decode(
    ctx: &Context,
    model: &Model,
    logits: Tensor,
    cache: &mut crate::model::llm::KvCache,
    budget: usize,
    sampling: Sampling,
    rng: &mut SplitMix,
    on_token: &mut dyn FnMut(u32) -> Result<bool>,
) -> Result<()> {
    if budget == 0 {
        return Ok(());
    }
    let picked = Tensor::empty(ctx, &[1], DType::U32)?;
    let mut queue = std::collections::VecDeque::new();
    queue.push_back(sample_and_submit(ctx, Recorder::new(ctx), &logits, &picked, sampling, rng.uniform())?);
    let mut queued = 1;
    let mut done = 0;
    while let Some(next) = queue.pop_front() {
        if queued < budget {
            let mut rec = Recorder::new(ctx);
            let logits = model.record_step_on_gpu(&mut rec, &picked, cache)?;
            queue.push_back(sample_and_submit(ctx, rec, &logits, &picked, sampling, rng.uniform())?);
            queued += 1;
        }
        done += 1;
        if !on_token(read_token(ctx, next).await?)? || done == budget {
            break;
        }
    }
    Ok(())
}

/// Decoding with the CPU sampler (a repetition penalty needs the whole row): one step at a time.
#[allow(clippy::too_many_arguments)]
async fn decode_cpu_sampled(
    ctx: &Context,
    model: &Model,
    mut logits: Tensor,
    cache: &mut crate::model::llm::KvCache,
    budget: usize,
    opts: &GenerateOptions,
    prompt: &[i64],
    rng: &mut SplitMix,
    on_token: &mut dyn FnMut(u32) -> Result<bool>,
) -> Result<()> {
    let mut seen: Vec<u32> = prompt.iter().filter(|&&i| i >= 0).map(|&i| i as u32).collect();
    for i in 0..budget {
        let mut l = logits.to_f32(ctx).await?;
        for &t in &seen {
            let v = &mut l[t as usize];
            *v = if *v < 0.0 { *v * opts.repetition_penalty } else { *v / opts.repetition_penalty };
        }
        let id = cpu_sample(&l, opts.sampling, rng.uniform());
        seen.push(id);
        if !on_token(id)? || i + 1 == budget {
            break;
        }
        logits = model.step(ctx, id, cache)?;
    }
    Ok(())
}

/// Runs the prompt (LLaVA-NeXT ids, −200 for the image) and generates; `on_text` gets each new piece.
/// Native: blocks until done ([`generate_async`] is the same, awaitable; the browser's form).
#[cfg(not(target_arch = "wasm32"))]
pub fn generate(
    ctx: &Context,
    model: &Model,
    tok: &Tokenizer,
    prompt: &[i64],
    image: Option<&Tensor>,
    opts: &GenerateOptions,
    on_text: impl FnMut(&str),
) -> Result<Generation> {
    pollster::block_on(generate_async(ctx, model, tok, prompt, image, opts, on_text, || false))
}

/// [`generate`], awaitable; `interrupted` is asked before each token is taken (a true ends the answer
/// with stop = "interrupted").
#[allow(clippy::too_many_arguments)]
pub async fn generate_async(
    ctx: &Context,
    model: &Model,
    tok: &Tokenizer,
    prompt: &[i64],
    image: Option<&Tensor>,
    opts: &GenerateOptions,
    mut on_text: impl FnMut(&str),
    interrupted: impl Fn() -> bool,
) -> Result<Generation> {
    let n_img = image.map_or(0, |t| t.shape[0]);
    let prompt_tokens = prompt.iter().filter(|&&i| i != crate::chat::IMAGE_PLACEHOLDER).count() + n_img;
    let max_pos = model.cfg.text.max_positions;
    if prompt_tokens >= max_pos {
        return Err(Error::Checkpoint(format!("the prompt is {prompt_tokens} tokens; the model's context is {max_pos}")));
    }
    let budget = opts.max_new_tokens.min(max_pos - prompt_tokens);
    let mut cache = model.llm.new_cache(ctx, prompt_tokens + budget)?;
    let eos = model.cfg.text.eos_token_id;
    let mut rng = SplitMix(opts.seed);
    let logits = model.prefill(ctx, prompt, image, &mut cache)?;
    let mut out = Vec::new();
    let mut stream = tok.stream();
    let mut text = String::new();
    let mut stop = "length";
    let mut on_token = |id: u32| -> Result<bool> {
        if interrupted() {
            stop = "interrupted";
            return Ok(false);
        }
        if id == eos {
            stop = "eos";
            return Ok(false);
        }
        out.push(id);
        if let Some(piece) = stream.push(id)? {
            on_text(&piece);
            text.push_str(&piece);
        }
        Ok(true)
    };
    if opts.repetition_penalty != 1.0 {
        decode_cpu_sampled(ctx, model, logits, &mut cache, budget, opts, prompt, &mut rng, &mut on_token).await?;
    } else {
        decode(ctx, model, logits, &mut cache, budget, opts.sampling, &mut rng, &mut on_token).await?;
    }
    if let Some(rest) = stream.finish()? {
        on_text(&rest);
        text.push_str(&rest);
    }
    Ok(Generation { prompt_tokens, ids: out, text, stop })
}

/// The sampler of sample.wgsl on the CPU (for rows the CPU has touched): same order and cut-offs.
pub fn cpu_sample(l: &[f32], s: Sampling, u: f32) -> u32 {
    let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let first = l.iter().position(|&v| v == m).unwrap_or(0);
    if s.temperature <= 0.0 || s.top_k == 1 {
        return first as u32;
    }
    let d: Vec<f32> = l.iter().map(|&v| (m - v) / s.temperature).collect();
    let mut sorted = d.clone();
    sorted.sort_by(f32::total_cmp);
    let tk = if s.top_k > 0 && (s.top_k as usize) < l.len() { sorted[s.top_k as usize - 1] } else { f32::INFINITY };
    let mut t = tk;
    if s.top_p < 1.0 {
        let kept: Vec<f32> = sorted.iter().cloned().filter(|&x| x <= tk).collect();
        let z: f32 = kept.iter().map(|x| (-x).exp()).sum();
        let cut = (1.0 - s.top_p) * z;
        // the largest d whose mass of tokens at or below it (in score) exceeds the cut
        let mut mass_not_above = 0.0;
        t = 0.0;
        for &x in kept.iter().rev() {
            mass_not_above += (-x).exp();
            if mass_not_above > cut {
                t = x;
                break;
            }
        }
    }
    let total: f32 = d.iter().filter(|&&x| x <= t).map(|x| (-x).exp()).sum();
    let target = u * total;
    let mut run = 0.0;
    let mut pick = first;
    for (i, &x) in d.iter().enumerate() {
        if x <= t {
            pick = i;
            run += (-x).exp();
            if run > target {
                break;
            }
        }
    }
    pick as u32
}
