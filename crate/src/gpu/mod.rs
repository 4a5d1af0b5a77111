//! The WebGPU layer: getting a device ([`Context`]), buffers and tensors ([`tensor`]), WGSL sources and their
//! variants ([`shader`]), and recording a step of work into one command buffer ([`Recorder`]).

pub mod buffer;
mod context;
mod recorder;
pub mod shader;
pub mod tensor;

pub use buffer::{GpuBuffer, Live, LiveCounts};
pub use context::{browser_wgsl_has, on_device_lost, Caps, Context, ContextOptions, CoopShape, Counts, DecodeTuning, Stats, TiledMatmul, ADAPTER_RETRY_MS};
pub use recorder::{Binding, Recorder, StepCache};
pub use shader::{Defines, Shader};
pub use tensor::{DType, Tensor};
