//! `y = x · Wᵀ (+ bias)`: matvec.wgsl for a few rows (decode), matmul.wgsl for many (prefill, vision).
//! A weight split over several buffers becomes one dispatch per part, each writing its column range of y.

use crate::gpu::shader::{Defines, MATMUL, MATMUL_COOP, MATVEC, MATVEC_FUSED};
use crate::gpu::tensor::{Weight, WeightFormat};
use crate::gpu::{Binding, Recorder, Tensor};
use crate::kernels::{base_defines, check, grid, same_dtype, weight_defines};
use crate::{Error, Result};

/// Rows of x up to which the matrix-vector kernel is used, one x row a workgroup.
pub const MATVEC_MAX_ROWS: usize = 4;

/// Rows of x up to which the matrix-vector kernel's MULTI variant is used (a short prompt, such as a
/// follow-up question: a full matmul tile would compute mostly padding), [`MULTI_ROWS`] x rows a workgroup;
/// not on the cooperative-matrix tier, whose matmul is faster at any such count.
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
    let (m, k) = check_shapes(x, w, bias, y)?;
    if m == 1 && k <= SHORT_MAX_K {
        // a short row (the tiny models' f16 head): the fused kernel's SHORT path, in far fewer workgroups
        matvec_fused(rec, x, w, bias, None, Fused::Plain { y }, FUSED_SHAPE)
    } else if m <= MATVEC_MAX_ROWS {
        matvec(rec, x, w, bias, y, matvec_shape(w.n, w.k))
    } else if m <= MULTI_MAX_ROWS && !matmul_coop(rec.ctx, x.dtype) {
        // (on the tensor cores a 128-row tile of mostly padding still costs less than MULTI's arithmetic:
        // a 20-token follow-up's matrices took 101 ms in MULTI on the H100)
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

/// Whether `matmul` runs in the packed-f16 tier for activations `act` (the context asked for it, and the
/// activations are f16).
pub fn matmul_packed(ctx: &crate::gpu::Context, act: crate::gpu::DType) -> bool {
    ctx.packed_f16_matmul && act == crate::gpu::DType::F16
}

/// Whether `matmul` runs in the cooperative-matrix tier for activations `act` (the context has it, and the
/// activations are f16).
pub fn matmul_coop(ctx: &crate::gpu::Context, act: crate::gpu::DType) -> bool {
    ctx.coop_matmul && act == crate::gpu::DType::F16
}

pub use crate::gpu::CoopShape;

/// The shapes the kernel is built in; the first is the model's default (`Context::coop_shape`). Timed alone on
/// the 14B's prefill matmuls at 4,096 rows (H100, BENCHMARKS.md, eleventh session): 4 subgroups of 4 × 4 tiles
/// with one q4 group a stage (32:4) 133–139 TFLOP/s, 8 subgroups of 2 × 4 with two groups (64:2) 121–125,
/// one group (32:2) 53–65, 4 × 4 with two groups (64:4, more registers a stage) 43–82; the double-buffered
/// shapes (`bufs` 2, KT 32 only: two copies of KT 64's tiles and the scratch would need 80 KB of the 48 KB
/// NVIDIA's Vulkan driver allows a workgroup) 53–78, slower than their single-buffered twins. In the model
/// 32:4 took a photo's prefill from 1.20 to 1.12 s once chunks were 4,096 rows (with 1,024-row chunks it had
/// lost to 64:2, 1.47 against 1.42 s). Every shape is checked on a GPU by `kernels -- --ignored coop`.
pub const COOP_SHAPES: [CoopShape; 6] = [
    CoopShape::DEFAULT,
    CoopShape { kt: 64, ri: 2, bufs: 1 },
    CoopShape { kt: 32, ri: 2, bufs: 1 },
    CoopShape { kt: 64, ri: 4, bufs: 1 },
    CoopShape { kt: 32, ri: 2, bufs: 2 },
    CoopShape { kt: 32, ri: 4, bufs: 2 },
];

impl CoopShape {
    /// `KT:RI` or `KT:RI:BUFS`, one of [`COOP_SHAPES`].
    pub fn parse(s: &str) -> Result<CoopShape> {
        let bad = || Error::Request(format!("cooperative-matrix shape {s:?}: expected KT:RI or KT:RI:BUFS, one of {}", COOP_SHAPES.map(|c| c.label()).join(", ")));
        let num = |v: &str| v.trim().parse::<u32>().map_err(|_| bad());
        let parts: Vec<&str> = s.split(':').collect();
        let shape = match parts[..] {
            [kt, ri] => CoopShape { kt: num(kt)?, ri: num(ri)?, bufs: 1 },
            [kt, ri, bufs] => CoopShape { kt: num(kt)?, ri: num(ri)?, bufs: num(bufs)? },
            _ => return Err(bad()),
        };
        if COOP_SHAPES.contains(&shape) { Ok(shape) } else { Err(bad()) }
    }
}

/// The matrix-matrix product in the best tier the context has: cooperative matrices, else the
/// register-tiled kernel (packed f16 or f32 arithmetic).
pub fn matmul(rec: &mut Recorder, x: &Tensor, w: &Weight, bias: Option<&Tensor>, y: &Tensor) -> Result<()> {
    let act = same_dtype("matmul", &[x, y])?;
    if matmul_coop(rec.ctx, act) {
        return matmul_coop_with(rec, x, w, bias, y, rec.ctx.coop_shape);
    }
    let tile = matmul_tile(rec.ctx);
    matmul_with_tile(rec, x, w, bias, y, tile)
}

/// The defines of the cooperative-matrix kernel in `shape`: KT, RI, WGS (invocations), and what each
/// invocation carries a stage — NX vec4s of the 128 × kt X tile, NW reads of the 128 × kt W tile (a word of
/// 8 or 4 values for q4 and q8, a pair of words, 4 values, for f16).
pub fn coop_defines(shape: CoopShape, format: WeightFormat, bias: bool) -> Defines {
    // k values a W read carries: a q4 word, a q8 word, or (f16) a pair of words
    let per_word = match format {
        WeightFormat::Q4 => 8,
        WeightFormat::Q8 => 4,
        WeightFormat::F16 => 4,
    };
    let (kt, wgs) = (shape.kt, shape.invocations());
    let d = Defines::new().flag("ACT_F16").flag("COOP").value("KT", kt).value("RI", shape.ri).value("WGS", wgs).value("NB", shape.bufs).flag_if("DOUBLE", shape.bufs == 2);
    weight_defines(d.value("NX", 128 * kt / 4 / wgs).value("NW", 128 * kt / per_word / wgs).flag_if("BIAS", bias), format)
}

/// The cooperative-matrix kernel (shaders/matmul_coop.wgsl) in one of [`COOP_SHAPES`].
pub fn matmul_coop_with(rec: &mut Recorder, x: &Tensor, w: &Weight, bias: Option<&Tensor>, y: &Tensor, shape: CoopShape) -> Result<()> {
    let (m, _) = check_shapes(x, w, bias, y)?;
    let act = same_dtype("matmul", &[x, y])?;
    check("matmul", matmul_coop(rec.ctx, act), || "the cooperative-matrix tier needs a context that has it and f16 activations".into())?;
    check("matmul", COOP_SHAPES.contains(&shape), || format!("{shape:?} is not one of the shapes the kernel is built in"))?;
    let need = shape.workgroup_bytes();
    check("matmul", need <= rec.ctx.caps.max_workgroup_storage, || format!("shape {} needs {need} bytes of workgroup memory; the adapter allows {}", shape.label(), rec.ctx.caps.max_workgroup_storage))?;
    let defines = coop_defines(shape, w.format, bias.is_some());
    let pipeline = rec.ctx.pipeline(&MATMUL_COOP, &defines)?;
    let m_tiles = (m as u32).div_ceil(128);
    check("matmul", m_tiles <= rec.ctx.caps.max_workgroups_per_dim, || format!("{m} rows are too many for one dispatch"))?;
    for part in &w.parts {
        let n = part.rows.len() as u32;
        let params = Params::new(m, w, part);
        let b = bindings(x, y, part, bias);
        rec.dispatch(pipeline.clone(), &params, b, [n.div_ceil(128), m_tiles, 1]);
    }
    Ok(())
}

/// The tiled matmul's layout defines (shaders/matmul.wgsl): invocations, their rows along m, vec4s of
/// outputs an invocation along m and n, X's staging tasks an invocation. `t16`: 128 invocations of 16 rows
/// × 8 columns each over the 128-wide tile (TiledMatmul::tall).
pub(crate) fn tiled_layout(d: Defines, tile: u32, t16: bool) -> Defines {
    let d = d.value("TILE", tile).flag_if("MM_T16", t16);
    if t16 {
        d.value("WGT", 128).value("TYN", 8).value("VM", 4).value("VN", 2).value("XT", 2)
    } else {
        d.value("WGT", 256).value("TYN", 16).value("VM", tile / 64).value("VN", tile / 64).value("XT", 1)
    }
}

pub fn matmul_with_tile(rec: &mut Recorder, x: &Tensor, w: &Weight, bias: Option<&Tensor>, y: &Tensor, tile: u32) -> Result<()> {
    let (m, _) = check_shapes(x, w, bias, y)?;
    let act = same_dtype("matmul", &[x, y])?;
    check("matmul", tile == 64 || tile == 128, || format!("tile {tile} is not 64 or 128"))?;
    let t = rec.ctx.tiled_matmul;
    // the prefetch holds one task of W an invocation: q4 and q8 have at most one, f16 weights two
    let pf = t.prefetch && matches!(w.format, WeightFormat::Q4 | WeightFormat::Q8);
    // the 16 × 8 block an invocation: the 128-wide tile's prefetched q4 staging, one task of W an invocation
    // of 128 (the balanced staging's two and the 8 × 4 subgroup assume 256)
    let t16 = t.tall && tile == 128 && pf && w.format == WeightFormat::Q4 && !t.balance && !t.warp8;
    let defines = weight_defines(tiled_layout(base_defines(rec.ctx, act, if t16 { 128 } else { 256 })?, tile, t16)
        .flag_if("BIAS", bias.is_some())
        .flag_if("PACKED", matmul_packed(rec.ctx, act))
        .flag_if("MM_IL", t.interleave)
        .flag_if("MM_UR", t.unroll)
        .flag_if("MM_MA", t.mul_add)
        .flag_if("MM_W8", t.warp8)
        .flag_if("MM_XB", t.no_w_reads)
        .flag_if("MM_PF", pf)
        // the balanced staging, and the ablations, are built on the prefetch's structure
        .flag_if("MM_BW", pf && t.balance && w.format == WeightFormat::Q4)
        .flag_if("MM_XL", pf && t.no_loads)
        .flag_if("MM_XS", pf && t.no_staging), w.format);
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

/// What a fused matrix-vector product (matvec_fused.wgsl) does with its sums.
pub enum Fused<'a> {
    /// `y = x · Wᵀ (+ bias)`.
    Plain { y: &'a Tensor },
    /// As Plain, and each workgroup's largest output as stored and the first row holding it into `maxima`
    /// (u32 pairs: f32 bits, row; [`argmax_slots`] of them): the greedy choice's first pass, which
    /// `sample::argmax_of_maxima` finishes. Not on SHORT's rows.
    PlainArgmax { y: &'a Tensor, maxima: &'a Tensor },
    /// `y += x · Wᵀ`: the residual stream updated in place.
    Residual { y: &'a Tensor },
    /// W is gate and up stacked `(2·FFN, k)`: `y (FFN) = silu(x · gateᵀ) · (x · upᵀ)`.
    Glu { y: &'a Tensor },
    /// W is q, k and v stacked for one token (bias required): q and k rotated at `pos`, q into `q` (its first
    /// `heads·D` elements), k and v into the caches `(kv_heads, capacity, D)` at `pos`.
    RopeKv { q: &'a Tensor, k: &'a Tensor, v: &'a Tensor, inv_freq: &'a Tensor, heads: u32, kv_heads: u32, head_dim: u32, pos: u32 },
}

/// Invocations, output rows and blocks of each row a step of the fused kernel, and how it turns q4 codes
/// into products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusedShape {
    pub wg: u32,
    pub rows: u32,
    pub blocks: u32,
    pub math: FusedMath,
}

/// How the fused kernel's q4 products are formed (matvec_fused.wgsl; q8 and f16 weights are unaffected but
/// by `LoadsOnly`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedMath {
    /// Each code minus its zero point as a float, then a product: 4 instructions a weight.
    Exact,
    /// Each code as 1 + q/16 (one shift, one and-or), the zero point taken out once a block: 3 a weight.
    Top,
    /// x's block quantized to 8 bits once for the workgroup's rows, then integer dot products four codes at
    /// a time (`dot4I8Packed`): about 5 instructions for 8 weights, at the cost of x's rounding to 8 bits.
    /// With f16 activations x is read 16 bytes a load (`X16`).
    Dot4,
    /// Benchmark only (`:loads`): the loads without the products, to show what the memory costs alone.
    /// Its results are meaningless; the model never takes it.
    LoadsOnly,
    /// DOT4's products on x prepared by the matrix before ([`Prep`]; `XQ8`: its codes and scales bound
    /// instead of x). The model reaches it through [`matvec_fused_prep`] from a Dot4 shape; as a shape it is
    /// the kernel benchmark's (`:xq8`).
    Xq8,
}

/// The fused kernel's shape for the 14B's q/k/v, o and down, and for every matrix of the test models (one
/// step covers their rows, which CPU renderers run well).
pub const FUSED_SHAPE: FusedShape = FusedShape { wg: 32, rows: 4, blocks: 2, math: FusedMath::Top };

/// The shape for many rows (lm_head, gate/up of the 14B): eight rows share each load of x.
pub const WIDE_SHAPE: FusedShape = FusedShape { wg: 32, rows: 8, blocks: 1, math: FusedMath::Top };

/// Rows at and beyond which a matrix takes [`WIDE_SHAPE`] (if its rows are longer than one step of
/// [`FUSED_SHAPE`]).
pub const WIDE_ROWS: usize = 16_384;

/// The shapes the fused kernel is built in (the model's and those `varco bench kernels` compares), all of
/// them tested; `varco bench kernels` also builds [`FusedMath::LoadsOnly`] copies of the first two (bounds)
/// and [`FusedMath::Xq8`] ones (x prepared, as the model reads it with `DecodeShapes::prepare`).
pub const FUSED_SHAPES: [FusedShape; 13] = [
    FUSED_SHAPE,
    WIDE_SHAPE,
    FusedShape { math: FusedMath::Exact, ..FUSED_SHAPE },
    FusedShape { math: FusedMath::Exact, ..WIDE_SHAPE },
    FusedShape { math: FusedMath::Dot4, ..FUSED_SHAPE },
    FusedShape { math: FusedMath::Dot4, ..WIDE_SHAPE },
    FusedShape { wg: 64, rows: 4, blocks: 2, math: FusedMath::Exact },
    FusedShape { wg: 64, rows: 4, blocks: 3, math: FusedMath::Exact },
    FusedShape { wg: 64, rows: 8, blocks: 1, math: FusedMath::Exact },
    FusedShape { wg: 128, rows: 8, blocks: 1, math: FusedMath::Exact },
    // split-K across 2 or 4 subgroups with DOT4's products: more warps and shorter chains for the 14B's
    // per-layer matrices, whose loads alone reach 37–57 % of the bandwidth in one-subgroup workgroups.
    // On the H100 (BENCHMARKS.md, ninth session) no faster in the model: kept to compare, not the model's
    FusedShape { wg: 64, rows: 4, blocks: 2, math: FusedMath::Dot4 },
    FusedShape { wg: 64, rows: 4, blocks: 3, math: FusedMath::Dot4 },
    FusedShape { wg: 128, rows: 4, blocks: 2, math: FusedMath::Dot4 },
];

/// The shapes [`fused_shape`] chooses from: FUSED_SHAPE and WIDE_SHAPE, with q4's float products or (where
/// the context takes them) DOT4's. The browser tests run these; the native ones every shape built.
pub const MODEL_FUSED_SHAPES: [FusedShape; 4] = [FUSED_SHAPE, WIDE_SHAPE, FUSED_SHAPES[4], FUSED_SHAPES[5]];

/// The benchmark's bounds in the model's two shapes: loads-only copies ([`FusedMath::LoadsOnly`]) and
/// copies on x already quantized ([`FusedMath::Xq8`]).
pub fn bound_shapes() -> [FusedShape; 4] {
    let m = [FusedMath::LoadsOnly, FusedMath::Xq8];
    std::array::from_fn(|i| FusedShape { math: m[i / 2], ..[FUSED_SHAPE, WIDE_SHAPE][i % 2] })
}

/// What a shape adds to the fused kernel's defines for weights in `format`: R, U, and TOP or DOT4 (q4 only)
/// or LOADS_ONLY; X16 where `d` has f16 activations and whole blocks (no PARTIAL: set it first). Shared with
/// `kernels::variants`.
pub fn fused_shape_defines(d: Defines, shape: FusedShape, format: WeightFormat) -> Defines {
    let q4 = format == WeightFormat::Q4;
    let x16 = shape.math == FusedMath::Dot4 && q4 && d.has("ACT_F16") && !d.has("PARTIAL");
    d.value("R", shape.rows)
        .value("U", shape.blocks)
        .flag_if("TOP", shape.math == FusedMath::Top && q4)
        .flag_if("DOT4", matches!(shape.math, FusedMath::Dot4 | FusedMath::Xq8) && q4)
        .flag_if("X16", x16)
        .flag_if("XQ8", shape.math == FusedMath::Xq8 && q4)
        .flag_if("LOADS_ONLY", shape.math == FusedMath::LoadsOnly)
}

/// The fused kernel's shape for W: [`WIDE_SHAPE`] for many rows, [`FUSED_SHAPE`] otherwise. Chosen by the
/// whole decode step on the H200 (BENCHMARKS.md, issue 13): gate/up and lm_head in the wide shape, the rest
/// in one-subgroup workgroups of four rows, 131 tokens/s at 1k against 126 with every matrix in
/// FUSED_SHAPE; shapes with 64 invocations a workgroup, though faster for q/k/v, o and down timed alone, made
/// the pipelined step slower (115–122). Both with q4's TOP products: 127.6 → 130.3 tokens/s on the H100;
/// with DOT4's integer products where the context takes them ([`crate::gpu::Context::int_dot_decode`]),
/// 127.8 → 169.9.
pub fn fused_shape(ctx: &crate::gpu::Context, w: &Weight) -> FusedShape {
    let s = fused_shape_for(w.n, w.format.blocks_per_row(w.k));
    // (q4 only: the other formats' products are the same in every math)
    if ctx.int_dot_decode && w.format == WeightFormat::Q4 {
        FusedShape { math: FusedMath::Dot4, ..s }
    } else {
        s
    }
}

/// [`fused_shape`] for `n` rows of `kb` 16-byte blocks.
pub fn fused_shape_for(n: usize, kb: u32) -> FusedShape {
    // rows of a single step (the test models') keep FUSED_SHAPE, which CPU renderers run well
    if n >= WIDE_ROWS && kb > FUSED_SHAPE.wg * FUSED_SHAPE.blocks {
        WIDE_SHAPE
    } else {
        FUSED_SHAPE
    }
}

/// The decode step's shapes, one per matrix (the model picks them with [`fused_shape`]; the benchmark may
/// replace them to compare).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeShapes {
    pub qkv: FusedShape,
    pub o: FusedShape,
    pub gate_up: FusedShape,
    pub down: FusedShape,
    pub lm_head: FusedShape,
    /// x prepared once ([`Prep`]): which matrices write their output's 8-bit codes for the next to read
    /// instead of x.
    pub prepare: Prepare,
    /// o's weights read into the GPU's cache beside decode attention where its split has at most this many
    /// workgroups (`attention::Warm`); 0: never, the model's default: on the H100 o got 2 µs faster a layer,
    /// yet the step slower in every variant (−0.8 % at 1k with f16 and subgroups, −5.7 % with f32; BENCHMARKS.md,
    /// twenty-second session).
    pub warm: u32,
    /// With `warm`, also the first rows of gate/up's codes, this many MiB (half gate's, half up's: the rows its
    /// first workgroups read); 0: none.
    pub warm_gate_up_mib: u32,
    /// Workgroups of each warming dispatch (`bandwidth::warm`; [`bandwidth::WARM_WORKGROUPS`] by default): with
    /// 256 it read at 1.4 TB/s on the H100 and outlasted the split it ran beside; more may end with it.
    ///
    /// [`bandwidth::WARM_WORKGROUPS`]: crate::kernels::bandwidth::WARM_WORKGROUPS
    pub warm_workgroups: u32,
    /// Greedy's first pass in lm_head's epilogue (`Fused::PlainArgmax`, then argmax.wgsl's FINAL alone) instead
    /// of two passes over the logits. Off by default: its FINAL over 18,960 slots took 17 µs on the H100, the
    /// two passes 15.
    pub greedy_in_lm_head: bool,
}

/// Which rows of the decode step are prepared once ([`Prep`]) by the kernel that writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepare {
    /// None: every DOT4 matrix quantizes x in each of its workgroups.
    Off,
    /// SiLU·up's: gate/up (needs DOT4 and a shape of 8 rows: 32 outputs in 256 invocations) writes it, down
    /// (DOT4) reads it. Its producer has 432 workgroups on the 14B.
    Ffn,
    /// Also the residual stream's (o and down write it; q/k/v from layer 1 on and gate/up read it) and the
    /// attention output's (decode attention's merge writes it, o reads it, where a head is whole blocks of
    /// 32). On the 14B o's and down's producers have only 160 workgroups of 256 invocations for an H100's 132
    /// multiprocessors, and cost more than the readers gain (BENCHMARKS.md, twenty-first session).
    All,
}

