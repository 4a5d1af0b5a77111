//! The VARCO-VISION model: [`config`] (both checkpoint layouts), the SigLIP tower and projector on the GPU
//! ([`vision`]), the Qwen2 decoder with its KV cache ([`llm`]), and the decode step with the buffers it
//! keeps from token to token ([`decode`]). What a request asks and what the cache holds is the runtime's
//! business (`session`); this layer takes token ids and image embeddings.

pub mod config;
pub mod decode;
pub mod llm;
pub mod tensors;
pub mod vision;

use crate::gpu::{Context, DType, Recorder, Tensor};
use crate::image::AnyresPlan;
use crate::{Error, Result};
use config::ModelConfig;
use decode::Workspace;
use llm::{KvCache, LayerBuffers, Llm};
pub use tensors::{Loaded, Tensors};
use vision::{Projector, VisionTower};

/// Tokens per prefill chunk at the least: bounds the activations of a 9k-token prompt. The manifest's limits
/// check (`Manifest::check_limits`) refuses a model whose chunk of this many rows does not fit a binding.
pub const PREFILL_CHUNK: usize = 1024;

/// Tokens per prefill chunk at the most: a photo's whole prompt (4,759 tokens at 1024×768; at most ≈ 7,400
/// for the largest anyres grid). Larger chunks keep the tensor-core matmul's last wave of 128 × 128 tiles
/// fuller: on the H200 a 4,725-token prompt prefilled in 1.46 s in chunks of 1,024, 1.35 s of 2,048, 1.33 s
/// of 4,096 and 1.29 s in one (BENCHMARKS.md, eleventh session). A chunk's buffers cost ≈ 140 KB a row for
/// the 14B, allocated per prompt for the longest chunk it runs: 660 MB for that photo in one, 1.1 GB at most.
pub const PREFILL_CHUNK_MAX: usize = 8192;

/// Seconds a prefill chunk should take: a session starts its first prompt with a chunk of [`PREFILL_CHUNK`]
/// tokens and sizes every later chunk from the pace of the last one timed ([`Prefill::pace`]), so that a large
/// GPU takes a photo's prompt in one or two chunks (the 14B's first 1,024 tokens take ≈ 0.25 s on an H100)
/// while a slow one keeps short chunks, between which it reports progress and can be interrupted.
pub const PREFILL_CHUNK_SECONDS: f64 = 1.0;

/// Tokens the next prefill chunk takes after `rows` tokens took `seconds` from their submit to their results:
/// as many as take about [`PREFILL_CHUNK_SECONDS`] at that pace, between [`PREFILL_CHUNK`] and `max` (the
/// model's `prefill_chunk`, which may be smaller than `PREFILL_CHUNK`).
pub fn paced_chunk(rows: usize, seconds: f64, max: usize) -> usize {
    let fit = rows as f64 / seconds.max(1e-6) * PREFILL_CHUNK_SECONDS;
    (fit.min(max as f64) as usize).clamp(PREFILL_CHUNK.min(max), max)
}

/// Tokens per prefill chunk for a model of `text` with `act` activations on a device whose buffers bind at
/// most `max_binding` bytes: the most, from [`PREFILL_CHUNK_MAX`] down by halves to [`PREFILL_CHUNK`], whose
/// largest buffer (the gate and up projections, `rows × 2·intermediate`) fits one binding.
pub fn prefill_chunk(max_binding: u64, text: &config::TextConfig, act: DType) -> usize {
    let mut rows = PREFILL_CHUNK_MAX;
    while rows > PREFILL_CHUNK && (rows * 2 * text.intermediate * act.size()) as u64 > max_binding {
        rows /= 2;
    }
    rows
}

/// The activation type on this device: `want`, or where none is asked for, f16 where the device has
/// shader-f16 and f32 elsewhere. The one place the choice is made.
pub fn activation(ctx: &Context, want: Option<DType>) -> Result<DType> {
    match want {
        None => Ok(if ctx.caps.f16 { DType::F16 } else { DType::F32 }),
        Some(DType::F32) => Ok(DType::F32),
        Some(DType::F16) if ctx.caps.f16 => Ok(DType::F16),
        Some(DType::F16) => Err(Error::Device("f16 activations need shader-f16, which this GPU lacks".into())),
        Some(DType::U32) => Err(Error::kernel("model", "u32 is not an activation type")),
    }
}

