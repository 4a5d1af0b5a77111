//! SigLIP (the vision tower, 26 pre-LN layers, no post-layernorm on the feature path), the mlp2x_gelu
//! projector, and the anyres merge into the image's embedding sequence — on the GPU.
//! Reference: transformers SiglipVisionModel / LlavaOnevision `get_image_features` + `pack_image_features`
//! (docs: MODEL.md §2.2–2.3); checked against the fixtures' `vision_last_hidden` and `image_features`.

use crate::gpu::tensor::Weight;
use crate::gpu::{DType, Recorder, Tensor};
use crate::image::AnyresPlan;
use crate::kernels::attention::{self, AttnArgs};
use crate::kernels::patch_embed::{self, PatchGeometry};
use crate::kernels::{elementwise, linear, merge, norm};
use crate::model::config::VisionConfig;
use crate::model::Tensors;
use crate::Result;

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
    fn new(t: &mut Tensors, cfg: &VisionConfig, i: usize) -> Result<Self> {
        let p = format!("vision.{i}");
        let (h, m) = (cfg.hidden, cfg.intermediate);
        let v = |t: &mut Tensors, what: &str, n: usize| t.vector(&format!("{p}.{what}"), n);
        Ok(Layer {
            ln1: (v(t, "ln1_w", h)?, v(t, "ln1_b", h)?),
            qkv: t.matrix(&format!("{p}.qkv"), 3 * h, h)?,
            qkv_b: v(t, "qkv_bias", 3 * h)?,
            out: t.matrix(&format!("{p}.out"), h, h)?,
            out_b: v(t, "out_bias", h)?,
            ln2: (v(t, "ln2_w", h)?, v(t, "ln2_b", h)?),
            fc1: t.matrix(&format!("{p}.fc1"), m, h)?,
            fc1_b: v(t, "fc1_bias", m)?,
            fc2: t.matrix(&format!("{p}.fc2"), h, m)?,
            fc2_b: v(t, "fc2_bias", h)?,
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
    /// Takes the tower's tensors out of `t`.
    pub fn new(t: &mut Tensors, cfg: &VisionConfig) -> Result<Self> {
        let (h, p) = (cfg.hidden, cfg.patch_size);
        let n_pos = cfg.cells() * cfg.cells();
        Ok(VisionTower {
            cfg: cfg.clone(),
            patch: t.matrix("vision.patch", h, 3 * p * p)?,
            patch_b: t.vector("vision.patch_bias", h)?,
            pos: t.vector("vision.pos", n_pos * h)?,
            layers: (0..cfg.layers).map(|i| Layer::new(t, cfg, i)).collect::<Result<_>>()?,
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
                let args = AttnArgs::fused(per_tile as u32, c.heads as u32, c.head_dim as u32, (3 * h) as u32, row0).with_o_offset((t * per_tile * h) as u32);
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
    /// Takes the projector's tensors and the image newline out of `t`.
    pub fn new(t: &mut Tensors, vision_hidden: usize, text_hidden: usize) -> Result<Self> {
        Ok(Projector {
            l1: t.matrix("projector.fc1", text_hidden, vision_hidden)?,
            b1: t.vector("projector.fc1_bias", text_hidden)?,
            l2: t.matrix("projector.fc2", text_hidden, text_hidden)?,
            b2: t.vector("projector.fc2_bias", text_hidden)?,
            newline: t.vector("image_newline", text_hidden)?,
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