impl Prepare {
    /// The model's choice where its shapes and sizes allow [`Prepare::Ffn`] ([`DecodeShapes::can_prepare_ffn`]),
    /// per variant as the whole decode step measured it on the H100 (BENCHMARKS.md, twenty-first session;
    /// tokens/s at 1k context, off → ffn, one machine): f32 activations with subgroups 159.7 → 166.8, f16
    /// without subgroups 187.2 → 191.3 — ffn; f16 with subgroups 191.1 → 185.9, f32 without 156.1 → 151.7 —
    /// off. Why gate/up's 256-invocation producer costs more than down saves in two variants and less in the
    /// other two is not known: timed one dispatch at a time, ffn's matrices took 5.3 % less (f16, subgroups).
    pub fn measured(act: crate::gpu::DType, subgroups: bool) -> Prepare {
        match (act, subgroups) {
            (crate::gpu::DType::F32, true) | (crate::gpu::DType::F16, false) => Prepare::Ffn,
            _ => Prepare::Off,
        }
    }

    fn parse(s: &str) -> Result<Prepare> {
        match s {
            "off" => Ok(Prepare::Off),
            "ffn" => Ok(Prepare::Ffn),
            "all" => Ok(Prepare::All),
            other => Err(Error::Request(format!("decode shapes: prepare={other:?}: expected off, ffn or all"))),
        }
    }
}

