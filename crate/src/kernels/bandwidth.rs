//! The probes of bandwidth.wgsl: the read-bandwidth probe (reads a whole buffer once; the model benchmark's
//! roofline) and the FMA-throughput probe (what a WGSL kernel can reach in arithmetic at all); and the decode
//! step's use of the first, [`warm`].

use crate::gpu::shader::BANDWIDTH;
use crate::gpu::{Binding, DType, Recorder, Tensor};
use crate::kernels::base_defines;
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n4: u32,
    stride: u32,
    n4b: u32,
    _p1: u32,
    start: u32,
    start2: u32,
    _p: [u32; 2],
}

const WG: u32 = 256;

/// Reads every byte of `src` (a multiple of 16 bytes) with `workgroups` workgroups; `out`: u32, never written
/// in practice.
pub fn read(rec: &mut Recorder, src: &crate::gpu::GpuBuffer, out: &Tensor, workgroups: u32) -> Result<()> {
    let pipeline = rec.ctx.pipeline(&BANDWIDTH, &base_defines(rec.ctx, DType::F32, WG)?)?;
    let params = Params { n4: (src.size() / 16) as u32, stride: workgroups * WG, n4b: 0, _p1: 0, start: 0, start2: 0, _p: [0; 2] };
    rec.dispatch(pipeline, &params, vec![Binding::new(1, src), Binding::new(5, &out.buffer)], [workgroups, 1, 1]);
    Ok(())
}

/// Workgroups of a [`warm`] dispatch unless the decode shapes say otherwise (`DecodeShapes::warm_workgroups`):
/// enough invocations (65,536) for several 16-byte loads in flight on every multiprocessor of a large GPU, few
/// enough to leave room beside the dispatch it runs with.
pub const WARM_WORKGROUPS: u32 = 256;

/// Reads the bytes `a.1` of buffer `a.0` and then `b.1` of `b.0` (16-byte aligned ranges; a weight's codes and
/// scales, or two row ranges of one) so that the next dispatch to read them finds them in the GPU's cache:
/// recorded right after a dispatch that leaves the memory idle (decode attention at short context), it runs
/// beside it. `sink` (u32, any length) is bound for writing and never written in practice: it must be used by
/// no other dispatch of the pass, or a barrier would order the two.
pub fn warm(rec: &mut Recorder, a: (&crate::gpu::GpuBuffer, std::ops::Range<u64>), b: (&crate::gpu::GpuBuffer, std::ops::Range<u64>), sink: &Tensor, workgroups: u32) -> Result<()> {
    crate::kernels::check("warm", (1..=65_535).contains(&workgroups), || format!("{workgroups} workgroups"))?;
    for (buf, r) in [&a, &b] {
        crate::kernels::check("warm", r.start % 16 == 0 && r.end <= buf.size() && r.start <= r.end, || format!("bytes {r:?} of a {}-byte buffer", buf.size()))?;
    }
    let pipeline = rec.ctx.pipeline(&BANDWIDTH, &base_defines(rec.ctx, DType::F32, WG)?.flag("WARM"))?;
    let (n4, n4b) = (((a.1.end - a.1.start) / 16) as u32, ((b.1.end - b.1.start) / 16) as u32);
    let params = Params { n4, stride: workgroups * WG, n4b, _p1: 0, start: (a.1.start / 16) as u32, start2: (b.1.start / 16) as u32, _p: [0; 2] };
    rec.dispatch(pipeline, &params, vec![Binding::new(1, a.0), Binding::new(2, b.0), Binding::new(5, &sink.buffer)], [workgroups, 1, 1]);
    Ok(())
}

/// Steps of the FMA probe's loop: 8 vec4 FMAs each, 64 floating-point operations an invocation a step.
pub const FMA_STEPS: u32 = 1024;

/// How the FMA probe writes its operations: `fma()` or a multiply and an add, on vec4s or vec2s (the same
/// operations a step either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FmaForm {
    pub mul_add: bool,
    pub vec2: bool,
}

impl FmaForm {
    pub const ALL: [FmaForm; 4] = [FmaForm { mul_add: false, vec2: false }, FmaForm { mul_add: true, vec2: false }, FmaForm { mul_add: false, vec2: true }, FmaForm { mul_add: true, vec2: true }];

    /// Independent chains an invocation: 8 of vec4 or 16 of vec2.
    pub fn chains(self) -> u32 {
        if self.vec2 { 16 } else { 8 }
    }

    pub fn label(self) -> String {
        format!("{} {}", if self.mul_add { "a·b+c" } else { "fma" }, if self.vec2 { "vec2" } else { "vec4" })
    }
}

/// `workgroups · 256` invocations of [`FMA_STEPS`] steps of FMAs in `act` (f32, or f16 in pairs where the GPU
/// packs them): `workgroups · 256 · FMA_STEPS · 64` floating-point operations. `out` as for [`read`].
pub fn fma(rec: &mut Recorder, act: DType, form: FmaForm, out: &Tensor, workgroups: u32) -> Result<()> {
    let d = base_defines(rec.ctx, act, WG)?.flag("FMA").flag_if("FMA_MULADD", form.mul_add).flag_if("FMA_V2", form.vec2).value("CH", form.chains());
    let pipeline = rec.ctx.pipeline(&BANDWIDTH, &d)?;
    let params = Params { n4: FMA_STEPS, stride: 0.999f32.to_bits(), n4b: (-1.0f32).to_bits(), _p1: 0, start: 0, start2: 0, _p: [0; 2] };
    rec.dispatch(pipeline, &params, vec![Binding::new(5, &out.buffer)], [workgroups, 1, 1]);
    Ok(())
}
