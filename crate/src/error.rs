//! One error type for the library, grouped by subsystem. The CLI and tests wrap it in anyhow; `wasm.rs`
//! turns it into a JS error with the same message.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    // --- GPU ---
    #[error("no WebGPU adapter found: {0}")]
    NoAdapter(String),
    #[error("the GPU refused the device: {0}")]
    Device(String),
    #[error("GPU buffer readback failed: {0}")]
    Readback(String),
    #[error("shader {shader}: {message}")]
    Shader { shader: String, message: String },
    #[error("{what} needs {needed} bytes but the adapter allows at most {limit}")]
    TooLarge { what: String, needed: u64, limit: u64 },

    // --- kernels ---
    #[error("kernel {kernel}: {message}")]
    Kernel { kernel: &'static str, message: String },

    // --- checkpoints ---
    #[error("checkpoint: {0}")]
    Checkpoint(String),

    // --- images ---
    #[error("image: {0}")]
    Image(String),

    // --- text ---
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),

    // --- quantization ---
    #[error("quantization: {0}")]
    Quant(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn kernel(kernel: &'static str, message: impl Into<String>) -> Self {
        Error::Kernel { kernel, message: message.into() }
    }
}