impl std::fmt::Display for Prepare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Prepare::Off => "off",
            Prepare::Ffn => "ffn",
            Prepare::All => "all",
        })
    }
}

impl FusedShape {
    /// `WG:ROWS:BLOCKS[:top|:exact|:dot4]` (a bare shape names the first built one), one
    /// of the shapes the kernel is built in ([`FUSED_SHAPES`]); with `allow_loads_only` (the kernel
    /// benchmark) also `:loads` and `:xq8` of the first two.
    pub fn parse(s: &str, allow_loads_only: bool) -> Result<FusedShape> {
        let loads = if allow_loads_only { format!(", or :loads or :xq8 after {}", [FUSED_SHAPE, WIDE_SHAPE].map(|f| format!("{}:{}:{}", f.wg, f.rows, f.blocks)).join(" or ")) } else { String::new() };
        let bad = || Error::Request(format!("fused shape {s:?}: expected WG:ROWS:BLOCKS[:top|:exact|:dot4], one of {}{loads}", FUSED_SHAPES.map(|f| f.to_string()).join(", ")));
        let parts: Vec<&str> = s.split(':').map(str::trim).collect();
        let math = match parts.get(3..) {
            Some([]) => None,
            Some(["top"]) => Some(FusedMath::Top),
            Some(["exact"]) => Some(FusedMath::Exact),
            Some(["dot4"]) => Some(FusedMath::Dot4),
            Some(["loads"]) if allow_loads_only => Some(FusedMath::LoadsOnly),
            Some(["xq8"]) if allow_loads_only => Some(FusedMath::Xq8),
            _ => return Err(bad()),
        };
        let v: Vec<u32> = parts[..3].iter().map(|x| x.parse()).collect::<std::result::Result<_, _>>().map_err(|_| bad())?;
        let built = |m: FusedMath| FUSED_SHAPES.iter().copied().find(|f| (f.wg, f.rows, f.blocks, f.math) == (v[0], v[1], v[2], m));
        let shape = match math {
            // a bare shape names the first built one of its dimensions (the model's products for the model's)
            None => FUSED_SHAPES.iter().copied().find(|f| (f.wg, f.rows, f.blocks) == (v[0], v[1], v[2])),
            Some(m @ (FusedMath::LoadsOnly | FusedMath::Xq8)) => bound_shapes().into_iter().find(|f| (f.wg, f.rows, f.blocks, f.math) == (v[0], v[1], v[2], m)),
            Some(m) => built(m),
        };
        shape.ok_or_else(bad)
    }
}

