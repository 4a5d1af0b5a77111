// The decode step's matrix-vector products with their neighbours fused in: y = x · Wᵀ for one row x, W (n, k)
// in 4 bits (W_Q4), 8 bits (W_Q8) or f16 (W_F16). A workgroup computes R output rows: its WG invocations
// stride over the rows' 16-byte blocks, U blocks of every row a step (all their loads issued before any
// arithmetic), and each block of x is loaded and converted once for all R rows. The R sums are reduced
// together (one barrier), then R invocations finish one row each. Modes (one of them):
//   PLAIN     y[row] = acc (+ bias)                                         (lm_head, k/v of SigLIP-less paths)
//   RESIDUAL  y[row] += acc: the residual stream updated in place           (o_proj, down)
//   GLU       rows j and FFN + j of W (gate and up) together: y[j] = silu(gate) · up      (gate/up → SiLU·up)
//   ROPE_KV   the q and k rows in rotation pairs (i, i + D/2) of one head, rotated at position `pos`; q into
//             y, k and then the v rows (in their own workgroups) into the KV cache at `pos`
//             (qkv + bias → RoPE → KV append)
// SHORT (PLAIN, RESIDUAL; rows of a few hundred inputs at most, the tiny models'): one row per invocation, WG
// rows a workgroup, x read straight from memory. The general path gives every R rows a workgroup, which for a
// 151,680-row lm_head of 32 inputs is 38k workgroups of almost no work each; CPU renderers (lavapipe,
// SwiftShader) pay per workgroup and per barrier, and such a head took 95 % of their decode step.
// NORM: x is the residual stream before its RMSNorm: the workgroup gathers x's sum of squares from the x it
// loads anyway and scales its sums by rsqrt(mean(x²) + eps); the norm's weight was folded into W's columns
// when W was quantized (loader/plan.rs), so it costs no byte.
// TOP (q4): a code q goes into the top mantissa bits of 1.0 (the float 1 + q/16, exact) in one shift and one
// and-or, so a product costs 3 instructions instead of 4 (no subtraction of the zero point); the block's sum
// Σ(1 + q/16)·x = S gives Σ(q − 8)·x = 16·S − 24·Σx, with Σx shared by the workgroup's R rows. The rounding
// differs from the exact products' by about 1e-6 of Σ|x| (f32 sums of values near 1.5·|x|). The default
// for the model's q4 matrices (kernels/linear.rs FUSED_SHAPE).
// DOT4 (q4): x's block of 32 quantized to 8 bits (codes round(127·x/amax), scale amax/127, as llama.cpp's
// q8 activations) once for the workgroup's R rows, then each weight word's low and high nibbles (codes 0, 2,
// 4, 6 and 1, 3, 5, 7 of its 8) multiplied with x's codes four at a time by dot4I8Packed (one instruction
// where the device has integer dot products, SPIR-V OpSDot): about 5 instructions for 8 weights instead of
// 24; the zero point comes out once a block (Σ(q − 8)·c = Σq·c − 8·Σc). Costs x's rounding to 8 bits
// (≈ 0.4 % of a block's largest |x| an element); the integer sums are exact.
// LOADS_ONLY (benchmark only, `varco bench kernels --fused 32:8:1:loads`): every load of W, its scales and x
// as in the other paths, but the products replaced by one xor a block — what the kernel costs without arithmetic,
// to tell a memory limit from an instruction limit. Its results are meaningless.
// X16 (f16 activations, whole blocks only): x read 16 bytes (8 halves) a load, 4 loads a q4 block where act4's
// 8-byte loads take 8 (decode on the H100 +2.8 %, BENCHMARKS.md nineteenth session).
// XQ8 (with DOT4): x arrives prepared, each block's 8-bit codes (lo, hi as DOT4 orders them) in xqc and its
// (scale, Σ codes, Σ x²) in xqs, as XP_OUT writes them: no x loads, no quantization, and NORM's sum of squares
// from the blocks' own. x itself is not bound.
// XP_OUT (RESIDUAL, GLU; x prepared once): the workgroup owns whole 32-value blocks of its output, SLICES
// slices of SL invocations (each slice the shape's workgroup, computing its R rows as without XP_OUT), and
// writes each block's codes and (scale, Σ codes, Σ x²) as DOT4 would form them from the stored output
// (xpc, xps): the next matrix reads them through XQ8 instead of loading and quantizing x in every one of its
// workgroups.
// ARGMAX (PLAIN, general path; the greedy choice's first pass, lm_head): the workgroup also writes its rows'
// largest logit as stored (f32 bits; f16 rounded by arithmetic, prepared.wgsl) and the first row that holds
// it, at slot slot0 + g of `maxima`, so that argmax.wgsl FINAL reduces those instead of a pass over the logits.
// Accumulation in f32. Reference: tests/src/reference.rs (linear, rope, rms_norm, silu) composed.
#include "ids.wgsl"
#include "dequant.wgsl"
#include "rope_angle.wgsl"
#include "prepared.wgsl"