/// A piece of a prompt on its way into the LLM: token ids, or embeddings that take their place (an image's).
pub enum Input<'a> {
    Tokens(&'a [u32]),
    /// `(n, hidden)` rows in the model's activation type.
    Embeddings(&'a Tensor),
}

impl Input<'_> {
    pub fn len(&self) -> usize {
        match self {
            Input::Tokens(t) => t.len(),
            Input::Embeddings(e) => e.shape[0],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A prompt embedded and being run through the LLM a chunk at a time ([`Model::prefill_chunk`]).
pub struct Prefill {
    pub(crate) x_all: Tensor,
    pub(crate) x: Tensor,
    pub(crate) bufs: LayerBuffers,
    pub(crate) len: usize,
    pub(crate) done: usize,
    /// Tokens the next chunk takes (fewer where fewer are left).
    pub(crate) rows: usize,
}

impl Prefill {
    /// Tokens of the prompt run so far, and in all.
    pub fn progress(&self) -> (usize, usize) {
        (self.done, self.len)
    }

    /// Tokens the next chunk runs.
    pub fn next_rows(&self) -> usize {
        self.rows.min(self.len - self.done)
    }

    /// Sizes the next chunks from the last one ([`paced_chunk`]).
    pub fn pace(&mut self, rows: usize, seconds: f64, max: usize) {
        self.rows = paced_chunk(rows, seconds, max);
    }
}

/// The whole model on the GPU.
pub struct Model {
    pub cfg: ModelConfig,
    pub vision: VisionTower,
    pub projector: Projector,
    pub llm: Llm,
    /// Tokens a prefill chunk takes at most ([`prefill_chunk`] for the device, unless a caller sets another:
    /// `varco bench model --prefill-chunk`); a session paces its chunks below it ([`paced_chunk`]).
    pub prefill_chunk: usize,
}

impl Model {
    /// Builds the model from its tensors on the GPU (from a checkpoint or a converted model), activations in
    /// `act`.
    pub fn new(ctx: &Context, cfg: &ModelConfig, act: DType, t: &mut Tensors) -> Result<Self> {
        Ok(Model {
            cfg: cfg.clone(),
            vision: VisionTower::new(t, &cfg.vision)?,
            projector: Projector::new(t, cfg.vision.hidden, cfg.text.hidden)?,
            llm: Llm::new(ctx, t, &cfg.text, act)?,
            prefill_chunk: prefill_chunk(ctx.caps.max_binding, &cfg.text, act),
        })
    }

    /// An RGB image → its plan and its embedding sequence `(plan.n_tokens, hidden)`.
    pub fn encode_image(&self, ctx: &Context, img: &image::RgbImage) -> Result<(AnyresPlan, Tensor)> {
        let (plan, tiles) = crate::image::tiles(img, &self.cfg.anyres)?;
        let s = self.cfg.anyres.tile as usize;
        let pixels = Tensor::from_f32(ctx, &crate::image::normalize(&tiles), &[tiles.len(), 3, s, s], DType::F32)?;
        let mut rec = Recorder::new(ctx);
        let hidden = self.vision.forward(&mut rec, &pixels, self.llm.act)?;
        let projected = self.projector.forward(&mut rec, &hidden)?;
        let feats = self.projector.merge(&mut rec, &projected, &plan, self.cfg.vision.cells() as u32)?;
        rec.submit()?;
        Ok((plan, feats))
    }

    /// Embeds a prompt (token ids and image embeddings in order) for [`Model::prefill_chunk`], whose first
    /// chunk takes `first` tokens (at most); its buffers are this prompt's own.
    pub fn start_prefill(&self, ctx: &Context, inputs: &[Input], cache: &KvCache, first: usize) -> Result<Prefill> {
        let h = self.cfg.text.hidden;
        let act = self.llm.act;
        let len: usize = inputs.iter().map(|i| i.len()).sum();
        if len == 0 {
            return Err(Error::request("empty prompt"));
        }
        if cache.len + len > cache.capacity {
            return Err(Error::request(format!(
                "the prompt is {len} tokens; with {} already in context it does not fit the context of {}",
                cache.len, cache.capacity
            )));
        }
        let mut ids = Vec::with_capacity(len);
        for input in inputs {
            match input {
                Input::Tokens(t) => {
                    if let Some(&bad) = t.iter().find(|&&id| id as usize >= self.cfg.text.vocab) {
                        return Err(Error::request(format!("token id {bad} is outside the vocabulary of {}", self.cfg.text.vocab)));
                    }
                    ids.extend_from_slice(t);
                }
                Input::Embeddings(e) => {
                    if e.shape.len() != 2 || e.shape[1] != h || e.dtype != act {
                        return Err(Error::kernel("prefill", format!("embeddings {:?} {:?} are not (n, {h}) {act:?}", e.shape, e.dtype)));
                    }
                    // ids past the vocabulary leave their rows to the copy below
                    ids.extend(std::iter::repeat_n(u32::MAX, e.shape[0]));
                }
            }
        }
        let row = (h * act.size()) as u64;
        let x_all = Tensor::empty(ctx, &[len, h], act)?;
        let mut rec = Recorder::new(ctx);
        self.llm.embed(&mut rec, &ids, &x_all)?;
        let mut at = 0;
        for input in inputs {
            if let Input::Embeddings(e) = input {
                rec.copy(&e.buffer, 0, &x_all.buffer, at as u64 * row, e.shape[0] as u64 * row);
            }
            at += input.len();
        }
        rec.submit()?;
        // buffers for the first chunk alone: a later, longer one (Prefill::pace) grows them
        let rows = first.min(len);
        Ok(Prefill { x_all, x: Tensor::empty(ctx, &[rows, h], act)?, bufs: LayerBuffers::new(ctx, &self.cfg.text, act, rows, cache.capacity)?, len, done: 0, rows: first })
    }

    /// Makes `p`'s chunk buffers hold `rows` tokens, where they hold fewer (a chunk longer than the first).
    fn chunk_buffers(&self, ctx: &Context, p: &mut Prefill, rows: usize, cache: &KvCache) -> Result<()> {
        if p.bufs.rows < rows {
            p.x = Tensor::empty(ctx, &[rows, self.cfg.text.hidden], self.llm.act)?;
            p.bufs = LayerBuffers::new(ctx, &self.cfg.text, self.llm.act, rows, cache.capacity)?;
        }
        Ok(())
    }

    /// Runs the next chunk of `p`, appending to `cache`; after the last one, the logits of the prompt's last
    /// token are in `ws` and this returns true.
    pub fn prefill_chunk(&self, ctx: &Context, p: &mut Prefill, cache: &mut KvCache, ws: &Workspace) -> Result<bool> {
        let row = (self.cfg.text.hidden * self.llm.act.size()) as u64;
        let t = p.next_rows();
        self.chunk_buffers(ctx, p, t, cache)?;
        let x = p.x.rows(t);
        let mut rec = Recorder::new(ctx);
        rec.copy(&p.x_all.buffer, p.done as u64 * row, &x.buffer, 0, t as u64 * row);
        self.llm.forward(&mut rec, &x, cache, &p.bufs)?;
        p.done += t;
        let last = p.done == p.len;
        if last {
            rec.copy(&x.buffer, (t - 1) as u64 * row, &ws.b.x.buffer, 0, row);
            self.record_logits(&mut rec, &ws.b)?;
        }
        rec.submit()?;
        Ok(last)
    }

    /// A whole prompt at once ([`Model::start_prefill`], then every chunk, each as long as `prefill_chunk`
    /// allows: nothing here reports progress or stops between them); the logits after its last token are in
    /// `ws`.
    pub fn prefill(&self, ctx: &Context, inputs: &[Input], cache: &mut KvCache, ws: &Workspace) -> Result<()> {
        let mut p = self.start_prefill(ctx, inputs, cache, self.prefill_chunk)?;
        while !self.prefill_chunk(ctx, &mut p, cache, ws)? {}
        Ok(())
    }
}
