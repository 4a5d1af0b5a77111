//! One error type for the library, grouped by subsystem. The CLI and tests wrap it in anyhow; `web.rs`
//! turns it into a JS error of the npm package's class ([`Error::class`]) with the same message.
//!
//! What the model is (a checkpoint, a converted directory, its tokenizer and template) fails as
//! [`Error::Checkpoint`], [`Error::Tokenizer`] or [`Error::Template`]; what a request asks (a conversation
//! longer than the context, an image where the prompt has no place for one) fails as [`Error::Request`] and
//! leaves the model as it was.

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
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    #[error("{what} needs {needed} bytes but the adapter allows at most {limit}")]
    TooLarge { what: String, needed: u64, limit: u64 },
    #[error("the GPU ran out of memory for {what} ({:.1} MB): {detail}", *.bytes as f64 / 1e6)]
    OutOfMemory { what: String, bytes: u64, detail: String },

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

    // --- requests ---
    #[error("{0}")]
    Request(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn kernel(kernel: &'static str, message: impl Into<String>) -> Self {
        Error::Kernel { kernel, message: message.into() }
    }

    pub(crate) fn request(message: impl Into<String>) -> Self {
        Error::Request(message.into())
    }

    /// The npm package's error class for this error (web/src/errors.ts): the one mapping from errors to
    /// what a page can switch on.
    pub fn class(&self) -> &'static str {
        match self {
            Error::NoAdapter(_) | Error::Device(_) => "NoWebGPUError",
            Error::DeviceLost(_) => "GPUDeviceLostError",
            Error::TooLarge { .. } | Error::OutOfMemory { .. } => "GPUMemoryError",
            Error::Checkpoint(_) | Error::Tokenizer(_) | Error::Template(_) | Error::Quant(_) => "ModelFormatError",
            Error::Readback(_) | Error::Shader { .. } | Error::Kernel { .. } | Error::Image(_) | Error::Request(_) => "EngineError",
        }
    }
}
