//! Next-token choice on the GPU (sample.wgsl): argmax, or temperature + top-k + top-p with a given uniform
//! draw, so a decode step reads back a single u32.

use crate::gpu::shader::SAMPLE;
use crate::gpu::{Binding, DType, Recorder, Tensor};
use crate::kernels::{base_defines, check, wide_wg};
use crate::Result;

/// What the kernel computes: `temperature <= 0` is argmax; `top_k = 0` and `top_p = 1` switch those filters
/// off. (A request's sampling options are the runtime's, [`crate::generate::Sampling`]; this is the kernel's
/// view of them.)
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleArgs {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
}

impl SampleArgs {
    pub const ARGMAX: SampleArgs = SampleArgs { temperature: 0.0, top_k: 0, top_p: 1.0 };
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    top_k: u32,
    top_p: f32,
    temperature: f32,
    u: f32,
    _p: [u32; 3],
}

/// Writes the chosen token id of the `logits` row into `out[0]` (u32). `u` is uniform in [0, 1).
pub fn sample(rec: &mut Recorder, logits: &Tensor, out: &Tensor, s: SampleArgs, u: f32) -> Result<()> {
    check("sample", out.dtype == DType::U32 && !out.is_empty(), || "out must be a u32 tensor".into())?;
    check("sample", (0.0..1.0).contains(&u), || format!("u = {u} is not in [0, 1)"))?;
    let n = logits.len();
    check("sample", n > 0 && n < (1 << 24), || format!("{n} logits: need 1 ..= 2^24"))?;
    let defines = base_defines(rec.ctx, logits.dtype, wide_wg(rec.ctx))?;
    let pipeline = rec.ctx.pipeline(&SAMPLE, &defines)?;
    let params = Params { n: n as u32, top_k: s.top_k, top_p: s.top_p, temperature: s.temperature, u, _p: [0; 3] };
    rec.dispatch(pipeline, &params, vec![Binding::new(1, &logits.buffer), Binding::new(2, &out.buffer)], [1, 1, 1]);
    Ok(())
}
