//! The model's tensors on the GPU by runtime name (the names of `loader::plan::specs`), whatever their
//! origin (a checkpoint encoded at load, a converted model streamed in, random weights for the benchmark);
//! the model takes them out as it builds.

use std::collections::HashMap;

use crate::gpu::tensor::Weight;
use crate::gpu::Tensor;
use crate::{Error, Result};

/// A tensor on the GPU.
pub enum Loaded {
    Vector(Tensor),
    Matrix(Weight),
}

/// The tensors by name; the model takes them out as it builds.
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