struct Params {
    n: u32,          // rows out (PLAIN, RESIDUAL: this part's; GLU: FFN, the pairs; ROPE_KV: q, k and v rows)
    k: u32,          // inputs (a multiple of 32 for q4/q8, of 8 for f16)
    kb: u32,         // 16-byte blocks per row of W
    y_offset: u32,   // output column of this part's row 0 (PLAIN, RESIDUAL)
    eps: f32,        // NORM
    pos: u32,        // ROPE_KV: the token's position
    head_dim: u32,   // ROPE_KV
    q_heads: u32,    // ROPE_KV
    kv_heads: u32,   // ROPE_KV
    capacity: u32,   // ROPE_KV: positions of the cache
    qk_groups: u32,  // ROPE_KV: workgroups of the q/k pairs; the v rows' follow
    slot0: u32,      // ARGMAX: this part's first slot of maxima
}

@group(0) @binding(0) var<uniform> p: Params;
#ifdef XQ8
@group(0) @binding(9) var<storage, read> xqc: array<vec4<u32>>;  // (kb, 2): codes lo, hi
@group(0) @binding(10) var<storage, read> xqs: array<vec4<f32>>; // (kb): scale, Σ codes, Σ x², 0
#else
#ifdef X16
@group(0) @binding(1) var<storage, read> x16: array<vec4<u32>>;  // (k/8) f16, 8 a load
#else
@group(0) @binding(1) var<storage, read> x: array<act4>;          // (k/4)
#endif
#endif
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;     // (n, kb)
#ifdef W_Q
@group(0) @binding(3) var<storage, read> scales: array<u32>;     // (n·kb) f16, two per word
#endif
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;       // (n)
#endif
@group(0) @binding(5) var<storage, read_write> y: array<act>;    // PLAIN: (n); RESIDUAL: (n) in place; GLU: (FFN); ROPE_KV: q (heads·D)
#ifdef ROPE_KV
@group(0) @binding(6) var<storage, read_write> kc: array<act>;   // (kv_heads, capacity, D)
@group(0) @binding(7) var<storage, read_write> vc: array<act>;   // (kv_heads, capacity, D)
@group(0) @binding(8) var<storage, read> inv_freq: array<f32>;   // (D / 2)
#endif

#ifdef ARGMAX
@group(0) @binding(13) var<storage, read_write> maxima: array<vec2<u32>>; // (slots): largest as f32 bits, its row
var<workgroup> amv: array<f32, R>;
#endif

#ifdef XP_OUT
// the whole output's blocks (all parts of W): this part's start at y_offset / 32
@group(0) @binding(11) var<storage, read_write> xpc: array<u32>;       // (outputs/32, 8): codes lo, hi
@group(0) @binding(12) var<storage, read_write> xps: array<vec4<f32>>; // (outputs/32): scale, Σ codes, Σ x², 0
#endif

#ifdef NORM
const SUMS: u32 = R + 1u;
#else
const SUMS: u32 = R;
#endif
#ifdef XP_OUT
// SLICES (a define) of SL invocations; RO outputs a slice
const SL: u32 = WG / SLICES;
#ifdef GLU
const RO: u32 = R / 2u;
#else
const RO: u32 = R;
#endif
// the block's outputs as stored, its largest |value| (non-negative floats order as their bits), and
// per packed word (Σ x², Σ codes)
var<workgroup> xv: array<f32, 32>;
var<workgroup> xamax: atomic<u32>;
var<workgroup> xpart: array<vec2<f32>, 8>;
#else
const SL: u32 = WG;
const SLICES: u32 = 1u;
#endif
#ifndef SHORT
var<workgroup> red: array<f32, SUMS * WG>;
#ifdef SUBGROUP
var<workgroup> fin: array<f32, SUMS * SLICES>;
// Sum s (a row's, or NORM's squares) of slice `slice`, once reduced.
fn rsum(slice: u32, s: u32) -> f32 {
    return fin[s * SLICES + slice];
}
#else
fn rsum(slice: u32, s: u32) -> f32 {
    return red[s * WG + slice * SL];
}
#endif
#endif