impl std::fmt::Display for FusedShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let math = match self.math {
            FusedMath::Exact => ":exact",
            FusedMath::Top => ":top",
            FusedMath::Dot4 => ":dot4",
            FusedMath::LoadsOnly => ":loads",
            FusedMath::Xq8 => ":xq8",
        };
        write!(f, "{}:{}:{}{math}", self.wg, self.rows, self.blocks)
    }
}

impl DecodeShapes {
    /// Whether the shapes allow [`Prepare::Ffn`]: gate/up and down with DOT4's products, gate/up's shape
    /// owning whole blocks of 32 outputs in at most `max_invocations` (the weights' side — q4, one binding
    /// for gate/up, rows in whole blocks — is the model's to check).
    pub fn can_prepare_ffn(&self, max_invocations: u32) -> bool {
        let dot4 = |s: FusedShape| matches!(s.math, FusedMath::Dot4);
        dot4(self.gate_up) && dot4(self.down) && prepared_layout(self.gate_up, true).is_some_and(|(_, wg)| wg <= max_invocations)
    }

    /// These shapes with some replaced: `spec` is `ROLE=WG:ROWS:BLOCKS,...`, roles qkv, o, gate_up, down and
    /// lm_head, `warm=N` and `warm_gate_up=MIB` ([`DecodeShapes::warm`]), `greedy=lm_head|logits`
    /// ([`DecodeShapes::greedy_in_lm_head`]) and `prepare=off|ffn|all` ([`DecodeShapes::prepare`]; a spec that leaves it out and gives
    /// gate/up or down a shape that cannot prepare turns the model's [`Prepare::Ffn`] off); `allow_loads_only` (the benchmark's
    /// whole-step bound, whose tokens mean nothing) also takes `:loads`.
    pub fn with(mut self, spec: &str, allow_loads_only: bool) -> Result<DecodeShapes> {
        let mut named = false;
        for item in spec.split(',').filter(|s| !s.trim().is_empty()) {
            let (role, shape) = item.split_once('=').ok_or_else(|| Error::Request(format!("decode shapes: {item:?} is not ROLE=WG:ROWS:BLOCKS")))?;
            if role.trim() == "prepare" {
                self.prepare = Prepare::parse(shape.trim())?;
                named = true;
                continue;
            }
            if role.trim() == "greedy" {
                self.greedy_in_lm_head = match shape.trim() {
                    "lm_head" => true,
                    "logits" => false,
                    other => return Err(Error::Request(format!("decode shapes: greedy={other:?}: expected lm_head (its first pass in lm_head's epilogue) or logits (two passes over them)"))),
                };
                continue;
            }
            if role.trim() == "warm_gate_up" {
                self.warm_gate_up_mib = shape.trim().parse().map_err(|_| Error::Request(format!("decode shapes: warm_gate_up={:?}: expected MiB of gate/up's first rows to warm with o", shape.trim())))?;
                continue;
            }
            if role.trim() == "warm_wgs" {
                self.warm_workgroups = shape.trim().parse().ok().filter(|n| (1..=65_535).contains(n)).ok_or_else(|| Error::Request(format!("decode shapes: warm_wgs={:?}: expected the warming dispatch's workgroups, 1 to 65,535", shape.trim())))?;
                continue;
            }
            if role.trim() == "warm" {
                self.warm = shape.trim().parse().map_err(|_| Error::Request(format!("decode shapes: warm={:?}: expected the most workgroups of decode attention's split to warm o beside (0: never)", shape.trim())))?;
                continue;
            }
            let shape = FusedShape::parse(shape, allow_loads_only)?;
            if shape.math == FusedMath::Xq8 {
                return Err(Error::Request(format!("decode shapes: {item:?}: :xq8 is a bound of `varco bench kernels` (x already quantized; the model prepares x with prepare=ffn or all)")));
            }
            match role.trim() {
                "qkv" => self.qkv = shape,
                "o" => self.o = shape,
                "gate_up" => self.gate_up = shape,
                "down" => self.down = shape,
                "lm_head" => self.lm_head = shape,
                other => return Err(Error::Request(format!("decode shapes: no matrix {other:?} (qkv, o, gate_up, down, lm_head)"))),
            }
        }
        // (the shape-level half of the check only: a spec cannot change the weights)
        if !named && self.prepare == Prepare::Ffn && !self.can_prepare_ffn(u32::MAX) {
            self.prepare = Prepare::Off;
        }
        Ok(self)
    }
}

