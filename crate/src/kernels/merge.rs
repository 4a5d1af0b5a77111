//! The anyres merge (merge.wgsl): projected tile features → the image's embedding sequence.

use crate::gpu::shader::MERGE;
use crate::gpu::{Binding, DType, Recorder, Tensor};
use crate::image::AnyresPlan;
use crate::kernels::{base_defines, check, grid, same_dtype, WG};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    cells: u32,
    grid_w: u32,
    rows_u: u32,
    cols_u: u32,
    pad_r: u32,
    pad_c: u32,
    rows: u32,
    cols: u32,
    c: u32,
    _p: [u32; 3],
}

/// `feats` `(1 + tiles, cells², c)` (base first, in the plan's tile order), `newline` f32 `(c)` →
/// `out` `(plan.n_tokens, c)`.
pub fn merge(rec: &mut Recorder, feats: &Tensor, newline: &Tensor, out: &Tensor, plan: &AnyresPlan, cells: u32) -> Result<()> {
    let act = same_dtype("merge", &[feats, out])?;
    let c = *out.shape.last().unwrap() as u32;
    let tiles = 1 + plan.grid_wh.0 * plan.grid_wh.1;
    check("merge", feats.len() == (tiles * cells * cells * c) as usize, || format!("features {:?} are not {tiles} tiles of {cells}² × {c}", feats.shape))?;
    check("merge", out.len() == (plan.n_tokens * c) as usize, || format!("out {:?} is not {} tokens × {c}", out.shape, plan.n_tokens))?;
    check("merge", newline.len() == c as usize && newline.dtype == DType::F32, || "image_newline must be f32 of the width".into())?;
    let (full_r, full_c) = (cells * plan.grid_wh.1, cells * plan.grid_wh.0);
    let (rows_u, cols_u) = plan.unpadded_rows_cols;
    let params = Params {
        cells,
        grid_w: plan.grid_wh.0,
        rows_u,
        cols_u,
        pad_r: (full_r - rows_u) / 2,
        pad_c: (full_c - cols_u) / 2,
        rows: plan.rows_cols.0,
        cols: plan.rows_cols.1,
        c,
        _p: [0; 3],
    };
    let pipeline = rec.ctx.pipeline(&MERGE, &base_defines(rec.ctx, act, WG)?)?;
    let n = plan.n_tokens * c;
    let b = vec![Binding::new(1, &feats.buffer), Binding::new(2, &newline.buffer), Binding::new(3, &out.buffer)];
    rec.dispatch(pipeline, &params, b, grid(rec.ctx, n.div_ceil(WG), 1));
    Ok(())
}