// Block c of W's row `row`, dequantized: 8 (q4), 4 (q8) or 2 (f16) vec4 of values, scale applied later.
fn w_at(row: u32, c: u32) -> vec4<u32> {
    return w[row * p.kb + c];
}

#ifdef W_Q4
const XB: u32 = 8u;  // vec4s of x a block covers
fn w_scale(row: u32, c: u32) -> f32 { return scale(row * p.kb + c); }
#endif
#ifdef W_Q8
const XB: u32 = 4u;
fn w_scale(row: u32, c: u32) -> f32 { return scale((row * p.kb + c) >> 1u); }
#endif
#ifdef W_F16
const XB: u32 = 2u;
fn w_scale(row: u32, c: u32) -> f32 { return 1.0; }
#endif

#ifdef W_Q4
#ifdef TOP
// Codes 0..3 (lo) or 4..7 (hi) of a word as 1 + q/16: each nibble shifted to bits 19..22, under 1.0's exponent.
fn top_lo(w: u32) -> vec4<f32> {
    let bits = (vec4<u32>(w << 19u, w << 15u, w << 11u, w << 7u) & vec4<u32>(0x00780000u)) | vec4<u32>(0x3F800000u);
    return bitcast<vec4<f32>>(bits);
}
fn top_hi(w: u32) -> vec4<f32> {
    let bits = (vec4<u32>(w << 3u, w >> 1u, w >> 5u, w >> 9u) & vec4<u32>(0x00780000u)) | vec4<u32>(0x3F800000u);
    return bitcast<vec4<f32>>(bits);
}
#endif
#endif

#ifdef DOT4
// A block of x quantized to 8 bits: lo/hi hold the codes of x's values 0, 2, 4, 6 / 1, 3, 5, 7 of each group
// of 8 (the order in which a weight word's low and high nibbles come apart), d the scale, s the codes' sum.
struct XQ {
    lo: vec4<u32>,
    hi: vec4<u32>,
    d: f32,
    s: i32,
}

fn quant_x(x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>) -> XQ {
    let m = max(max(max(abs(x0), abs(x1)), max(abs(x2), abs(x3))), max(max(abs(x4), abs(x5)), max(abs(x6), abs(x7))));
    let amax = max(max(m.x, m.y), max(m.z, m.w));
    // pack4x8snorm(e) = floor(0.5 + 127·clamp(e, −1, 1)) a byte; a block of zeros stays zeros
    let inv = select(0.0, 1.0 / amax, amax > 0.0);
    var q: XQ;
    q.lo = vec4<u32>(pack4x8snorm(vec4<f32>(x0.xz, x1.xz) * inv), pack4x8snorm(vec4<f32>(x2.xz, x3.xz) * inv),
                     pack4x8snorm(vec4<f32>(x4.xz, x5.xz) * inv), pack4x8snorm(vec4<f32>(x6.xz, x7.xz) * inv));
    q.hi = vec4<u32>(pack4x8snorm(vec4<f32>(x0.yw, x1.yw) * inv), pack4x8snorm(vec4<f32>(x2.yw, x3.yw) * inv),
                     pack4x8snorm(vec4<f32>(x4.yw, x5.yw) * inv), pack4x8snorm(vec4<f32>(x6.yw, x7.yw) * inv));
    let ones = 0x01010101u;
    q.s = ((dot4I8Packed(q.lo.x, ones) + dot4I8Packed(q.hi.x, ones)) + (dot4I8Packed(q.lo.y, ones) + dot4I8Packed(q.hi.y, ones)))
        + ((dot4I8Packed(q.lo.z, ones) + dot4I8Packed(q.hi.z, ones)) + (dot4I8Packed(q.lo.w, ones) + dot4I8Packed(q.hi.w, ones)));
    q.d = amax / 127.0;
    return q;
}

