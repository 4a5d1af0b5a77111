//! Attention: attention.wgsl (a block of queries with online softmax: causal prefill with GQA, or SigLIP's
//! bidirectional attention) and attention_decode.wgsl (one query over a KV cache, split along the sequence,
//! then merged).

use crate::gpu::shader::{ATTENTION, ATTENTION_DECODE};
use crate::gpu::{Binding, Context, DecodeTuning, Recorder, Tensor};
use crate::kernels::{base_defines, check, same_dtype};
use crate::Result;

/// Where K or V live in their buffer: element `offset + head·head_stride + pos·seq_stride + d`.
#[derive(Clone, Copy, Debug)]
pub struct KvLayout {
    pub offset: u32,
    pub head_stride: u32,
    pub seq_stride: u32,
}

/// The shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnArgs {
    pub n_q: u32,
    pub n_kv: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    /// Elements per token row of Q and the column where Q starts in it.
    pub q_stride: u32,
    pub q_offset: u32,
    pub o_stride: u32,
    /// First element of O (e.g. a tile's rows in a batch of tiles).
    pub o_offset: u32,
    pub k: KvLayout,
    pub v: KvLayout,
    /// Absolute position of query 0 (causal only): query i sees keys 0..=pos_offset + i.
    pub pos_offset: u32,
    pub causal: bool,
    pub scale: f32,
}

impl AttnArgs {
    /// Causal attention of `n_q` queries at positions `pos_offset ..` over a KV cache `(kv_heads, capacity,
    /// head_dim)` holding positions `0 .. pos_offset + n_q`; Q and O token-major and packed (`heads ·
    /// head_dim` a row; [`AttnArgs::with_q`] for Q inside wider rows). Scale 1/√head_dim.
    pub fn over_cache(n_heads: u32, n_kv_heads: u32, head_dim: u32, capacity: u32, n_q: u32, pos_offset: u32) -> Self {
        let lay = KvLayout { offset: 0, head_stride: capacity * head_dim, seq_stride: head_dim };
        AttnArgs {
            n_q,
            n_kv: pos_offset + n_q,
            n_heads,
            n_kv_heads,
            head_dim,
            q_stride: n_heads * head_dim,
            q_offset: 0,
            o_stride: n_heads * head_dim,
            o_offset: 0,
            k: lay,
            v: lay,
            pos_offset,
            causal: true,
            scale: (head_dim as f32).powf(-0.5),
        }
    }

    /// Bidirectional attention of `n` tokens whose q, k and v (`heads` each, no GQA) lie side by side in
    /// fused rows of `width`: token 0's q at element `q_col` of the buffer, its k `heads·head_dim` after,
    /// its v after k (SigLIP's fused qkv; a tile of a batch starts at its first row). O token-major and
    /// packed. Scale 1/√head_dim.
    pub fn fused(n: u32, n_heads: u32, head_dim: u32, width: u32, q_col: u32) -> Self {
        let hd = n_heads * head_dim;
        let lay = |col: u32| KvLayout { offset: col, head_stride: head_dim, seq_stride: width };
        AttnArgs {
            n_q: n,
            n_kv: n,
            n_heads,
            n_kv_heads: n_heads,
            head_dim,
            q_stride: width,
            q_offset: q_col,
            o_stride: hd,
            o_offset: 0,
            k: lay(q_col + hd),
            v: lay(q_col + 2 * hd),
            pos_offset: 0,
            causal: false,
            scale: (head_dim as f32).powf(-0.5),
        }
    }

    /// Q read from rows of `stride` elements starting at column `offset`.
    pub fn with_q(self, stride: u32, offset: u32) -> Self {
        AttnArgs { q_stride: stride, q_offset: offset, ..self }
    }

    /// O written from element `offset` on (e.g. one tile's rows in a batch of tiles).
    pub fn with_o_offset(self, offset: u32) -> Self {
        AttnArgs { o_offset: offset, ..self }
    }

    /// Every query sees every key (`causal: false`), or only those up to its own position.
    pub fn with_causal(self, causal: bool) -> Self {
        AttnArgs { causal, ..self }
    }

    pub fn with_scale(self, scale: f32) -> Self {
        AttnArgs { scale, ..self }
    }

