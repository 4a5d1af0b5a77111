//! RMSNorm and LayerNorm (norm.wgsl), one workgroup per row. Weights and biases are f32 vectors.

use crate::gpu::shader::NORM;
use crate::gpu::{Binding, DType, Recorder, Tensor};
use crate::kernels::{base_defines, check, grid, same_dtype, wide_wg, WG};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_rows: u32,
    n: u32,
    x_stride: u32,
    y_stride: u32,
    eps: f32,
    _p: [u32; 3],
}

fn norm(rec: &mut Recorder, x: &Tensor, w: &Tensor, b: Option<&Tensor>, y: &Tensor, eps: f32) -> Result<()> {
    let act = same_dtype("norm", &[x, y])?;
    let n = *x.shape.last().unwrap();
    let rows = x.len() / n;
    check("norm", y.len() == x.len() && w.len() == n && w.dtype == DType::F32, || {
        format!("x {:?}, y {:?}, weight {:?} do not match", x.shape, y.shape, w.shape)
    })?;
    if let Some(b) = b {
        check("norm", b.len() == n && b.dtype == DType::F32, || "bias must be f32 of the row width".into())?;
    }
    // A lone row (decode) gets the widest workgroup; many rows fill the GPU with 256-wide ones.
    let wg = if rows < 64 { wide_wg(rec.ctx) } else { WG };
    let defines = base_defines(rec.ctx, act, wg)?.flag_if("LAYER", b.is_some());
    let pipeline = rec.ctx.pipeline(&NORM, &defines)?;
    let params = Params { n_rows: rows as u32, n: n as u32, x_stride: n as u32, y_stride: n as u32, eps, _p: [0; 3] };
    let mut bind = vec![Binding::new(1, &x.buffer), Binding::new(2, &w.buffer), Binding::new(4, &y.buffer)];
    if let Some(b) = b {
        bind.push(Binding::new(3, &b.buffer));
    }
    rec.dispatch(pipeline, &params, bind, grid(rec.ctx, rows as u32, 1));
    Ok(())
}

/// `y = x · rsqrt(mean(x²) + eps) · w` over the last dimension.
pub fn rms_norm(rec: &mut Recorder, x: &Tensor, w: &Tensor, y: &Tensor, eps: f32) -> Result<()> {
    norm(rec, x, w, None, y, eps)
}

/// `y = (x − mean) · rsqrt(var + eps) · w + b` over the last dimension.
pub fn layer_norm(rec: &mut Recorder, x: &Tensor, w: &Tensor, b: &Tensor, y: &Tensor, eps: f32) -> Result<()> {
    norm(rec, x, w, Some(b), y, eps)
}