// Σ(q − 8)·c over a q4 block and x's codes: the codes 0..15 are non-negative bytes once taken apart, so
// the signed dot product takes them as they are.
fn block_dot4(b: vec4<u32>, q: XQ) -> i32 {
    let m = 0x0F0F0F0Fu;
    let t = ((dot4I8Packed(b.x & m, q.lo.x) + dot4I8Packed((b.x >> 4u) & m, q.hi.x)) + (dot4I8Packed(b.y & m, q.lo.y) + dot4I8Packed((b.y >> 4u) & m, q.hi.y)))
          + ((dot4I8Packed(b.z & m, q.lo.z) + dot4I8Packed((b.z >> 4u) & m, q.hi.z)) + (dot4I8Packed(b.w & m, q.lo.w) + dot4I8Packed((b.w >> 4u) & m, q.hi.w)));
    return t - 8 * q.s;
}
#endif

// Σx of a block's x values (TOP's correction; LOADS_ONLY keeps x's loads alive with it).
fn x_sum(x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>) -> f32 {
    return dot(((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7)), vec4<f32>(1.0));
}

// The dot product of a block of W with the x values it covers (xs: XB vec4s; sx: their sum, for TOP).
fn block_dot(b: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>, sx: f32) -> f32 {
#ifdef LOADS_ONLY
    return f32((b.x ^ b.y) ^ (b.z ^ b.w)) + sx;
#else
#ifdef W_Q4
#ifdef TOP
    let s = dot(x0, top_lo(b.x)) + dot(x1, top_hi(b.x)) + dot(x2, top_lo(b.y)) + dot(x3, top_hi(b.y))
          + dot(x4, top_lo(b.z)) + dot(x5, top_hi(b.z)) + dot(x6, top_lo(b.w)) + dot(x7, top_hi(b.w));
    return 16.0 * s - 24.0 * sx;
#else
    return dot(x0, nib(b.x, 0u)) + dot(x1, nib(b.x, 16u)) + dot(x2, nib(b.y, 0u)) + dot(x3, nib(b.y, 16u))
         + dot(x4, nib(b.z, 0u)) + dot(x5, nib(b.z, 16u)) + dot(x6, nib(b.w, 0u)) + dot(x7, nib(b.w, 16u));
#endif
#endif
#ifdef W_Q8
    return dot(x0, byt(b.x)) + dot(x1, byt(b.y)) + dot(x2, byt(b.z)) + dot(x3, byt(b.w));
#endif
#ifdef W_F16
    return dot(x0, h8(b.xy)) + dot(x1, h8(b.zw));
#endif
#endif
}

// Whether block_dot needs x's sum (TOP's correction; LOADS_ONLY keeps x's loads alive with it).
#ifdef LOADS_ONLY
const NEED_SX: bool = true;
#else
#ifdef W_Q4
#ifdef TOP
const NEED_SX: bool = true;
#else
const NEED_SX: bool = false;
#endif
#else
const NEED_SX: bool = false;
#endif
#endif

// Weight row of output slot r (0 ≤ r < R) of workgroup g, and whether it exists.
fn row_of(g: u32, r: u32) -> vec2<u32> {
#ifdef GLU
    // pairs: slots 0 .. R/2 are gate rows j, slots R/2 .. R the matching up rows FFN + j
    let j = g * (R / 2u) + r % (R / 2u);
    return vec2<u32>(select(j, p.n + j, r >= R / 2u), u32(j < p.n));
#else
#ifdef ROPE_KV
    let half = p.head_dim / 2u;
    if (g < p.qk_groups) {
        // slot r < R/2: element i of a q or k head, slot r + R/2: element i + D/2
        let pair = g * (R / 2u) + r % (R / 2u);
        let hh = pair / half;
        let i = pair % half + select(0u, half, r >= R / 2u);
        return vec2<u32>(hh * p.head_dim + i, u32(hh < p.q_heads + p.kv_heads));
    }
    let row = (p.q_heads + p.kv_heads) * p.head_dim + (g - p.qk_groups) * R + r;
    return vec2<u32>(row, u32(row < p.n));
#else
    let row = g * R + r;
    return vec2<u32>(row, u32(row < p.n));
#endif
#endif
}

