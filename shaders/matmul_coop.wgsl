// Y = X · Wᵀ (+ bias) for many rows of X, on the tensor cores (the cooperative-matrix tier, issue 14): W is
// (n, k) in 4 bits (W_Q4), 8 bits (W_Q8) or f16 (W_F16); X and Y are f16 activations.
// A workgroup of 256 invocations is 8 subgroups of 32 (the tier is chosen only where the subgroup size is 32:
// cooperative matrices belong to a subgroup, and the tile split below counts on 8 of them). It computes a
// 128 × 128 block of Y: subgroup s owns rows 32·(s / 2) .. + 32 and columns 64·(s % 2) .. + 64, as 2 × 4
// accumulators of 16 × 16 in f32. K advances KT (32 or 64: one or two q4 groups) a stage; the X slice and
// the dequantized W slice are staged in workgroup memory as f16, each row's KT values contiguous (padded by 8
// halves so that the 16 rows one matrix load reads start in different banks): X row-major is the A operand,
// W's rows are the columns of the B operand (Wᵀ column-major). The products are f16 × f16 summed in f32 —
// the "accumulation always f32" rule holds; only the inputs are rounded to f16 (the weights' q4/q8 values
// times their f16 scale are exact in f16 up to the scale's rounding, the activations are f16 already).
// Results leave through a 16 × 16 f32 scratch per subgroup, so that the bias, the bounds of Y and the
// conversion to f16 are applied per element.
// Reference: dequantize, then an f64 matrix product (tests/src/reference.rs).
#include "linear_io.wgsl"
#include "dequant.wgsl"

const TILE: u32 = 128u;
const LD: u32 = KT + 8u;       // halves per staged row

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f16>>; // (m, k/4)
@group(0) @binding(2) var<storage, read> w: array<u32>;       // (n, kb·4)
#ifdef W_Q
@group(0) @binding(3) var<storage, read> scales: array<u32>;  // (n·kb) f16, two per word
#endif
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;    // (y_stride)
#endif
@group(0) @binding(5) var<storage, read_write> y: array<f16>; // (m, y_stride)

var<workgroup> xs: array<f16, TILE * LD>;   // [row of X][k]
var<workgroup> ws: array<f16, TILE * LD>;   // [row of W][k]
var<workgroup> out: array<f32, 8u * 256u>;  // [subgroup][16 × 16], row-major

fn put4(buf: u32, i: u32, v: vec4<f32>) {
    if (buf == 0u) {
        xs[i] = f16(v.x);
        xs[i + 1u] = f16(v.y);
        xs[i + 2u] = f16(v.z);
        xs[i + 3u] = f16(v.w);
    } else {
        ws[i] = f16(v.x);
        ws[i + 1u] = f16(v.y);
        ws[i + 2u] = f16(v.z);
        ws[i + 3u] = f16(v.w);
    }
}