impl std::fmt::Display for DecodeShapes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "qkv {}, o {}, gate_up {}, down {}, lm_head {}, x prepared {}, o (and {} MiB of gate/up) warmed by {} workgroups beside attention of ≤ {}, greedy's first pass in {}", self.qkv, self.o, self.gate_up, self.down, self.lm_head, self.prepare, self.warm_gate_up_mib, self.warm_workgroups, self.warm, if self.greedy_in_lm_head { "lm_head" } else { "its own dispatch" })
    }
}

/// Rows of at most this many inputs take the fused kernel's SHORT path in PLAIN and RESIDUAL modes (and
/// `linear` of one such row), whatever shape is asked for: one row per invocation, `SHORT_WG` rows a
/// workgroup (see matvec_fused.wgsl). The 14B's rows (5,120 and 13,824 inputs) never do.
pub const SHORT_MAX_K: usize = 256;
/// Invocations (and rows) of a SHORT workgroup: WebGPU's default limit.
pub const SHORT_WG: u32 = 256;

/// Mirrors matvec_fused.wgsl's Params.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FusedParams {
    n: u32,
    k: u32,
    kb: u32,
    y_offset: u32,
    eps: f32,
    pos: u32,
    head_dim: u32,
    q_heads: u32,
    kv_heads: u32,
    capacity: u32,
    qk_groups: u32,
    slot0: u32,
}