#ifndef XQ8
#ifdef X16
// x's vec4s 2i and 2i + 1 from one 16-byte load.
fn xl2(i: u32) -> array<vec4<f32>, 2> {
    let v = x16[i];
    return array<vec4<f32>, 2>(vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)), vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w)));
}
#else
// x's vec4 i; PARTIAL (k not a whole number of blocks: the last block's padding): 0 past the end.
fn xl(i: u32) -> vec4<f32> {
#ifdef PARTIAL
    return select(vec4<f32>(0.0), vec4<f32>(x[min(i, p.k / 4u - 1u)]), i < p.k / 4u);
#else
    return vec4<f32>(x[i]);
#endif
}
#endif
#endif

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

#ifndef GLU
#ifndef ROPE_KV
// PLAIN and RESIDUAL, both paths: this part's row `row` gets its sum plus the bias, or is added to in place;
// the value as stored.
fn finish_row(row: u32, sum: f32) -> f32 {
    var v = sum;
#ifdef BIAS
    v += bias[p.y_offset + row];
#endif
#ifdef RESIDUAL
    v += f32(y[p.y_offset + row]);
#endif
#ifdef ARGMAX
    // compared as stored, whatever the compiler makes of a round trip through f16
    let sv = stored(v);
    y[p.y_offset + row] = act(sv);
    return sv;
#else
    y[p.y_offset + row] = act(v);
    return v;
#endif
}
#endif
#endif

#ifdef SHORT
@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_wg(wg, nwg) * WG + ids.lid;
    if (row >= p.n) {
        return;
    }
    var acc = 0.0;
    var ss = 0.0;
    for (var c = 0u; c < p.kb; c++) {
        let i0 = c * XB;
        var xv: array<vec4<f32>, 8>;
        for (var j = 0u; j < XB; j++) {
            // the last block's padding reads as zeros (xl)
            xv[j] = xl(i0 + j);
#ifdef NORM
            ss += dot(xv[j], xv[j]);
#endif
        }
        var sx = 0.0;
        if (NEED_SX) {
            sx = x_sum(xv[0], xv[1], xv[2], xv[3], xv[4], xv[5], xv[6], xv[7]);
        }
        let d = block_dot(w_at(row, c), xv[0], xv[1], xv[2], xv[3], xv[4], xv[5], xv[6], xv[7], sx);
#ifdef W_F16
        acc += d;
#else
        acc += w_scale(row, c) * d;
#endif
    }
#ifdef NORM
    let v = acc * inverseSqrt(ss / f32(p.k) + p.eps);
#else
    let v = acc;
#endif
    finish_row(row, v);
}
#else
@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = ids.lid;
#ifdef XP_OUT
    // slice lid / SL computes the rows of the shape's workgroup g
    let wgi = flat_wg(wg, nwg);
    // a grid folded over two dimensions may round the count up: such a workgroup has no block (uniform)
    if (wgi * 32u >= p.n) {
        return;
    }
    let slice = lid / SL;
    let g = wgi * SLICES + slice;
    let lane = lid % SL;
    // not left to the implicit zeroing of workgroup memory, which a pipeline may switch off
    if (lid == 0u) {
        atomicStore(&xamax, 0u);
    }
#else
    let g = flat_wg(wg, nwg);
    let lane = lid;
#endif
    // rows past the end read row 0 (in bounds) and are never written
#for r in 0..R
    let rv{r} = row_of(g, {r}u);
    let n{r} = select(0u, rv{r}.x, rv{r}.y == 1u);
    var acc{r} = 0.0;