    /// `n_kv` keys (queries beyond the cache's own positions, as a test's or a benchmark's shapes).
    pub fn with_n_kv(self, n_kv: u32) -> Self {
        AttnArgs { n_kv, ..self }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_q: u32,
    n_kv: u32,
    n_heads: u32,
    n_kv_heads: u32,
    q_stride: u32,
    o_stride: u32,
    k_head_stride: u32,
    k_seq_stride: u32,
    v_head_stride: u32,
    v_seq_stride: u32,
    pos_offset: u32,
    q_offset: u32,
    k_offset: u32,
    v_offset: u32,
    scale: f32,
    o_offset: u32,
}

/// Queries and keys per workgroup tile that fit the device's workgroup memory for head size `d`.
pub fn prefill_tiles(ctx: &crate::gpu::Context, d: u32) -> (u32, u32) {
    let budget = ctx.caps.max_workgroup_storage;
    for (bq, bkv) in [(16u32, 32u32), (16, 16), (8, 16), (8, 8), (4, 8), (2, 4), (1, 4)] {
        let bytes = 4 * (bq * d + bkv * d + bq * bkv + 3 * bq);
        if bytes <= budget {
            return (bq, bkv);
        }
    }
    (1, 1)
}

fn check_args(kernel: &'static str, a: &AttnArgs) -> Result<()> {
    check(kernel, a.n_kv_heads > 0 && a.n_heads % a.n_kv_heads == 0, || {
        format!("{} query heads do not divide into {} KV heads", a.n_heads, a.n_kv_heads)
    })
}

/// Attention over a block of queries (prefill, or SigLIP with `causal: false`). Q, K, V, O token-major or
/// as described by the layouts; O gets `(n_q, n_heads·head_dim)` at stride `o_stride`.
pub fn attention(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, o: &Tensor, a: &AttnArgs) -> Result<()> {
    check_args("attention", a)?;
    let act = same_dtype("attention", &[q, k, v, o])?;
    if attention_coop_fits(rec.ctx, act, a.head_dim) && coop_aligned(a) {
        return attention_coop(rec, q, k, v, o, a);
    }
    match prefill_kernel(rec.ctx, a.head_dim) {
        PrefillKernel::Q32 => attention_q32(rec, q, k, v, o, a, act),
        PrefillKernel::Tiled => attention_tiled(rec, q, k, v, o, a, act),
        PrefillKernel::Generic => attention_generic(rec, q, k, v, o, a, act),
    }
}

/// Prefill attention's kernels off the tensor cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefillKernel {
    /// attention_q32.wgsl: head size 128, 32 queries × 64 keys a step (ContextOptions::attention_q32).
    Q32,
    /// attention_tiled.wgsl: head size 128, 64 queries × 32 keys a step.
    Tiled,
    /// attention.wgsl: any head size, tiles sized to the device's workgroup memory.
    Generic,
}

impl PrefillKernel {
    /// Whether the device can run it for head size `head_dim`.
    pub fn fits(self, ctx: &Context, head_dim: u32) -> bool {
        match self {
            PrefillKernel::Q32 => head_dim == 128 && ctx.caps.max_workgroup_storage >= Q32_STORAGE,
            PrefillKernel::Tiled => head_dim == 128 && ctx.caps.max_workgroup_storage >= TILED_STORAGE && ctx.caps.max_invocations >= 256,
            PrefillKernel::Generic => true,
        }
    }

    /// How the benchmarks name it.
    pub fn label(self) -> &'static str {
        match self {
            PrefillKernel::Q32 => "32 queries × 64 keys a step",
            PrefillKernel::Tiled => "64 queries × 32 keys a step",
            PrefillKernel::Generic => "the generic kernel",
        }
    }
}

/// The kernel [`attention`] takes for head size `head_dim` where the tensor cores do not: the 32-query one
/// where the context asks for it, else the 64-query one, each where it fits; else the generic one.
pub fn prefill_kernel(ctx: &Context, head_dim: u32) -> PrefillKernel {
    let asked = ctx.attention_q32.then_some(PrefillKernel::Q32);
    asked.into_iter().chain([PrefillKernel::Tiled]).find(|k| k.fits(ctx, head_dim)).unwrap_or(PrefillKernel::Generic)
}

/// The head size padded to the cooperative matrices' 16.
fn coop_dp(head_dim: u32) -> u32 {
    head_dim.div_ceil(16) * 16
}

