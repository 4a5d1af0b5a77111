//! varco-web: VARCO-VISION-14B (SigLIP + MLP projector + Qwen2.5-14B) on WebGPU, natively through wgpu and in
//! the browser through wasm32.
//!
//! Layers, each using only those below it: the runtime ([`session`], [`generate`], and its callers: the CLI,
//! [`web`], [`bench`]) → [`loader`] → [`model`] → [`kernels`] → [`gpu`]; beside them the CPU-only pieces
//! ([`image`], [`tokenizer`], [`chat`], [`answer`], [`quant`], [`weights`]) and the [`reference`], which shares
//! nothing with the GPU path it checks.
//!
//! - [`gpu`]: one WebGPU context for native and wasm32 (adapter limits, shader-f16 and subgroup detection),
//!   activation tensors, weights split over several bindings when larger than the binding limit, a pipeline
//!   cache keyed by shader and defines, and a recorder that turns a whole step into one command buffer.
//! - [`quant`]: the 4-bit and 8-bit weight formats (groups of 32, symmetric, f16 scales), CPU quantize and
//!   dequantize.
//! - [`kernels`]: typed constructors for every hand-written WGSL kernel in `shaders/`.
//! - [`model`]: the config (both checkpoint layouts), the vision tower, projector and merge, the Qwen2
//!   decoder with its KV cache, chunked prefill, and the decode step with its workspace made once.
//! - [`loader`]: the runtime's tensors by name (shared with the converter), converted models (manifest and
//!   verified shards streamed into GPU buffers), checkpoints encoded at load.
//! - [`session`]: one model answering conversations for every caller — the memory plan, prefix reuse
//!   across requests, generation, one [`session::Answer`].
//! - [`image`]: decoding and the anyres_max_9 tiling, Pillow-equivalent, with the image-token count.
//! - [`tokenizer`], [`chat`]: the real tokenizer, a streaming detokenizer, the chat template and the image
//!   placeholder in both checkpoint conventions.
//! - [`weights`]: checkpoints in both layouts, memory-mapped or from bytes.
//! - [`answer`]: `<obj>`/`<char>`/`<bbox>` answers into spans and boxes; the task prompts.
//! - [`reference`]: the same model on candle-core (CPU, f32), for tests and `varco run --check`.
//! - [`convert`]: `varco convert`; [`bench`]: `varco bench kernels|model` (the model's also in wasm, feature
//!   `bench`); [`web`]: the browser's `Engine`.

pub mod error;
pub mod generate;
pub mod answer;
pub mod chat;
pub mod gpu;
pub mod image;
pub mod kernels;
pub mod loader;
pub mod model;
pub mod quant;
pub mod session;
pub mod tokenizer;
pub mod weights;

#[cfg(any(not(target_arch = "wasm32"), feature = "bench"))]
pub mod bench;
#[cfg(not(target_arch = "wasm32"))]
pub mod convert;
#[cfg(not(target_arch = "wasm32"))]
pub mod draw;
#[cfg(not(target_arch = "wasm32"))]
pub mod reference;

#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
