//! Bilinear resize of a (h, w, c) feature map (resize.wgsl), PyTorch `align_corners=False` semantics.

use crate::gpu::shader::RESIZE;
use crate::gpu::{Binding, Recorder, Tensor};
use crate::kernels::{base_defines, check, grid, same_dtype, WG};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    in_h: u32,
    in_w: u32,
    out_h: u32,
    out_w: u32,
    c: u32,
    _p: [u32; 3],
}

/// `x` `(in_h, in_w, c)` → `y` `(out_h, out_w, c)`.
pub fn bilinear(rec: &mut Recorder, x: &Tensor, y: &Tensor, in_hw: (u32, u32), out_hw: (u32, u32), c: u32) -> Result<()> {
    let act = same_dtype("resize", &[x, y])?;
    check("resize", x.len() == (in_hw.0 * in_hw.1 * c) as usize && y.len() == (out_hw.0 * out_hw.1 * c) as usize, || {
        format!("{:?} → {:?} does not match {in_hw:?} → {out_hw:?} × {c}", x.shape, y.shape)
    })?;
    check("resize", in_hw.0 > 0 && in_hw.1 > 0 && out_hw.0 > 0 && out_hw.1 > 0, || "empty feature map".into())?;
    let defines = base_defines(rec.ctx, act, WG)?;
    let pipeline = rec.ctx.pipeline(&RESIZE, &defines)?;
    let params = Params { in_h: in_hw.0, in_w: in_hw.1, out_h: out_hw.0, out_w: out_hw.1, c, _p: [0; 3] };
    let n = out_hw.0 * out_hw.1 * c;
    rec.dispatch(pipeline, &params, vec![Binding::new(1, &x.buffer), Binding::new(2, &y.buffer)], grid(rec.ctx, n.div_ceil(WG), 1));
    Ok(())
}