/// Subgroups of the cooperative-matrix kernel's workgroup (each owns 16 queries) and keys a step.
const COOP_SG: u32 = 4;
const COOP_KB: u32 = 32;
// The shader's rescale test sums exactly four subgroups' flags, and stages Q's 16·SG rows where a step's K
// and V go (2·KB rows).
const _: () = assert!(COOP_SG == 4 && 16 * COOP_SG <= 2 * COOP_KB);

/// Workgroup memory of the cooperative-matrix kernel (attention_coop.wgsl) for head size `d`: K and V of a step
/// (Q's rows before the loop) in rows of `dp + 8` halves, each subgroup's f32 scratch and P, a value a query,
/// a flag a subgroup.
pub fn coop_storage(d: u32) -> u32 {
    let ld = coop_dp(d) + 8;
    2 * COOP_KB * ld * 2 + COOP_SG * 16 * (COOP_KB + 4) * 4 + COOP_SG * 16 * (COOP_KB + 8) * 2 + COOP_SG * 16 * 4 + COOP_SG * 4
}

/// Whether prefill attention takes the cooperative-matrix kernel: the context's tensor-core tier with
/// attention asked for ([`crate::gpu::ContextOptions::coop_attention`]), f16 activations, a head size of at
/// most 128 in steps of 8 (the 14B's 128, SigLIP's 72) and room for its tiles. The call's offsets and strides
/// must also be multiples of 4 ([`coop_aligned`]).
pub fn attention_coop_fits(ctx: &crate::gpu::Context, act: crate::gpu::DType, head_dim: u32) -> bool {
    ctx.coop_attention && act == crate::gpu::DType::F16 && head_dim <= 128 && head_dim % 8 == 0 && coop_storage(head_dim) <= ctx.caps.max_workgroup_storage
}

/// Whether a call's Q, K and V can be read four values at a time, as the cooperative-matrix kernel does.
pub fn coop_aligned(a: &AttnArgs) -> bool {
    [a.q_offset, a.q_stride, a.k.offset, a.k.head_stride, a.k.seq_stride, a.v.offset, a.v.head_stride, a.v.seq_stride].iter().all(|x| x % 4 == 0)
}

/// The defines of the cooperative-matrix kernel for head size `d`: DP (d padded to 16) and DT (its 16-wide
/// tiles), what each invocation stages of Q (QPT) and of a step's K and V (KVPT) in 4-value loads.
pub fn coop_defines(d: u32, causal: bool) -> crate::gpu::Defines {
    let dp = coop_dp(d);
    let threads = 32 * COOP_SG;
    crate::gpu::Defines::new()
        .flag("ACT_F16")
        .flag("COOP")
        .value("D", d)
        .value("DP", dp)
        .value("DT", dp / 16)
        .value("SG", COOP_SG)
        .value("KB", COOP_KB)
        .value("QPT", 16 * COOP_SG * dp / 4 / threads)
        .value("KVPT", 2 * COOP_KB * dp / 4 / threads)
        .flag_if("CAUSAL", causal)
}

/// The cooperative-matrix kernel (64 queries a workgroup, 32 keys a step, on the tensor cores).
pub fn attention_coop(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, o: &Tensor, a: &AttnArgs) -> Result<()> {
    check_args("attention", a)?;
    let act = same_dtype("attention", &[q, k, v, o])?;
    check("attention", attention_coop_fits(rec.ctx, act, a.head_dim), || format!("the cooperative-matrix kernel needs the tier, f16 activations and a head size of at most 128 in steps of 8 (head size {})", a.head_dim))?;
    check("attention", coop_aligned(a), || "the cooperative-matrix kernel needs offsets and strides that are multiples of 4".into())?;
    let pipeline = rec.ctx.pipeline(&crate::gpu::shader::ATTENTION_COOP, &coop_defines(a.head_dim, a.causal))?;
    let b = vec![Binding::new(1, &q.buffer), Binding::new(2, &k.buffer), Binding::new(3, &v.buffer), Binding::new(4, &o.buffer)];
    rec.dispatch(pipeline, &params(a), b, [a.n_q.div_ceil(16 * COOP_SG), a.n_heads, 1]);
    Ok(())
}

/// Workgroup memory of the register-tiled kernel (attention_tiled.wgsl).
pub const TILED_STORAGE: u32 = 29_440;

