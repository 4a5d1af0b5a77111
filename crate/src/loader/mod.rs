//! Getting a model's tensors onto the GPU.
//! - [`plan`]: the runtime's tensors by name and how each is made from a checkpoint (shared with the converter).
//! - [`manifest`]: the converted form: `manifest.json` and its shards (docs/FORMAT.md).
//! - [`stream`]: uploads a converted model from its shards in bounded pieces, checking every shard's SHA-256.
//! - [`from_checkpoint`]: a checkpoint directory encoded and uploaded at load (native tools and tests), and
//!   [`load_checkpoint`]: the model built from it in a [`Precision`].

pub mod manifest;
pub mod plan;
pub mod stream;

use crate::gpu::tensor::Weight;
use crate::gpu::{Context, DType, Tensor};
use crate::model::config::ModelConfig;
use crate::model::{Loaded, Model, Tensors};
use crate::weights::WeightSource;
use crate::{Error, Result};
use plan::{Kind, QuantPlan};

/// How a checkpoint loaded directly is stored on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32 activations on the checkpoint's 16-bit weights: the exact path.
    F32,
    /// f16 activations on 16-bit weights (needs shader-f16).
    F16,
    /// The converter's default formats (4-bit LLM), encoded at load; f16 activations where the device has
    /// shader-f16, else f32.
    Q4,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "q4" => Ok(Precision::Q4),
            _ => Err(Error::request(format!("precision {s:?}: expected f32, f16 or q4"))),
        }
    }

    /// The activation type asked for (None: the device's best, [`crate::model::activation`]).
    pub fn act(self) -> Option<DType> {
        match self {
            Precision::F32 => Some(DType::F32),
            Precision::F16 => Some(DType::F16),
            Precision::Q4 => None,
        }
    }

    /// How the checkpoint's matrices are stored.
    pub fn plan(self) -> QuantPlan {
        match self {
            Precision::F32 | Precision::F16 => QuantPlan::F16,
            Precision::Q4 => QuantPlan::DEFAULT,
        }
    }
}

/// A checkpoint loaded directly: its tensors encoded as `precision` says, uploaded, and the model built.
pub fn load_checkpoint(ctx: &Context, w: &WeightSource, cfg: &ModelConfig, precision: Precision) -> Result<Model> {
    let act = crate::model::activation(ctx, precision.act())?;
    let mut t = from_checkpoint(ctx, w, cfg, &precision.plan())?;
    Model::new(ctx, cfg, act, &mut t)
}

/// Encodes every tensor of a checkpoint with `plan` and uploads it, one tensor at a time.
pub fn from_checkpoint(ctx: &Context, w: &WeightSource, cfg: &ModelConfig, plan: &QuantPlan) -> Result<Tensors> {
    let mut out = Tensors::default();
    for spec in plan::specs(cfg, plan, w.contains("language_model.lm_head.weight")) {
        let mut data = Vec::new();
        let scales = plan::encode(&spec, w, &mut |b| {
            data.extend_from_slice(b);
            Ok(())
        }, None)?;
        let t = match spec.kind {
            Kind::Vector { len } => Loaded::Vector(Tensor::from_bytes(ctx, data, &[len], DType::F32)?),
            Kind::Matrix { format, n, k } => Loaded::Matrix(Weight::from_arrays(ctx, format, n, k, &data, &scales, ctx.caps.max_binding)?),
        };
        out.insert(spec.name, t);
    }
    Ok(out)
}