/// The decode step's fused matrix-vector product for one row `x` `(1, k)`: `mode` says what happens to the
/// sums; `norm_eps`: x is the residual stream before an RMSNorm whose weight is folded into W. GLU and
/// ROPE_KV need W in one part (a single binding).
#[allow(clippy::too_many_arguments)]
pub fn matvec_fused(rec: &mut Recorder, x: &Tensor, w: &Weight, bias: Option<&Tensor>, norm_eps: Option<f32>, mode: Fused, shape: FusedShape) -> Result<()> {
    matvec_fused_prep(rec, x, Prep::default(), w, bias, norm_eps, mode, shape)
}

/// Slots of [`Fused::PlainArgmax`]'s maxima for `w` in `shape`: one a workgroup of every part.
pub fn argmax_slots(w: &Weight, shape: FusedShape) -> usize {
    w.parts.iter().map(|p| p.rows.len().div_ceil(shape.rows as usize)).sum()
}

/// One row of activations prepared for DOT4's products (matvec_fused.wgsl XQ8, XP_OUT): each block of 32
/// values as 8 words of 8-bit codes (lo: values 0, 2, 4, 6 of each 8; hi: 1, 3, 5, 7) and (scale, Σ codes,
/// Σ x², 0). Written by the matrix that produces the row, read by the next instead of the row itself.
pub struct PreparedX {
    /// u32 `(k/32 · 8)`.
    pub codes: Tensor,
    /// f32 `(k/32 · 4)`.
    pub scales: Tensor,
}

impl PreparedX {
    /// Room for a row of `k` values (a multiple of 32).
    pub fn new(ctx: &crate::gpu::Context, k: usize) -> Result<Self> {
        check("matvec_fused", k % 32 == 0, || format!("a prepared row holds whole blocks of 32; {k} values is not"))?;
        Ok(PreparedX { codes: Tensor::empty(ctx, &[k / 32 * 8], crate::gpu::DType::U32)?, scales: Tensor::empty(ctx, &[k / 32 * 4], crate::gpu::DType::F32)? })
    }

    /// Bytes of a prepared row of `k` values.
    pub fn bytes(k: usize) -> u64 {
        (k / 32 * 48) as u64
    }

    /// Blocks of 32 values held.
    pub fn blocks(&self) -> usize {
        self.scales.len() / 4
    }
}

/// Where a fused product's x comes from (`input`: prepared by the matrix before, else x itself) and whether it
/// prepares its own output for the next (`output`; RESIDUAL and GLU).
#[derive(Clone, Copy, Default)]
pub struct Prep<'a> {
    pub input: Option<&'a PreparedX>,
    pub output: Option<&'a PreparedX>,
}

