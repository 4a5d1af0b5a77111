//! Next-token choice on the GPU (sample.wgsl): argmax, or temperature + top-k + top-p with a given uniform
//! draw, so a decode step reads back a single u32.

use crate::gpu::shader::{ARGMAX, SAMPLE};
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

    /// Whether these settings choose the first largest logit ([`sample`] takes [`argmax`] for them).
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }
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

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ArgmaxParams {
    n: u32,
    per: u32,
    groups: u32,
    _p: u32,
}

/// Workgroups of the greedy choice's first pass.
pub const ARGMAX_GROUPS: u32 = 128;
const ARGMAX_WG: u32 = 256;

/// u32 elements of the scratch [`sample`] needs for the greedy choice.
pub const SCRATCH_LEN: usize = 2 * ARGMAX_GROUPS as usize;

/// Writes the chosen token id of the `logits` row into `out[0]` (u32). `u` is uniform in [0, 1). Greedy
/// choices take two passes over many workgroups (argmax.wgsl), with `scratch` (u32, [`SCRATCH_LEN`]) between
/// them; the others one workgroup (sample.wgsl).
pub fn sample(rec: &mut Recorder, logits: &Tensor, out: &Tensor, scratch: &Tensor, s: SampleArgs, u: f32) -> Result<()> {
    if s.is_greedy() {
        return argmax(rec, logits, out, scratch);
    }
    sample_one_workgroup(rec, logits, out, s, u)
}

/// The first index of the maximum of `logits` into `out[0]`, in two passes.
pub fn argmax(rec: &mut Recorder, logits: &Tensor, out: &Tensor, scratch: &Tensor) -> Result<()> {
    check("argmax", out.dtype == DType::U32 && !out.is_empty() && scratch.dtype == DType::U32 && scratch.len() >= SCRATCH_LEN, || "out and scratch must be u32 tensors".into())?;
    let n = logits.len() as u32;
    check("argmax", n > 0 && n < (1 << 24), || format!("{n} logits: need 1 ..= 2^24"))?;
    let groups = n.div_ceil(ARGMAX_WG).min(ARGMAX_GROUPS);
    let params = ArgmaxParams { n, per: n.div_ceil(groups), groups, _p: 0 };
    let base = base_defines(rec.ctx, logits.dtype, ARGMAX_WG)?;
    let b = vec![Binding::new(1, &logits.buffer), Binding::new(3, &scratch.buffer)];
    rec.dispatch(rec.ctx.pipeline(&ARGMAX, &base)?, &params, b, [groups, 1, 1]);
    let b = vec![Binding::new(2, &out.buffer), Binding::new(3, &scratch.buffer)];
    rec.dispatch(rec.ctx.pipeline(&ARGMAX, &base.flag("FINAL"))?, &params, b, [1, 1, 1]);
    Ok(())
}

/// The first index of the maximum of a row whose first pass a fused product wrote (`linear::Fused::PlainArgmax`:
/// `slots` pairs in `maxima`) into `out[0]`: argmax.wgsl's FINAL pass alone.
pub fn argmax_of_maxima(rec: &mut Recorder, maxima: &Tensor, slots: usize, out: &Tensor) -> Result<()> {
    check("argmax", out.dtype == DType::U32 && !out.is_empty() && maxima.dtype == DType::U32 && maxima.len() >= 2 * slots, || format!("out and maxima ({slots} pairs) must be u32 tensors"))?;
    check("argmax", slots > 0 && slots < (1 << 24), || format!("{slots} slots: need 1 ..= 2^24"))?;
    let params = ArgmaxParams { n: 0, per: 0, groups: slots as u32, _p: 0 };
    // thousands of slots for one workgroup: as many invocations as the device allows, each fewer loads deep
    let pipeline = rec.ctx.pipeline(&ARGMAX, &base_defines(rec.ctx, DType::F32, crate::kernels::wide_wg(rec.ctx))?.flag("FINAL"))?;
    rec.dispatch(pipeline, &params, vec![Binding::new(2, &out.buffer), Binding::new(3, &maxima.buffer)], [1, 1, 1]);
    Ok(())
}

/// Writes the chosen token id of the `logits` row into `out[0]` with one workgroup (sample.wgsl): any
/// setting, greedy included.
pub fn sample_one_workgroup(rec: &mut Recorder, logits: &Tensor, out: &Tensor, s: SampleArgs, u: f32) -> Result<()> {
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
