//! SigLIP (the vision tower, 26 pre-LN layers, no post-layernorm on the feature path), the mlp2x_gelu
//! projector, and the anyres merge into the image's embedding sequence — on the GPU.
//! Reference: transformers SiglipVisionModel / LlavaOnevision `get_image_features` + `pack_image_features`
//! (docs: MODEL.md §2.2–2.3); checked against the fixtures' `vision_last_hidden` and `image_features`.

use crate::gpu::tensor::Weight;
use crate::gpu::{Context, DType, Recorder, Tensor};
use crate::image::AnyresPlan;
use crate::kernels::attention::{self, AttnArgs, KvLayout};
use crate::kernels::patch_embed::{self, PatchGeometry};
use crate::kernels::{elementwise, linear, merge, norm};
use crate::model::config::VisionConfig;
use crate::weights::WeightSource;
use crate::Result;

/// An f32 vector (norm weights, biases) from the checkpoint.
fn vec_f32(ctx: &Context, w: &WeightSource, name: &str, n: usize) -> Result<Tensor> {
    Tensor::from_f32(ctx, &w.f32(name, &[n])?, &[n], DType::F32)
}

/// A linear layer's weight `(n, k)` kept in f16 (the vision tower and projector are small; 16-bit is exact).
fn linear_f16(ctx: &Context, w: &WeightSource, name: &str, n: usize, k: usize) -> Result<Weight> {
    Weight::from_f16(ctx, &w.f16(name, &[n, k])?, n, k)
}

struct Layer {
    ln1: (Tensor, Tensor),
    qkv: Weight,
    qkv_b: Tensor,
    out: Weight,
    out_b: Tensor,
    ln2: (Tensor, Tensor),
    fc1: Weight,
    fc1_b: Tensor,
    fc2: Weight,
    fc2_b: Tensor,
}

impl Layer {
    fn load(ctx: &Context, w: &WeightSource, cfg: &VisionConfig, i: usize) -> Result<Self> {
        let p = format!("vision_tower.encoder.layers.{i}");
        let (h, m) = (cfg.hidden, cfg.intermediate);
        // q, k and v as one (3h, h) matrix: one matmul, and attention reads them from one row
        let mut qkv = Vec::with_capacity(3 * h * h);
        let mut qkv_b = Vec::with_capacity(3 * h);
        for t in ["q_proj", "k_proj", "v_proj"] {
            qkv.extend(w.f16(&format!("{p}.self_attn.{t}.weight"), &[h, h])?);
            qkv_b.extend(w.f32(&format!("{p}.self_attn.{t}.bias"), &[h])?);
        }
        Ok(Layer {
            ln1: (vec_f32(ctx, w, &format!("{p}.layer_norm1.weight"), h)?, vec_f32(ctx, w, &format!("{p}.layer_norm1.bias"), h)?),
            qkv: Weight::from_f16(ctx, &qkv, 3 * h, h)?,
            qkv_b: Tensor::from_f32(ctx, &qkv_b, &[3 * h], DType::F32)?,
            out: linear_f16(ctx, w, &format!("{p}.self_attn.out_proj.weight"), h, h)?,
            out_b: vec_f32(ctx, w, &format!("{p}.self_attn.out_proj.bias"), h)?,
            ln2: (vec_f32(ctx, w, &format!("{p}.layer_norm2.weight"), h)?, vec_f32(ctx, w, &format!("{p}.layer_norm2.bias"), h)?),
            fc1: linear_f16(ctx, w, &format!("{p}.mlp.fc1.weight"), m, h)?,
            fc1_b: vec_f32(ctx, w, &format!("{p}.mlp.fc1.bias"), m)?,
            fc2: linear_f16(ctx, w, &format!("{p}.mlp.fc2.weight"), h, m)?,
            fc2_b: vec_f32(ctx, w, &format!("{p}.mlp.fc2.bias"), h)?,
        })
    }
}

pub struct VisionTower {
    pub cfg: VisionConfig,
    patch: Weight,
    patch_b: Tensor,
    pos: Tensor,
    layers: Vec<Layer>,
}

impl VisionTower {
    pub fn load(ctx: &Context, w: &WeightSource, cfg: &VisionConfig) -> Result<Self> {
        let e = "vision_tower.embeddings";
        let (h, p) = (cfg.hidden, cfg.patch_size);
        let patch = w.f16(&format!("{e}.patch_embedding.weight"), &[h, 3, p, p])?;
        let n_pos = cfg.cells() * cfg.cells();
        Ok(VisionTower {
            cfg: cfg.clone(),
            patch: Weight::from_f16(ctx, &patch, h, 3 * p * p)?,
            patch_b: vec_f32(ctx, w, &format!("{e}.patch_embedding.bias"), h)?,
            pos: Tensor::from_f32(ctx, &w.f32(&format!("{e}.position_embedding.weight"), &[n_pos, h])?, &[n_pos * h], DType::F32)?,
            layers: (0..cfg.layers).map(|i| Layer::load(ctx, w, cfg, i)).collect::<Result<_>>()?,
        })
    }

