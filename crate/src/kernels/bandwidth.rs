//! The read-bandwidth probe (bandwidth.wgsl): reads a whole buffer once; the model benchmark's roofline.

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