/// XP_OUT's layout for `shape` in GLU (`glu`) or RESIDUAL mode: (slices of the shape's workgroup, invocations
/// of the whole workgroup), so that a workgroup owns one block of 32 outputs; None where 32 is not a whole
/// number of the shape's outputs or the workgroup would pass 256 invocations (WebGPU's default limit).
pub fn prepared_layout(shape: FusedShape, glu: bool) -> Option<(u32, u32)> {
    let outputs = if glu { shape.rows / 2 } else { shape.rows };
    if outputs == 0 || 32 % outputs != 0 {
        return None;
    }
    let slices = 32 / outputs;
    (shape.wg * slices <= 256).then_some((slices, shape.wg * slices))
}

/// Whether the fused kernel in `shape` forms `w`'s products from x quantized to 8 bits (DOT4's, q4), so that
/// x prepared once by the kernel before gives the same result. `row_mode`: PLAIN or RESIDUAL, whose rows of
/// at most [`SHORT_MAX_K`] inputs take SHORT's exact products instead (the test models').
pub fn quantizes_x(w: &Weight, shape: FusedShape, row_mode: bool) -> bool {
    w.format == WeightFormat::Q4 && matches!(shape.math, FusedMath::Dot4 | FusedMath::Xq8) && !(row_mode && w.k <= SHORT_MAX_K)
}