    /// Pixels `(tiles, 3, size, size)` f32 → last hidden state `(tiles · cells², hidden)` in `act`.
    pub fn forward(&self, rec: &mut Recorder, pixels: &Tensor, act: DType) -> Result<Tensor> {
        let ctx = rec.ctx;
        let c = &self.cfg;
        let per_tile = c.cells() * c.cells();
        let tiles = pixels.len() / (3 * c.image_size * c.image_size);
        let n = tiles * per_tile;
        let (h, m) = (c.hidden, c.intermediate);
        let g = PatchGeometry { size: c.image_size as u32, patch: c.patch_size as u32, channels: 3 };
        let cols = Tensor::empty(ctx, &[n, g.cols() as usize], act)?;
        let x = Tensor::empty(ctx, &[n, h], act)?;
        patch_embed::patch_embed(rec, pixels, &self.patch, &self.patch_b, &cols, &x, g)?;
        elementwise::bias_add(rec, &x, &self.pos)?;
        let y = Tensor::empty(ctx, &[n, h], act)?;
        let qkv = Tensor::empty(ctx, &[n, 3 * h], act)?;
        let att = Tensor::empty(ctx, &[n, h], act)?;
        let mid = Tensor::empty(ctx, &[n, m], act)?;
        let eps = c.ln_eps as f32;
        for l in &self.layers {
            norm::layer_norm(rec, &x, &l.ln1.0, &l.ln1.1, &y, eps)?;
            linear::linear(rec, &y, &l.qkv, Some(&l.qkv_b), &qkv)?;
            for t in 0..tiles {
                let row0 = (t * per_tile * 3 * h) as u32;
                let lay = |off: usize| KvLayout { offset: row0 + off as u32, head_stride: c.head_dim as u32, seq_stride: (3 * h) as u32 };
                let args = AttnArgs {
                    n_q: per_tile as u32,
                    n_kv: per_tile as u32,
                    n_heads: c.heads as u32,
                    n_kv_heads: c.heads as u32,
                    head_dim: c.head_dim as u32,
                    q_stride: (3 * h) as u32,
                    q_offset: row0,
                    o_stride: h as u32,
                    o_offset: (t * per_tile * h) as u32,
                    k: lay(h),
                    v: lay(2 * h),
                    pos_offset: 0,
                    causal: false,
                    scale: (c.head_dim as f32).powf(-0.5),
                };
                attention::attention(rec, &qkv, &qkv, &qkv, &att, &args)?;
            }
            linear::linear(rec, &att, &l.out, Some(&l.out_b), &y)?;
            elementwise::add(rec, &x, &y)?;
            norm::layer_norm(rec, &x, &l.ln2.0, &l.ln2.1, &y, eps)?;
            linear::linear(rec, &y, &l.fc1, Some(&l.fc1_b), &mid)?;
            elementwise::gelu_tanh(rec, &mid)?;
            linear::linear(rec, &mid, &l.fc2, Some(&l.fc2_b), &y)?;
            elementwise::add(rec, &x, &y)?;
        }
        Ok(x)
    }
}

/// `Linear → GELU(erf) → Linear`, from the vision width to the LLM's, and the learned row separator.
pub struct Projector {
    l1: Weight,
    b1: Tensor,
    l2: Weight,
    b2: Tensor,
    pub newline: Tensor,
    pub out_dim: usize,
}

impl Projector {
    pub fn load(ctx: &Context, w: &WeightSource, vision_hidden: usize, text_hidden: usize) -> Result<Self> {
        let p = "multi_modal_projector";
        Ok(Projector {
            l1: linear_f16(ctx, w, &format!("{p}.linear_1.weight"), text_hidden, vision_hidden)?,
            b1: vec_f32(ctx, w, &format!("{p}.linear_1.bias"), text_hidden)?,
            l2: linear_f16(ctx, w, &format!("{p}.linear_2.weight"), text_hidden, text_hidden)?,
            b2: vec_f32(ctx, w, &format!("{p}.linear_2.bias"), text_hidden)?,
            newline: vec_f32(ctx, w, "image_newline", text_hidden)?,
            out_dim: text_hidden,
        })
    }

    /// Vision features `(n, vision_hidden)` → `(n, text_hidden)`.
    pub fn forward(&self, rec: &mut Recorder, feats: &Tensor) -> Result<Tensor> {
        let n = feats.len() / self.l1.k;
        let mid = Tensor::empty(rec.ctx, &[n, self.out_dim], feats.dtype)?;
        linear::linear(rec, feats, &self.l1, Some(&self.b1), &mid)?;
        elementwise::gelu_erf(rec, &mid)?;
        let out = Tensor::empty(rec.ctx, &[n, self.out_dim], feats.dtype)?;
        linear::linear(rec, &mid, &self.l2, Some(&self.b2), &out)?;
        Ok(out)
    }

    /// Projected tile features → the image's embedding sequence `(plan.n_tokens, text_hidden)`.
    pub fn merge(&self, rec: &mut Recorder, projected: &Tensor, plan: &AnyresPlan, cells: u32) -> Result<Tensor> {
        let out = Tensor::empty(rec.ctx, &[plan.n_tokens as usize, self.out_dim], projected.dtype)?;
        merge::merge(rec, projected, &self.newline, &out, plan, cells)?;
        Ok(out)
    }
}
