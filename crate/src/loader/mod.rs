//! Getting a model's tensors onto the GPU.
//! - [`plan`]: the runtime's tensors by name and how each is made from a checkpoint (shared with the converter).
//! - [`manifest`]: the converted form: `manifest.json` and its shards (docs/FORMAT.md).
//! - [`stream`]: uploads a converted model from its shards in bounded pieces, checking every shard's SHA-256.
//! - [`from_checkpoint`]: a checkpoint directory encoded and uploaded at load (native tools and tests).

pub mod manifest;
pub mod plan;
pub mod stream;

use std::collections::HashMap;

use crate::gpu::tensor::Weight;
use crate::gpu::{Context, DType, Tensor};
use crate::model::config::ModelConfig;
use crate::weights::WeightSource;
use crate::{Error, Result};
use plan::{Kind, QuantPlan};

/// A tensor on the GPU.
pub enum Loaded {
    Vector(Tensor),
    Matrix(Weight),
}

/// The model's tensors on the GPU by runtime name ([`plan::specs`]); the model takes them out as it builds.
#[derive(Default)]
pub struct Tensors {
    map: HashMap<String, Loaded>,
}

impl Tensors {
    pub fn insert(&mut self, name: String, t: Loaded) {
        self.map.insert(name, t);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The f32 vector `name` of `len` values.
    pub fn vector(&mut self, name: &str, len: usize) -> Result<Tensor> {
        match self.map.remove(name) {
            Some(Loaded::Vector(t)) if t.len() == len => Ok(t),
            Some(Loaded::Vector(t)) => Err(Error::Checkpoint(format!("{name} has {} values, expected {len}", t.len()))),
            Some(Loaded::Matrix(_)) => Err(Error::Checkpoint(format!("{name} is a matrix, expected a vector"))),
            None => Err(Error::Checkpoint(format!("the model has no tensor {name}"))),
        }
    }

    /// The `(n, k)` matrix `name`.
    pub fn matrix(&mut self, name: &str, n: usize, k: usize) -> Result<Weight> {
        match self.map.remove(name) {
            Some(Loaded::Matrix(w)) if (w.n, w.k) == (n, k) => Ok(w),
            Some(Loaded::Matrix(w)) => Err(Error::Checkpoint(format!("{name} is ({}, {}), expected ({n}, {k})", w.n, w.k))),
            Some(Loaded::Vector(_)) => Err(Error::Checkpoint(format!("{name} is a vector, expected a matrix"))),
            None => Err(Error::Checkpoint(format!("the model has no tensor {name}"))),
        }
    }
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
