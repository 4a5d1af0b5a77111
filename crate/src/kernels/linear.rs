//! `y = x · Wᵀ (+ bias)`: matvec.wgsl for a few rows (decode), matmul.wgsl for many (prefill, vision).
//! A weight split over several buffers becomes one dispatch per part, each writing its column range of y.

use crate::gpu::shader::{MATMUL, MATVEC};
use crate::gpu::tensor::Weight;
use crate::gpu::{Binding, Recorder, Tensor};
use crate::kernels::{base_defines, check, grid, same_dtype, weight_defines};
use crate::Result;

/// Rows of x up to which the matrix-vector kernel is used, one x row a workgroup.
pub const MATVEC_MAX_ROWS: usize = 4;

/// Rows of x up to which the matrix-vector kernel's MULTI variant is used (a short prompt, such as a
/// follow-up question: a full matmul tile would compute mostly padding), [`MULTI_ROWS`] x rows a workgroup.
pub const MULTI_MAX_ROWS: usize = 64;

/// x rows a workgroup of the MULTI variant.
pub const MULTI_ROWS: u32 = 8;

/// The MULTI variant's workgroup: invocations and output rows.
pub const MULTI_SHAPE: MatvecShape = MatvecShape { wg: 64, rows: 2 };

/// Invocations and output rows per workgroup of the matrix-vector kernel.
#[derive(Clone, Copy, Debug)]
pub struct MatvecShape {
    pub wg: u32,
    pub rows: u32,
}

pub const MATVEC_SHAPE: MatvecShape = MatvecShape { wg: 32, rows: 2 };

/// The matrix-vector shape for an `(n, k)` weight, from the H200 sweep in BENCHMARKS.md: narrow workgroups
/// win everywhere; four rows a workgroup for the vocabulary-sized lm_head, two elsewhere, and 64 wide for
/// the small k/v projections (more invocations in flight).
pub fn matvec_shape(n: usize, _k: usize) -> MatvecShape {
    if n >= 65536 {
        MatvecShape { wg: 32, rows: 4 }
    } else if n <= 2048 {
        MatvecShape { wg: 64, rows: 2 }
    } else {
        MATVEC_SHAPE
    }
}

/// Mirrors `shaders/common/linear_io.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    kb: u32,
    y_offset: u32,
    y_stride: u32,
    x_stride4: u32,
    _p: u32,
}

fn check_shapes(x: &Tensor, w: &Weight, bias: Option<&Tensor>, y: &Tensor) -> Result<(usize, usize)> {
    let k = *x.shape.last().unwrap();
    let m = x.len() / k;
    check("linear", k == w.k, || format!("x has {k} columns, W has {} inputs", w.k))?;
    check("linear", k % 4 == 0, || format!("inputs ({k}) must be a multiple of 4"))?;
    let ys = *y.shape.last().unwrap();
    check("linear", ys == w.n && y.len() / ys == m, || format!("y {:?} does not fit x {:?} · W({}, {})ᵀ", y.shape, x.shape, w.n, w.k))?;
    if let Some(b) = bias {
        check("linear", b.len() == w.n && b.dtype == crate::gpu::DType::F32, || "bias must be f32 of length n".into())?;
    }
    Ok((m, k))
}

impl Params {
    fn new(m: usize, w: &Weight, part: &crate::gpu::tensor::WeightPart) -> Self {
        Params {
            m: m as u32,
            n: part.rows.len() as u32,
            k: w.k as u32,
            kb: w.format.blocks_per_row(w.k),
            y_offset: part.rows.start as u32,
            y_stride: w.n as u32,
            x_stride4: (w.k / 4) as u32,
            _p: 0,
        }
    }
}

/// x, y, one part of W (and its scales) and the bias, at the bindings of linear_io.wgsl's kernels.
fn bindings(x: &Tensor, y: &Tensor, part: &crate::gpu::tensor::WeightPart, bias: Option<&Tensor>) -> Vec<Binding> {
    let mut b = vec![Binding::new(1, &x.buffer), Binding::new(5, &y.buffer), Binding::new(2, &part.data)];
    if let Some(s) = &part.scales {
        b.push(Binding::new(3, s));
    }
    if let Some(bias) = bias {
        b.push(Binding::new(4, &bias.buffer));
    }
    b
}