fn params(a: &AttnArgs) -> Params {
    Params {
        n_q: a.n_q,
        n_kv: a.n_kv,
        n_heads: a.n_heads,
        n_kv_heads: a.n_kv_heads,
        q_stride: a.q_stride,
        o_stride: a.o_stride,
        k_head_stride: a.k.head_stride,
        k_seq_stride: a.k.seq_stride,
        v_head_stride: a.v.head_stride,
        v_seq_stride: a.v.seq_stride,
        pos_offset: a.pos_offset,
        q_offset: a.q_offset,
        k_offset: a.k.offset,
        v_offset: a.v.offset,
        scale: a.scale,
        o_offset: a.o_offset,
    }
}

/// The register-tiled kernel for head size 128 (64 queries × 32 keys a step).
pub fn attention_tiled(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, o: &Tensor, a: &AttnArgs, act: crate::gpu::DType) -> Result<()> {
    check("attention", a.head_dim == 128, || "the tiled kernel is for head size 128".into())?;
    let defines = base_defines(rec.ctx, act, 256)?.flag_if("CAUSAL", a.causal);
    let pipeline = rec.ctx.pipeline(&crate::gpu::shader::ATTENTION_TILED, &defines)?;
    let b = vec![Binding::new(1, &q.buffer), Binding::new(2, &k.buffer), Binding::new(3, &v.buffer), Binding::new(4, &o.buffer)];
    rec.dispatch(pipeline, &params(a), b, [a.n_q.div_ceil(64), a.n_heads, 1]);
    Ok(())
}

/// Workgroup memory of the 32-query kernel (attention_q32.wgsl).
pub const Q32_STORAGE: u32 = 32_768;

/// The register-tiled kernel for head size 128 in 32 queries × 64 keys a step (ContextOptions::attention_q32).
pub fn attention_q32(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, o: &Tensor, a: &AttnArgs, act: crate::gpu::DType) -> Result<()> {
    check("attention", PrefillKernel::Q32.fits(rec.ctx, a.head_dim), || format!("the 32-query kernel is for head size 128 (not {}) and needs {Q32_STORAGE} bytes of workgroup memory (the device allows {})", a.head_dim, rec.ctx.caps.max_workgroup_storage))?;
    let defines = base_defines(rec.ctx, act, 128)?.flag_if("CAUSAL", a.causal);
    let pipeline = rec.ctx.pipeline(&crate::gpu::shader::ATTENTION_Q32, &defines)?;
    let b = vec![Binding::new(1, &q.buffer), Binding::new(2, &k.buffer), Binding::new(3, &v.buffer), Binding::new(4, &o.buffer)];
    rec.dispatch(pipeline, &params(a), b, [a.n_q.div_ceil(32), a.n_heads, 1]);
    Ok(())
}

