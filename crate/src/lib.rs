//! varco-web: VARCO-VISION-14B (SigLIP + MLP projector + Qwen2.5-14B) on WebGPU, natively through wgpu and in
//! the browser through wasm32.
//!
//! What this crate does today:
//! - [`gpu`]: one WebGPU context for native and wasm32 (adapter limits, shader-f16 and subgroup detection),
//!   activation tensors, weights split over several bindings when larger than the binding limit, a pipeline
//!   cache keyed by shader and defines, and a recorder that turns a whole step into one command buffer.
//! - [`quant`]: the 4-bit weight format (group 32, symmetric, f16 scales) and its CPU quantize/dequantize.
//! - [`kernels`]: typed constructors for every hand-written WGSL kernel in `shaders/`.
//! - [`image`]: decoding and the anyres_max_9 tiling, Pillow-equivalent, with the image-token count.
//! - [`tokenizer`], [`chat`]: the real tokenizer, a streaming detokenizer, the chat template and the image
//!   placeholder in both checkpoint conventions.
//! - [`weights`], [`model`]: checkpoints in both layouts, the config, the vision tower and projector.
//! - [`reference`]: the same model on candle-core (CPU, f32), for tests and `varco run --check`.
//! - [`answer`]: `<obj>`/`<char>`/`<bbox>` answers into spans and boxes; the task prompts.
//! - [`bench`]: the kernel benchmark behind `varco bench kernels`.
//!
//! What it does not do (yet): the model, the loader and the web API arrive with later issues.

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
pub mod tokenizer;
pub mod weights;

#[cfg(not(target_arch = "wasm32"))]
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