/// `y = x · Wᵀ + bias`, choosing the kernel by the number of rows.
pub fn linear(rec: &mut Recorder, x: &Tensor, w: &Weight, bias: Option<&Tensor>, y: &Tensor) -> Result<()> {
    let (m, _) = check_shapes(x, w, bias, y)?;
    if m <= MATVEC_MAX_ROWS {
        matvec(rec, x, w, bias, y, matvec_shape(w.n, w.k))
    } else if m <= MULTI_MAX_ROWS {
        matvec_multi(rec, x, w, bias, y, MULTI_SHAPE, MULTI_ROWS)
    } else {
        matmul(rec, x, w, bias, y)
    }
}

/// The matrix-vector kernel's MULTI variant: `mx` rows of x a workgroup share each weight block.
pub fn matvec_multi(rec: &mut Recorder, x: &Tensor, w: &Weight, bias: Option<&Tensor>, y: &Tensor, shape: MatvecShape, mx: u32) -> Result<()> {
    let (m, _) = check_shapes(x, w, bias, y)?;
    let act = same_dtype("matvec", &[x, y])?;
    let defines = weight_defines(base_defines(rec.ctx, act, shape.wg)?
        .value("R", shape.rows)
        .flag("MULTI")
        .value("MX", mx)
        .flag_if("BIAS", bias.is_some()), w.format);
    let pipeline = rec.ctx.pipeline(&MATVEC, &defines)?;
    let groups = (m as u32).div_ceil(mx);
    check("matvec", groups <= rec.ctx.caps.max_workgroups_per_dim, || format!("{m} rows are too many for one dispatch"))?;
    for part in &w.parts {
        let n = part.rows.len() as u32;
        let params = Params::new(m, w, part);
        rec.dispatch(pipeline.clone(), &params, bindings(x, y, part, bias), grid(rec.ctx, n.div_ceil(shape.rows), groups));
    }
    Ok(())
}

/// The matrix-vector kernel, one workgroup row per row of x.
pub fn matvec(rec: &mut Recorder, x: &Tensor, w: &Weight, bias: Option<&Tensor>, y: &Tensor, shape: MatvecShape) -> Result<()> {
    let (m, _) = check_shapes(x, w, bias, y)?;
    let act = same_dtype("matvec", &[x, y])?;
    let defines = weight_defines(base_defines(rec.ctx, act, shape.wg)?
        .value("R", shape.rows)
        .flag_if("BIAS", bias.is_some()), w.format);
    let pipeline = rec.ctx.pipeline(&MATVEC, &defines)?;
    for part in &w.parts {
        let n = part.rows.len() as u32;
        let params = Params::new(0, w, part);
        let g = grid(rec.ctx, n.div_ceil(shape.rows), m as u32);
        let b = bindings(x, y, part, bias);
        rec.dispatch(pipeline.clone(), &params, b, g);
    }
    Ok(())
}

/// Output tile side of the matrix-matrix kernel that fits this device's workgroup memory.
pub fn matmul_tile(ctx: &crate::gpu::Context) -> u32 {
    if ctx.caps.max_workgroup_storage >= 2 * 32 * 128 * 4 {
        128
    } else {
        64
    }
}

/// The register-tiled matrix-matrix kernel.
pub fn matmul(rec: &mut Recorder, x: &Tensor, w: &Weight, bias: Option<&Tensor>, y: &Tensor) -> Result<()> {
    let tile = matmul_tile(rec.ctx);
    matmul_with_tile(rec, x, w, bias, y, tile)
}

pub fn matmul_with_tile(rec: &mut Recorder, x: &Tensor, w: &Weight, bias: Option<&Tensor>, y: &Tensor, tile: u32) -> Result<()> {
    let (m, _) = check_shapes(x, w, bias, y)?;
    let act = same_dtype("matmul", &[x, y])?;
    check("matmul", tile == 64 || tile == 128, || format!("tile {tile} is not 64 or 128"))?;
    let defines = weight_defines(base_defines(rec.ctx, act, 256)?
        .value("TILE", tile)
        .value("V", tile / 64)
        .flag_if("BIAS", bias.is_some()), w.format);
    let pipeline = rec.ctx.pipeline(&MATMUL, &defines)?;
    let m_tiles = (m as u32).div_ceil(tile);
    check("matmul", m_tiles <= rec.ctx.caps.max_workgroups_per_dim, || format!("{m} rows are too many for one dispatch"))?;
    for part in &w.parts {
        let n = part.rows.len() as u32;
        let params = Params::new(m, w, part);
        let b = bindings(x, y, part, bias);
        rec.dispatch(pipeline.clone(), &params, b, [n.div_ceil(tile), m_tiles, 1]);
    }
    Ok(())
}