/// The generic kernel: any head size, tiles sized to the device's workgroup memory.
pub fn attention_generic(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, o: &Tensor, a: &AttnArgs, act: crate::gpu::DType) -> Result<()> {
    let (bq, bkv) = prefill_tiles(rec.ctx, a.head_dim);
    let defines = base_defines(rec.ctx, act, 128)?
        .value("D", a.head_dim)
        .value("BQ", bq)
        .value("BKV", bkv)
        .value("OPT", (bq * a.head_dim).div_ceil(128))
        .flag_if("CAUSAL", a.causal);
    let pipeline = rec.ctx.pipeline(&ATTENTION, &defines)?;
    let params = params(a);
    let b = vec![Binding::new(1, &q.buffer), Binding::new(2, &k.buffer), Binding::new(3, &v.buffer), Binding::new(4, &o.buffer)];
    rec.dispatch(pipeline, &params, b, [a.n_q.div_ceil(bq), a.n_heads, 1]);
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DecodeParams {
    n_kv: u32,
    n_heads: u32,
    chunk: u32,
    n_splits: u32,
    k_head_stride: u32,
    k_seq_stride: u32,
    v_head_stride: u32,
    v_seq_stride: u32,
    q_offset: u32,
    o_offset: u32,
    scale: f32,
    q_stride: u32,
    o_stride: u32,
    kv_base: u32,
    _p: [u32; 2],
}

/// Keys per workgroup block of the decode kernel (its workgroup size), largest first. The model takes 128
/// (the first that fits the head): on the H100 (BENCHMARKS.md, eighteenth session) smaller blocks, more
/// workgroups at short context, made the kernel slower (1k context: 14.5 µs in 128-key blocks, 15.8 in 64,
/// 21.4 in 32; 256 gave 16.9) and decode too: a block's fixed work (ten reductions, the queries staged, the
/// partial result written) outweighs the SMs it leaves idle. The others stay for `--decode-block`.
pub const DECODE_BLOCKS: [u32; 3] = [128, 64, 32];

/// Workgroups in all the decode kernel's splits aim for, the model's first: 512. On the H100 (BENCHMARKS.md,
/// eighteenth session) decode at 8k context ran at 163.5 tokens/s against 157.8 with 256 (f32 without
/// subgroups, Chrome's variant: 131.7 against 125.9), the same at 1k and 4k, where 128-key blocks allow no
/// more splits; the kernel timed alone, on KV copies rotating through 512 MiB, was slower (32.8 against
/// 29.1 µs at 8k), so the step's figure decided. 256 came from the H200, where at 8k it had beaten
/// 1,024-key splits (150 against 184 µs). The others stay for `--decode-workgroups`.
pub const DECODE_WORKGROUPS: [u32; 3] = [512, 256, 1024];

/// Splits (workgroups per KV head and query) for `workgroups` in all: at most 256 (the merge's limit).
fn decode_target(n_kv_heads: u32, workgroups: u32) -> u32 {
    (workgroups / n_kv_heads.max(1)).clamp(1, 256)
}

/// The keys per block: `forced` (a benchmark's `--decode-block`), which must be one of [`DECODE_BLOCKS`],
/// else the largest; never fewer than `lanes` (the invocations one key's row takes in 16-byte chunks).
pub fn decode_block(lanes: u32, forced: Option<u32>) -> Result<u32> {
    let fits = |b: &u32| *b >= lanes && b % lanes == 0;
    if let Some(b) = forced {
        check("attention_decode", DECODE_BLOCKS.contains(&b) && fits(&b), || {
            format!("a decode block of {b} keys: one of {DECODE_BLOCKS:?}, at least {lanes} (head size / 16-byte chunk)")
        })?;
        return Ok(b);
    }
    DECODE_BLOCKS.into_iter().find(fits).ok_or_else(|| crate::Error::kernel("attention_decode", format!("no decode block fits {lanes} chunks a key")))
}

/// Invocations one key's row takes in the decode kernel: its 16-byte chunks (8 values of f16, 4 of f32).
pub fn decode_lanes(act: crate::gpu::DType, head_dim: u32) -> u32 {
    head_dim / if act == crate::gpu::DType::F16 { 8 } else { 4 }
}

/// (keys a block, workgroups the splits aim for) as `tuning` forces them, else as the context's tuning does,
/// else the model's choice: what the kernel runs and what the benchmarks report.
pub fn decode_tuning(ctx: &crate::gpu::Context, act: crate::gpu::DType, head_dim: u32, tuning: DecodeTuning) -> Result<(u32, u32)> {
    let tuning = tuning.or(ctx.decode_tuning);
    Ok((decode_block(decode_lanes(act, head_dim), tuning.block)?, decode_workgroups(tuning.workgroups)?))
}

/// The workgroups the splits aim for: `forced` (a benchmark's `--decode-workgroups`), one of
/// [`DECODE_WORKGROUPS`], else the first.
pub fn decode_workgroups(forced: Option<u32>) -> Result<u32> {
    let w = forced.unwrap_or(DECODE_WORKGROUPS[0]);
    check("attention_decode", DECODE_WORKGROUPS.contains(&w), || format!("{w} decode workgroups: one of {DECODE_WORKGROUPS:?}"))?;
    Ok(w)
}

/// (keys per split, number of splits) for `n_kv` keys in blocks of `block`: about `workgroups` / `n_kv_heads`
/// splits, each at least one block.
pub fn decode_split(n_kv: u32, n_kv_heads: u32, block: u32, workgroups: u32) -> (u32, u32) {
    let chunk = n_kv.div_ceil(decode_target(n_kv_heads, workgroups)).next_multiple_of(block).max(block);
    (chunk, n_kv.div_ceil(chunk).max(1))
}

/// f32 elements of one split's partial result for one head (attention_decode.wgsl): (max, sum, 0, 0) and the
/// head's values, 16-byte aligned for the merge's vec4 loads.
fn split_len(head_dim: u32) -> u32 {
    head_dim + 4
}

/// f32 elements of scratch the decode kernel needs for `n_q` queries over any number of keys up to `max_kv`,
/// however it is tuned (a split covers at least one block of the smallest size, and there are at most as
/// many as the most workgroups give).
pub fn decode_scratch_len(n_q: u32, n_heads: u32, n_kv_heads: u32, head_dim: u32, max_kv: u32) -> usize {
    let smallest = DECODE_BLOCKS[DECODE_BLOCKS.len() - 1];
    let most = DECODE_WORKGROUPS.into_iter().max().unwrap_or(256);
    let splits = decode_target(n_kv_heads, most).min(max_kv.div_ceil(smallest)).max(1);
    (n_q * n_heads * splits * split_len(head_dim)) as usize
}

/// The decode kernel's defines for blocks of `block` keys; shared with `kernels::variants`.
pub fn decode_defines(ctx: &crate::gpu::Context, act: crate::gpu::DType, head_dim: u32, n_rep: u32, block: u32) -> Result<crate::gpu::Defines> {
    let cw = if act == crate::gpu::DType::F16 { 8 } else { 4 };
    let lanes = decode_lanes(act, head_dim);
    let kg = block / lanes;
    Ok(base_defines(ctx, act, block)?
        .value("D", head_dim)
        .value("N_REP", n_rep)
        .value("CW", cw)
        .value("LANES", lanes)
        .value("KG", kg)
        .value("KPT", block / kg))
}

/// One query token per head against `n_kv` cached keys, or a few (`n_q`, a short prompt after a long
/// context; causal: query i at position `pos_offset + i`). `q` holds each token's heads at `q_offset` of its
/// row of `q_stride` (a fused qkv row works), `o` gets `(n_q, n_heads·head_dim)` at `o_stride`; `scratch`
/// is f32 of [`decode_scratch_len`]. Split as the model does, or as the context's tuning forces.
pub fn attention_decode(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, o: &Tensor, scratch: &Tensor, a: &AttnArgs) -> Result<()> {
    attention_decode_tuned(rec, q, k, v, o, scratch, a, DecodeTuning::default(), None, None)
}

/// [`attention_decode`] that also writes `o` prepared for the next matrix (`linear::Prep::input`: its blocks
/// of 32 as 8-bit codes and scales; one query, head size and `o_offset` multiples of 32).
#[allow(clippy::too_many_arguments)]
pub fn attention_decode_prep(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, o: &Tensor, scratch: &Tensor, a: &AttnArgs, out: &crate::kernels::linear::PreparedX) -> Result<()> {
    attention_decode_tuned(rec, q, k, v, o, scratch, a, DecodeTuning::default(), Some(out), None)
}

/// One `bandwidth::warm` dispatch: two byte ranges of buffers and its sink (one per dispatch of a step).
#[derive(Clone)]
pub struct WarmRead<'a> {
    pub a: (&'a crate::gpu::GpuBuffer, std::ops::Range<u64>),
    pub b: (&'a crate::gpu::GpuBuffer, std::ops::Range<u64>),
    pub sink: &'a Tensor,
}

/// What [`attention_decode_with`] reads into the GPU's cache beside its first dispatch (`bandwidth::warm`):
/// the next matrices' bytes, so that they read them from the cache, where the split has at most
/// `max_workgroups` workgroups (short context: the split's chain of dependent loads leaves the memory mostly
/// idle for longer than streaming the bytes takes).
#[derive(Clone)]
pub struct Warm<'a> {
    pub reads: [Option<WarmRead<'a>>; 2],
    pub max_workgroups: u32,
    /// Of each warming dispatch.
    pub workgroups: u32,
}

/// [`attention_decode`] with `prep` (as [`attention_decode_prep`]) and `warm` where given: the model's decode
/// step.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode_with(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, o: &Tensor, scratch: &Tensor, a: &AttnArgs, prep: Option<&crate::kernels::linear::PreparedX>, warm: Option<Warm>) -> Result<()> {
    attention_decode_tuned(rec, q, k, v, o, scratch, a, DecodeTuning::default(), prep, warm)
}

/// [`attention_decode`] split as `tuning` says where it says (else as the context's tuning or the model's
/// choice): the tests and `bench kernels` run every block size and workgroup count. `prep`, `warm`: as
/// [`attention_decode_with`].
#[allow(clippy::too_many_arguments)]
pub fn attention_decode_tuned(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, o: &Tensor, scratch: &Tensor, a: &AttnArgs, tuning: DecodeTuning, prep: Option<&crate::kernels::linear::PreparedX>, warm: Option<Warm>) -> Result<()> {
    check_args("attention_decode", a)?;
    let act = same_dtype("attention_decode", &[q, k, v, o])?;
    // K and V are read in 16-byte chunks: 8 values of f16, 4 of f32.
    let cw = if act == crate::gpu::DType::F16 { 8 } else { 4 };
    let lanes = decode_lanes(act, a.head_dim);
    check("attention_decode", a.head_dim % cw == 0 && lanes >= 1 && DECODE_BLOCKS[0] % lanes == 0, || {
        format!("head_dim {} must split into 16-byte chunks that divide {}", a.head_dim, DECODE_BLOCKS[0])
    })?;
    check(
        "attention_decode",
        [a.k.seq_stride, a.k.head_stride, a.v.seq_stride, a.v.head_stride].iter().all(|s| s % cw == 0) && a.k.offset == 0 && a.v.offset == 0,
        || format!("K and V strides must be multiples of {cw} and their offsets 0"),
    )?;
    check("attention_decode", a.n_q >= 1 && a.n_kv > 0 && a.n_q <= rec.ctx.caps.max_workgroups_per_dim, || format!("{} queries over {} keys", a.n_q, a.n_kv))?;
    check("attention_decode", !a.causal || a.pos_offset + a.n_q <= a.n_kv, || "causal queries past the keys".into())?;
    let (block, workgroups) = decode_tuning(rec.ctx, act, a.head_dim, tuning)?;
    let (chunk, n_splits) = decode_split(a.n_kv, a.n_kv_heads, block, workgroups);
    check("attention_decode", scratch.len() >= (a.n_q * a.n_heads * n_splits * split_len(a.head_dim)) as usize, || "scratch too small".into())?;
    let n_rep = a.n_heads / a.n_kv_heads;
    let base = decode_defines(rec.ctx, act, a.head_dim, n_rep, block)?;
    let params = DecodeParams {
        n_kv: a.n_kv,
        n_heads: a.n_heads,
        chunk,
        n_splits,
        k_head_stride: a.k.head_stride,
        k_seq_stride: a.k.seq_stride,
        v_head_stride: a.v.head_stride,
        v_seq_stride: a.v.seq_stride,
        q_offset: a.q_offset,
        o_offset: a.o_offset,
        scale: a.scale,
        q_stride: a.q_stride,
        o_stride: a.o_stride,
        kv_base: if a.causal { a.pos_offset } else { a.n_kv - 1 },
        _p: [0; 2],
    };
    let p1 = rec.ctx.pipeline(&ATTENTION_DECODE, &base)?;
    let b = vec![Binding::new(1, &q.buffer), Binding::new(2, &k.buffer), Binding::new(3, &v.buffer), Binding::new(4, &scratch.buffer)];
    rec.dispatch(p1, &params, b, [a.n_kv_heads, n_splits, a.n_q]);
    // between the two dispatches: the merge's barrier (it reads the split's results) waits for the warming too,
    // and nothing orders the warming after the split
    if let Some(w) = warm.filter(|w| a.n_kv_heads * n_splits * a.n_q <= w.max_workgroups) {
        for r in w.reads.into_iter().flatten() {
            crate::kernels::bandwidth::warm(rec, r.a, r.b, r.sink, w.workgroups)?;
        }
    }
    if let Some(xp) = prep {
        check("attention_decode", a.n_q == 1 && a.head_dim % 32 == 0 && a.o_offset % 32 == 0, || {
            format!("a prepared output needs one query ({}), a head size ({}) and output offset ({}) in whole blocks of 32", a.n_q, a.head_dim, a.o_offset)
        })?;
        check("attention_decode", a.o_offset as usize + (a.n_heads * a.head_dim) as usize <= xp.blocks() * 32, || format!("{} heads of {} at {} prepared in {} blocks", a.n_heads, a.head_dim, a.o_offset, xp.blocks()))?;
    }
    let p2 = rec.ctx.pipeline(&ATTENTION_DECODE, &base.clone().flag("COMBINE").flag_if("XP_OUT", prep.is_some()))?;
    let mut b = vec![Binding::new(4, &scratch.buffer), Binding::new(5, &o.buffer)];
    if let Some(xp) = prep {
        b.push(Binding::new(6, &xp.codes.buffer));
        b.push(Binding::new(7, &xp.scales.buffer));
    }
    rec.dispatch(p2, &params, b, [a.n_heads, 1, a.n_q]);
    Ok(())
}
