//! The probes of bandwidth.wgsl: the read-bandwidth probe (reads a whole buffer once; the model benchmark's
//! roofline) and the FMA-throughput probe (what a WGSL kernel can reach in arithmetic at all).

use crate::gpu::shader::BANDWIDTH;
use crate::gpu::{Binding, DType, Recorder, Tensor};
use crate::kernels::base_defines;
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n4: u32,
    stride: u32,
    _p: [u32; 2],
}

const WG: u32 = 256;

/// Reads every byte of `src` (a multiple of 16 bytes) with `workgroups` workgroups; `out` must hold
/// `workgroups · 256` u32 (never written in practice).
pub fn read(rec: &mut Recorder, src: &crate::gpu::GpuBuffer, out: &Tensor, workgroups: u32) -> Result<()> {
    let pipeline = rec.ctx.pipeline(&BANDWIDTH, &base_defines(rec.ctx, DType::F32, WG)?)?;
    let params = Params { n4: (src.size() / 16) as u32, stride: workgroups * WG, _p: [0; 2] };
    rec.dispatch(pipeline, &params, vec![Binding::new(1, src), Binding::new(5, &out.buffer)], [workgroups, 1, 1]);
    Ok(())
}

/// Steps of the FMA probe's loop: 8 vec4 FMAs each, 64 floating-point operations an invocation a step.
pub const FMA_STEPS: u32 = 1024;

/// `workgroups · 256` invocations of [`FMA_STEPS`] steps of FMAs in `act` (f32, or f16 in pairs where the GPU
/// packs them): `workgroups · 256 · FMA_STEPS · 64` floating-point operations. `out` as for [`read`].
pub fn fma(rec: &mut Recorder, act: DType, out: &Tensor, workgroups: u32) -> Result<()> {
    let pipeline = rec.ctx.pipeline(&BANDWIDTH, &base_defines(rec.ctx, act, WG)?.flag("FMA"))?;
    let params = Params { n4: FMA_STEPS, stride: 0.999f32.to_bits(), _p: [(-1.0f32).to_bits(), 0] };
    rec.dispatch(pipeline, &params, vec![Binding::new(5, &out.buffer)], [workgroups, 1, 1]);
    Ok(())
}