/// [`matvec_fused`] with x prepared by the matrix before (`prep.input`: DOT4 shapes, q4 weights, whole
/// blocks) and/or this matrix's output prepared for the next (`prep.output`: RESIDUAL and GLU, without bias,
/// in whole blocks of 32 outputs; see [`prepared_layout`]). With `prep.input`, x is read for its size only (not bound).
#[allow(clippy::too_many_arguments)]
pub fn matvec_fused_prep(rec: &mut Recorder, x: &Tensor, prep: Prep, w: &Weight, bias: Option<&Tensor>, norm_eps: Option<f32>, mode: Fused, shape: FusedShape) -> Result<()> {
    let k = *x.shape.last().unwrap();
    check("matvec_fused", x.len() == k && k == w.k, || format!("x {:?} is not one row of W's {} inputs", x.shape, w.k))?;
    let block = match w.format {
        crate::gpu::tensor::WeightFormat::Q4 => crate::quant::GROUP,
        crate::gpu::tensor::WeightFormat::Q8 => crate::quant::GROUP / 2,
        crate::gpu::tensor::WeightFormat::F16 => 8,
    };
    check("matvec_fused", k % 4 == 0, || format!("inputs ({k}) must be a multiple of 4"))?;
    check("matvec_fused", shape.rows % 2 == 0 || !matches!(mode, Fused::Glu { .. } | Fused::RopeKv { .. }), || "pair modes need an even row count".into())?;
    let y = match &mode {
        Fused::Plain { y } | Fused::PlainArgmax { y, .. } | Fused::Residual { y } | Fused::Glu { y } => *y,
        Fused::RopeKv { q, .. } => *q,
    };
    let act = same_dtype("matvec_fused", &[x, y])?;
    let flag = match mode {
        Fused::Plain { .. } | Fused::PlainArgmax { .. } => "PLAIN",
        Fused::Residual { .. } => "RESIDUAL",
        Fused::Glu { .. } => "GLU",
        Fused::RopeKv { .. } => "ROPE_KV",
    };
    let shape = match prep.input {
        Some(xp) => {
            check("matvec_fused", w.format == crate::gpu::tensor::WeightFormat::Q4 && matches!(shape.math, FusedMath::Dot4 | FusedMath::Xq8), || format!("x prepared needs q4 weights and DOT4's products, not {:?} in {shape}", w.format))?;
            check("matvec_fused", k % 32 == 0 && xp.blocks() == k / 32, || format!("x prepared in {} blocks for {k} inputs", xp.blocks()))?;
            FusedShape { math: FusedMath::Xq8, ..shape }
        }
        None => {
            check("matvec_fused", shape.math != FusedMath::Xq8, || "an :xq8 shape needs x prepared".into())?;
            shape
        }
    };
    let layout = match prep.output {
        Some(xp) => {
            let glu = matches!(mode, Fused::Glu { .. });
            check("matvec_fused", matches!(mode, Fused::Residual { .. }) || glu, || "only RESIDUAL and GLU prepare their output".into())?;
            check("matvec_fused", bias.is_none(), || "a prepared output takes no bias".into())?;
            let out = if glu { w.n / 2 } else { w.n };
            check("matvec_fused", out % 32 == 0 && xp.blocks() == out / 32, || format!("{out} outputs prepared in {} blocks", xp.blocks()))?;
            check("matvec_fused", w.parts.iter().all(|p| p.rows.start % 32 == 0 && p.rows.len() % 32 == 0), || "a prepared output needs W's parts in whole blocks of 32 rows".into())?;
            let layout = prepared_layout(shape, glu).ok_or_else(|| Error::kernel("matvec_fused", format!("shape {shape} cannot prepare its output (32 outputs a workgroup)")))?;
            check("matvec_fused", layout.1 <= rec.ctx.caps.max_invocations, || format!("{} invocations a workgroup; the adapter allows {}", layout.1, rec.ctx.caps.max_invocations))?;
            Some(layout)
        }
        None => None,
    };
    let short_k = matches!(mode, Fused::Plain { .. } | Fused::PlainArgmax { .. } | Fused::Residual { .. }) && k <= SHORT_MAX_K && prep.input.is_none();
    check("matvec_fused", !(short_k && matches!(mode, Fused::PlainArgmax { .. })), || format!("rows of {k} inputs take SHORT's path, which writes no maxima"))?;
    let short = short_k && layout.is_none();
    // a row SHORT would take keeps SHORT's exact products where preparing the output needs the general path
    let shape = if short_k && !short { FusedShape { math: FusedMath::Exact, ..shape } } else { shape };
    // SHORT: SHORT_WG rows a workgroup (the grid below), one an invocation (R = 1), exact products
    let shape = if short { FusedShape { wg: SHORT_WG, rows: SHORT_WG, blocks: 1, math: FusedMath::Exact } } else { shape };
    let base = match layout {
        // a subgroup wider than a slice would sum two slices' rows together
        Some((slices, wg)) => {
            let d = base_defines(rec.ctx, act, wg)?.value("SLICES", slices).flag("XP_OUT");
            if rec.ctx.caps.subgroup_max_size > shape.wg { d.without("SUBGROUP") } else { d }
        }
        None => base_defines(rec.ctx, act, shape.wg)?,
    }
    .flag_if("PARTIAL", k % block != 0);
    let defines = weight_defines(
        if short { base.value("R", 1).value("U", 1).flag("SHORT") } else { fused_shape_defines(base, shape, w.format) }
            .flag(flag)
            .flag_if("ARGMAX", matches!(mode, Fused::PlainArgmax { .. }))
            .flag_if("NORM", norm_eps.is_some())
            .flag_if("BIAS", bias.is_some()),
        w.format,
    );
    let pipeline = rec.ctx.pipeline(&MATVEC_FUSED, &defines)?;
    let kb = w.format.blocks_per_row(w.k);
    let eps = norm_eps.unwrap_or(0.0);
    let base = FusedParams { n: 0, k: k as u32, kb, y_offset: 0, eps, pos: 0, head_dim: 0, q_heads: 0, kv_heads: 0, capacity: 0, qk_groups: 0, slot0: 0 };
    let mut b = match prep.input {
        Some(xp) => vec![Binding::new(9, &xp.codes.buffer), Binding::new(10, &xp.scales.buffer), Binding::new(5, &y.buffer)],
        None => vec![Binding::new(1, &x.buffer), Binding::new(5, &y.buffer)],
    };
    if let Some(xp) = prep.output {
        b.push(Binding::new(11, &xp.codes.buffer));
        b.push(Binding::new(12, &xp.scales.buffer));
    }
    if let Some(bias) = bias {
        check("matvec_fused", bias.len() == w.n && bias.dtype == crate::gpu::DType::F32, || "bias must be f32 of length n".into())?;
        b.push(Binding::new(4, &bias.buffer));
    }
    let bind_part = |b: &mut Vec<Binding>, part: &crate::gpu::tensor::WeightPart| {
        b.push(Binding::new(2, &part.data));
        if let Some(s) = &part.scales {
            b.push(Binding::new(3, s));
        }
    };
    match mode {
        Fused::Plain { y } | Fused::PlainArgmax { y, .. } | Fused::Residual { y } => {
            check("matvec_fused", y.len() == w.n, || format!("y {:?} is not W's {} rows", y.shape, w.n))?;
            if let Fused::PlainArgmax { maxima, .. } = mode {
                check("matvec_fused", maxima.dtype == crate::gpu::DType::U32 && maxima.len() >= 2 * argmax_slots(w, shape), || format!("maxima must be u32 pairs, {} of them", argmax_slots(w, shape)))?;
                b.push(Binding::new(13, &maxima.buffer));
            }
            let mut slot0 = 0;
            for part in &w.parts {
                let n = part.rows.len() as u32;
                let mut b = b.clone();
                bind_part(&mut b, part);
                let params = FusedParams { n, y_offset: part.rows.start as u32, slot0, ..base };
                let groups = if layout.is_some() { n / 32 } else { n.div_ceil(shape.rows) };
                slot0 += groups;
                rec.dispatch(pipeline.clone(), &params, b, grid(rec.ctx, groups, 1));
            }
        }
        Fused::Glu { y } => {
            check("matvec_fused", w.parts.len() == 1 && w.n % 2 == 0 && y.len() == w.n / 2, || "GLU needs gate and up in one binding and y of FFN".into())?;
            bind_part(&mut b, &w.parts[0]);
            let ffn = (w.n / 2) as u32;
            let params = FusedParams { n: ffn, ..base };
            let groups = if layout.is_some() { ffn / 32 } else { ffn.div_ceil(shape.rows / 2) };
            rec.dispatch(pipeline, &params, b, grid(rec.ctx, groups, 1));
        }
        Fused::RopeKv { q, k: kc, v: vc, inv_freq, heads, kv_heads, head_dim, pos } => {
            let capacity = kc.shape[1] as u32;
            let rows = (heads + 2 * kv_heads) * head_dim;
            check("matvec_fused", w.parts.len() == 1 && w.n as u32 == rows && bias.is_some(), || "ROPE_KV needs q/k/v in one binding, and their bias".into())?;
            check("matvec_fused", q.len() >= (heads * head_dim) as usize && pos < capacity && kc.shape == vc.shape && kc.shape[0] as u32 == kv_heads, || {
                format!("q {:?} / caches {:?} do not fit {heads}/{kv_heads} heads at {pos}", q.shape, kc.shape)
            })?;
            same_dtype("matvec_fused", &[x, q, kc, vc])?;
            bind_part(&mut b, &w.parts[0]);
            b.push(Binding::new(6, &kc.buffer));
            b.push(Binding::new(7, &vc.buffer));
            b.push(Binding::new(8, &inv_freq.buffer));
            let pairs = (heads + kv_heads) * head_dim / 2;
            let qk_groups = pairs.div_ceil(shape.rows / 2);
            let v_groups = (kv_heads * head_dim).div_ceil(shape.rows);
            let params = FusedParams { n: rows, head_dim, q_heads: heads, kv_heads, capacity, pos, qk_groups, ..base };
            rec.dispatch(pipeline, &params, b, grid(rec.ctx, qk_groups + v_groups, 1));
        }
    }
    Ok(())
}