#endfor
    var ss = 0.0;
    for (var c0 = lane; c0 < p.kb; c0 += U * SL) {
#for u in 0..U
        // U blocks of every row, loads first
        let c{u} = min(c0 + {u}u * SL, p.kb - 1u);
        let live{u} = c0 + {u}u * SL < p.kb;
#for r in 0..R
        let b{r}_{u} = w_at(n{r}, c{u});
        let d{r}_{u} = select(0.0, w_scale(n{r}, c{u}), live{u});
#endfor
#endfor
#for u in 0..U
        {
            // x of block u (a block past the end reads the last one; its scale is 0)
            let i0 = c{u} * XB;
#ifndef XQ8
#ifdef X16
            let xa = xl2(i0 / 2u);
            let xb = xl2(i0 / 2u + 1u);
            let xc = xl2(i0 / 2u + 2u);
            let xd = xl2(i0 / 2u + 3u);
            let x0 = xa[0];
            let x1 = xa[1];
            let x2 = xb[0];
            let x3 = xb[1];
            let x4 = xc[0];
            let x5 = xc[1];
            let x6 = xd[0];
            let x7 = xd[1];
#else
            let x0 = xl(i0);
            let x1 = xl(i0 + 1u);
#ifdef W_F16
            let x2 = vec4<f32>(0.0);
            let x3 = vec4<f32>(0.0);
#else
            let x2 = xl(i0 + 2u);
            let x3 = xl(i0 + 3u);
#endif
#ifdef W_Q4
            let x4 = xl(i0 + 4u);
            let x5 = xl(i0 + 5u);
            let x6 = xl(i0 + 6u);
            let x7 = xl(i0 + 7u);
#else
            let x4 = vec4<f32>(0.0);
            let x5 = vec4<f32>(0.0);
            let x6 = vec4<f32>(0.0);
            let x7 = vec4<f32>(0.0);
#endif
#endif
#ifdef NORM
            if (live{u}) {
                ss += dot(x0, x0) + dot(x1, x1) + dot(x2, x2) + dot(x3, x3) + dot(x4, x4) + dot(x5, x5) + dot(x6, x6) + dot(x7, x7);
            }
#endif
#endif
#ifdef DOT4
#ifdef XQ8
            let xs{u} = xqs[c{u}];
#ifdef NORM
            if (live{u}) {
                ss += xs{u}.z;
            }
#endif
            let xq = XQ(xqc[2u * c{u}], xqc[2u * c{u} + 1u], xs{u}.x, i32(xs{u}.y));
#else
            let xq = quant_x(x0, x1, x2, x3, x4, x5, x6, x7);
#endif
#for r in 0..R
            acc{r} += (d{r}_{u} * xq.d) * f32(block_dot4(b{r}_{u}, xq));
#endfor
#else
            var sx = 0.0;
            if (NEED_SX) {
                sx = x_sum(x0, x1, x2, x3, x4, x5, x6, x7);
            }
#endif
#ifdef W_F16
#for r in 0..R
            acc{r} += select(0.0, block_dot(b{r}_{u}, x0, x1, x2, x3, x4, x5, x6, x7, sx), live{u});
#endfor
#else
#ifndef DOT4
#for r in 0..R
            acc{r} += d{r}_{u} * block_dot(b{r}_{u}, x0, x1, x2, x3, x4, x5, x6, x7, sx);
#endfor
#endif
#endif
        }
#endfor
    }
    // every sum of the workgroup at once: red[s * WG + …]
#ifdef SUBGROUP
    let sg = lid / ids.sg_size;
#for r in 0..R
    let t{r} = subgroupAdd(acc{r});
#endfor
#ifdef NORM
    let tss = subgroupAdd(ss);
#endif
    if (ids.sg_lane == 0u) {
#for r in 0..R
        red[{r}u * WG + sg] = t{r};
#endfor
#ifdef NORM
        red[R * WG + sg] = tss;
#endif
    }
    workgroupBarrier();
    // a slice's partials: SL / sg_size subgroups (one where the subgroup is wider than the workgroup; the
    // host drops SUBGROUP where one could span two slices)
    let nps = (SL + ids.sg_size - 1u) / ids.sg_size;
    if (lid < SUMS * SLICES) {
        let sl = lid / SUMS;
        let s = lid % SUMS;
        var t = 0.0;
        for (var i = 0u; i < nps; i++) {
            t += red[s * WG + sl * nps + i];
        }
        fin[s * SLICES + sl] = t;
    }
    workgroupBarrier();
#else
#for r in 0..R
    red[{r}u * WG + lid] = acc{r};
#endfor
#ifdef NORM
    red[R * WG + lid] = ss;
#endif
    workgroupBarrier();
    for (var o = SL / 2u; o > 0u; o >>= 1u) {
        if (lane < o) {
            for (var s = 0u; s < SUMS; s++) {
                red[s * WG + lid] += red[s * WG + lid + o];
            }
        }
        workgroupBarrier();
    }
#endif
    // one invocation finishes each output
