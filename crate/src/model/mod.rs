//! The VARCO-VISION model: [`config`] (both checkpoint layouts), the SigLIP tower and projector on the GPU
//! ([`vision`]), the Qwen2 decoder with its KV cache ([`llm`]).

pub mod config;
pub mod llm;
pub mod vision;

use crate::chat::IMAGE_PLACEHOLDER;
use crate::gpu::{Context, DType, Recorder, Tensor};
use crate::image::AnyresPlan;
use crate::loader::Tensors;
use crate::weights::WeightSource;
use crate::{Error, Result};
use config::ModelConfig;
use llm::{KvCache, Llm, Precision};
use vision::{Projector, VisionTower};

/// Tokens per prefill chunk: bounds the activations of a 9k-token prompt.
pub const PREFILL_CHUNK: usize = 1024;

/// The whole model on the GPU.
pub struct Model {
    pub cfg: ModelConfig,
    pub vision: VisionTower,
    pub projector: Projector,
    pub llm: Llm,
}

impl Model {
    /// Loads a checkpoint directly: its tensors encoded as `precision` says, then uploaded.
    pub fn load(ctx: &Context, w: &WeightSource, cfg: &ModelConfig, precision: Precision) -> Result<Self> {
        let act = precision.act(ctx)?;
        let mut t = crate::loader::from_checkpoint(ctx, w, cfg, &precision.plan())?;
        Self::new(ctx, cfg, act, &mut t)
    }

    /// Builds the model from its tensors on the GPU (from a checkpoint or a converted model), activations in
    /// `act`.
    pub fn new(ctx: &Context, cfg: &ModelConfig, act: DType, t: &mut Tensors) -> Result<Self> {
        Ok(Model {
            cfg: cfg.clone(),
            vision: VisionTower::new(t, &cfg.vision)?,
            projector: Projector::new(t, cfg.vision.hidden, cfg.text.hidden)?,
            llm: Llm::new(ctx, t, &cfg.text, act)?,
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

    /// Runs a prompt (LLaVA-NeXT ids: −200 where the image goes) through the LLM in chunks, appending to
    /// `cache`; returns the logits `(1, vocab)` after its last token.
    pub fn prefill(&self, ctx: &Context, ids: &[i64], image: Option<&Tensor>, cache: &mut KvCache) -> Result<Tensor> {
        let h = self.cfg.text.hidden;
        let n_placeholders = ids.iter().filter(|&&i| i == IMAGE_PLACEHOLDER).count();
        let n_img = image.map_or(0, |t| t.shape[0]);
        match (n_placeholders, image) {
            (0, None) | (1, Some(_)) => {}
            _ => return Err(Error::Checkpoint(format!("the prompt has {n_placeholders} image placeholders and {} images", image.is_some() as u8))),
        }
        let mut expanded = Vec::with_capacity(ids.len() + n_img);
        let mut img_at = None;
        for &id in ids {
            if id == IMAGE_PLACEHOLDER {
                img_at = Some(expanded.len());
                expanded.extend(std::iter::repeat_n(u32::MAX, n_img));
            } else if id < 0 || id as usize >= self.cfg.text.vocab {
                return Err(Error::Checkpoint(format!("token id {id} is outside the vocabulary")));
            } else {
                expanded.push(id as u32);
            }
        }
        let len = expanded.len();
        if len == 0 {
            return Err(Error::Checkpoint("empty prompt".into()));
        }
        if cache.len + len > cache.capacity {
            return Err(Error::Checkpoint(format!(
                "the prompt is {len} tokens (with the image); with {} already in context the cache of {} is too small",
                cache.len, cache.capacity
            )));
        }
        let act = self.llm.act;
        let row = (h * act.size()) as u64;
        let x_all = Tensor::empty(ctx, &[len, h], act)?;
        let mut rec = Recorder::new(ctx);
        self.llm.embed(&mut rec, &expanded, &x_all)?;
        if let (Some(at), Some(img)) = (img_at, image) {
            rec.copy(&img.buffer, 0, &x_all.buffer, at as u64 * row, n_img as u64 * row);
        }
        rec.submit()?;
        let mut logits = None;
        for c0 in (0..len).step_by(PREFILL_CHUNK) {
            let t = PREFILL_CHUNK.min(len - c0);
            let x = Tensor::empty(ctx, &[t, h], act)?;
            let mut rec = Recorder::new(ctx);
            rec.copy(&x_all.buffer, c0 as u64 * row, &x.buffer, 0, t as u64 * row);
            self.llm.forward(&mut rec, &x, cache)?;
            if c0 + t == len {
                logits = Some(self.llm.logits(&mut rec, &x, t - 1)?);
            }
            rec.submit()?;
        }
        Ok(logits.expect("at least one chunk"))
    }

    /// One generated token through the LLM; the logits after it.
    pub fn step(&self, ctx: &Context, id: u32, cache: &mut KvCache) -> Result<Tensor> {
        let mut rec = Recorder::new(ctx);
        let logits = self.record_step(&mut rec, id, cache)?;
        rec.submit()?;
        Ok(logits)
    }

    /// Records one decode step into `rec` (the caller submits; the benchmark profiles it).
    pub fn record_step(&self, rec: &mut Recorder, id: u32, cache: &mut KvCache) -> Result<Tensor> {
        let t = Tensor::from_u32(rec.ctx, &[id], &[1])?;
        self.record_step_on_gpu(rec, &t, cache)
    }

    /// Records one decode step whose input token is read on the GPU from `id` (a one-element u32 tensor,
    /// typically the previous step's sampler output): steps can be queued before the CPU sees the token.
    pub fn record_step_on_gpu(&self, rec: &mut Recorder, id: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let x = Tensor::empty(rec.ctx, &[1, self.cfg.text.hidden], self.llm.act)?;
        self.llm.embed_ids(rec, id, &x)?;
        self.llm.forward(rec, &x, cache)?;
        self.llm.logits(rec, &x, 0)
    }
}
