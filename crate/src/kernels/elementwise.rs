//! Element-wise ops (elementwise.wgsl): residual add, bias add, GELU (tanh and erf), SiLU(gate)·up.

use crate::gpu::shader::ELEMENTWISE;
use crate::gpu::{Binding, DType, Recorder, Tensor};
use crate::kernels::{base_defines, check, grid, same_dtype, WG};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    width: u32,
    _p: [u32; 2],
}

fn run(rec: &mut Recorder, op: &'static str, act: DType, n: usize, width: usize, b: Vec<Binding>) -> Result<()> {
    let defines = base_defines(rec.ctx, act, WG)?.flag(op);
    let pipeline = rec.ctx.pipeline(&ELEMENTWISE, &defines)?;
    let params = Params { n: n as u32, width: width as u32, _p: [0; 2] };
    rec.dispatch(pipeline, &params, b, grid(rec.ctx, (n as u32).div_ceil(WG), 1));
    Ok(())
}

/// `a += b` (same shape).
pub fn add(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<()> {
    let act = same_dtype("add", &[a, b])?;
    check("add", a.len() == b.len(), || format!("{:?} + {:?}", a.shape, b.shape))?;
    run(rec, "ADD", act, a.len(), 1, vec![Binding::new(1, &a.buffer), Binding::new(2, &b.buffer)])
}

/// `x[i] += bias[i % bias.len()]`: a bias over the last dimension, or any f32 pattern repeated over x (the
/// position embedding over a batch of tiles).
pub fn bias_add(rec: &mut Recorder, x: &Tensor, bias: &Tensor) -> Result<()> {
    let w = bias.len();
    check("bias_add", w > 0 && x.len() % w == 0 && bias.dtype == DType::F32, || format!("an f32 bias of {w} does not tile {:?}", x.shape))?;
    run(rec, "BIAS", x.dtype, x.len(), w, vec![Binding::new(1, &x.buffer), Binding::new(2, &bias.buffer)])
}

/// GELU with the tanh approximation, in place.
pub fn gelu_tanh(rec: &mut Recorder, x: &Tensor) -> Result<()> {
    run(rec, "GELU_TANH", x.dtype, x.len(), 1, vec![Binding::new(1, &x.buffer)])
}

/// Exact (erf) GELU, in place.
pub fn gelu_erf(rec: &mut Recorder, x: &Tensor) -> Result<()> {
    run(rec, "GELU_ERF", x.dtype, x.len(), 1, vec![Binding::new(1, &x.buffer)])
}

/// `y[t, i] = silu(gu[t, i]) · gu[t, I + i]` for gu `(T, 2I)` (gate and up projections fused), y `(T, I)`.
pub fn silu_mul(rec: &mut Recorder, gu: &Tensor, y: &Tensor) -> Result<()> {
    let act = same_dtype("silu_mul", &[gu, y])?;
    let i = *y.shape.last().unwrap();
    check("silu_mul", gu.len() == 2 * y.len() && *gu.shape.last().unwrap() == 2 * i, || {
        format!("gate·up {:?} does not pair with output {:?}", gu.shape, y.shape)
    })?;
    run(rec, "SILU_MUL", act, y.len(), i, vec![Binding::new(1, &gu.buffer), Binding::new(3, &y.buffer)])
}