#ifdef XP_OUT
    if (lid < 32u) {
        // the workgroup's block: output lid is slice lid / RO's output lid % RO
        let sl = lid / RO;
        let o = lid % RO;
#ifdef NORM
        let sn = inverseSqrt(rsum(sl, R) / f32(p.k) + p.eps);
#else
        let sn = 1.0;
#endif
#ifdef GLU
        let hv = stored(silu(rsum(sl, o) * sn) * (rsum(sl, o + R / 2u) * sn));
        y[wgi * 32u + lid] = act(hv);
#else
        let at = p.y_offset + wgi * 32u + lid;
        let hv = stored(rsum(sl, o) * sn + f32(y[at]));
        y[at] = act(hv);
#endif
        xv[lid] = hv;
        atomicMax(&xamax, bitcast<u32>(abs(hv)));
    }
    workgroupBarrier();
    // the block's eight packed words (prepared.wgsl), one an invocation
    let blk = p.y_offset / 32u + wgi;
    let amax = bitcast<f32>(atomicLoad(&xamax));
    if (lid < 8u) {
        let f = prepared_first(lid);
        let pw = prepared_word(vec4<f32>(xv[f], xv[f + 2u], xv[f + 4u], xv[f + 6u]), amax);
        xpc[blk * 8u + lid] = pw.word;
        xpart[lid] = pw.sums;
    }
    workgroupBarrier();
    if (lid == 0u) {
        var t = vec2<f32>(0.0);
        for (var i = 0u; i < 8u; i++) {
            t += xpart[i];
        }
        xps[blk] = prepared_scales(amax, t);
    }
#else
#ifdef NORM
    let sn = inverseSqrt(rsum(0u, R) / f32(p.k) + p.eps);
#else
    let sn = 1.0;
#endif
#ifdef GLU
    if (lid < R / 2u) {
        let j = g * (R / 2u) + lid;
        if (j < p.n) {
            let gate = rsum(0u, lid) * sn;
            let up = rsum(0u, lid + R / 2u) * sn;
            y[j] = act(silu(gate) * up);
        }
    }
#endif
#ifdef ROPE_KV
    let half = p.head_dim / 2u;
    if (g < p.qk_groups) {
        if (lid < R / 2u) {
            let pair = g * (R / 2u) + lid;
            let hh = pair / half;
            let i = pair % half;
            if (hh < p.q_heads + p.kv_heads) {
                let r0 = hh * p.head_dim + i;
                let a = rsum(0u, lid) * sn + bias[r0];
                let b = rsum(0u, lid + R / 2u) * sn + bias[r0 + half];
                let cs = cos_sin(f32(p.pos) * inv_freq[i]);
                let ra = act(a * cs.x - b * cs.y);
                let rb = act(b * cs.x + a * cs.y);
                if (hh < p.q_heads) {
                    y[r0] = ra;
                    y[r0 + half] = rb;
                } else {
                    let at = ((hh - p.q_heads) * p.capacity + p.pos) * p.head_dim + i;
                    kc[at] = ra;
                    kc[at + half] = rb;
                }
            }
        }
    } else if (lid < R) {
        let row = (p.q_heads + p.kv_heads) * p.head_dim + (g - p.qk_groups) * R + lid;
        if (row < p.n) {
            let e = row - (p.q_heads + p.kv_heads) * p.head_dim;
            let gh = e / p.head_dim;
            vc[(gh * p.capacity + p.pos) * p.head_dim + e % p.head_dim] = act(rsum(0u, lid) * sn + bias[row]);
        }
    }
#endif
#ifndef GLU
#ifndef ROPE_KV
#ifdef ARGMAX
    // rows past the end (the last workgroup's) are left out of the comparison below
    if (lid < R) {
        let row = g * R + lid;
        var v = 0.0;
        if (row < p.n) {
            v = finish_row(row, rsum(0u, lid) * sn);
        }
        amv[lid] = v;
    }
    workgroupBarrier();
    // (a grid folded over two dimensions may round the count up: such a workgroup has no row; uniform)
    if (lid == 0u && g * R < p.n) {
        var best = amv[0];
        var at = 0u;
        for (var r = 1u; r < min(R, p.n - g * R); r++) {
            if (amv[r] > best) {
                best = amv[r];
                at = r;
            }
        }
        maxima[p.slot0 + g] = vec2<u32>(bitcast<u32>(best), p.y_offset + g * R + at);
    }
#else
    if (lid < R) {
        let row = g * R + lid;
        if (row < p.n) {
            finish_row(row, rsum(0u, lid) * sn);
        }
    }
#endif
#endif
#endif
#endif
}
#endif