// Sixteen rows × sixteen columns of Y from this subgroup's scratch: each lane writes 8 elements.
fn store16(sg: u32, lane: u32, r0: u32, c0: u32) {
    for (var e = 0u; e < 8u; e++) {
        let i = lane * 8u + e;
        let r = r0 + i / 16u;
        let c = c0 + i % 16u;
        if (r < p.m && c < p.n) {
            var o = out[sg * 256u + i];
#ifdef BIAS
            o += bias[p.y_offset + c];
#endif
            y[r * p.y_stride + p.y_offset + c] = f16(o);
        }
    }
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let sg = lid / 32u;
    let lane = lid % 32u;
    let n0 = wg.x * TILE;
    let m0 = wg.y * TILE;
    let sr = (sg / 2u) * 32u;   // this subgroup's first row within the tile
    let sc = (sg % 2u) * 64u;   // and first column
    let nk4 = p.k / 4u;
#for i in 0..2
#for j in 0..4
    var acc{i}{j} = coop_mat16x16<f32, C>();
#endfor
#endfor
    let nkt = (p.k + KT - 1u) / KT;
    for (var kt = 0u; kt < nkt; kt++) {
        // X: TILE rows × KT/4 vec4s, k fastest so that a warp reads whole row segments.
        for (var t = lid; t < TILE * (KT / 4u); t += 256u) {
            let r = t / (KT / 4u);
            let c4 = t % (KT / 4u);
            let gk4 = kt * (KT / 4u) + c4;
            var v = vec4<f32>(0.0);
            if (m0 + r < p.m && gk4 < nk4) {
                v = vec4<f32>(x[(m0 + r) * p.x_stride4 + gk4]);
            }
            put4(0u, r * LD + c4 * 4u, v);
        }
#ifdef W_Q4
        // W: TILE rows × KT/8 code words (8 consecutive k of one row each).
        for (var t = lid; t < TILE * (KT / 8u); t += 256u) {
            let r = t / (KT / 8u);
            let wd = t % (KT / 8u);
            let gn = n0 + r;
            let g = kt * (KT / 32u) + wd / 4u;   // the q4 group
            var lo = vec4<f32>(0.0);
            var hi = vec4<f32>(0.0);
            if (gn < p.n && g < p.kb) {
                let word = w[(gn * p.kb + g) * 4u + wd % 4u];
                let d = scale(gn * p.kb + g);
                lo = nib(word, 0u) * d;
                hi = nib(word, 16u) * d;
            }
            put4(1u, r * LD + wd * 8u, lo);
            put4(1u, r * LD + wd * 8u + 4u, hi);
        }
#endif
#ifdef W_Q8
        // W: TILE rows × KT/4 code words (4 consecutive k of one row each; 16-byte blocks of 16 k, two a group).
        for (var t = lid; t < TILE * (KT / 4u); t += 256u) {
            let r = t / (KT / 4u);
            let wd = t % (KT / 4u);
            let gn = n0 + r;
            let blk = kt * (KT / 16u) + wd / 4u;
            var v = vec4<f32>(0.0);
            if (gn < p.n && blk < p.kb) {
                let b = gn * p.kb + blk;
                v = byt(w[b * 4u + wd % 4u]) * scale(b >> 1u);
            }
            put4(1u, r * LD + wd * 4u, v);
        }
#endif
#ifdef W_F16
        // W: TILE rows × KT/2 words of two halves (rows are kb·8 halves, zero padded).
        for (var t = lid; t < TILE * (KT / 2u); t += 256u) {
            let r = t / (KT / 2u);
            let wd = t % (KT / 2u);
            let gn = n0 + r;
            let word = kt * (KT / 2u) + wd;
            var v = vec2<f32>(0.0);
            if (gn < p.n && word < p.kb * 4u) {
                v = unpack2x16float(w[gn * p.kb * 4u + word]);
            }
            ws[r * LD + wd * 2u] = f16(v.x);
            ws[r * LD + wd * 2u + 1u] = f16(v.y);
        }
#endif
        workgroupBarrier();
        for (var kk = 0u; kk < KT; kk += 16u) {
#for i in 0..2
            let a{i} = coopLoadT<coop_mat16x16<f16, A>>(&xs[(sr + {i}u * 16u) * LD + kk], LD);
#endfor
#for j in 0..4
            let b{j} = coopLoad<coop_mat16x16<f16, B>>(&ws[(sc + {j}u * 16u) * LD + kk], LD);
#endfor
#for i in 0..2
#for j in 0..4
            acc{i}{j} = coopMultiplyAdd(a{i}, b{j}, acc{i}{j});
#endfor
#endfor
        }
        workgroupBarrier();
    }
#for i in 0..2
#for j in 0..4
    coopStoreT(acc{i}{j}, &out[sg * 256u], 16u);
    workgroupBarrier();
    store16(sg, lane, m0 + sr + {i}u * 16u, n0 + sc + {j}u * 16u);
    workgroupBarrier();
#endfor
#endfor
}
