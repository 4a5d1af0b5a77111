// Y = X · Wᵀ (+ bias) for many rows of X (prefill, vision). W is (n, k) in 4 bits (W_Q4) or f16 (W_F16).
// Register tiling: a workgroup of 256 invocations (16 × 16) computes a TILE × TILE block of Y, each
// invocation a TM × TM block (TM = TILE/16) held in vec4 registers. K advances 32 at a time (one q4 group);
// the X slice and the dequantized W slice are staged in workgroup memory as f32, laid out [k][row/4] so the
// inner loop reads whole vec4s (2·TM/4 loads for TM² FMAs). Loads are assigned by row quads: an invocation
// loads 4 rows at one k position and transposes them in registers, so every workgroup-memory store is a
// whole vec4. Memory: 2 · 32 · TILE · 4 bytes (16 KiB at TILE 64, 32 KiB at TILE 128). Accumulation in f32.
// Reference: dequantize, then an f64 matrix product (tests/src/reference.rs).
#include "ids.wgsl"

const TM: u32 = TILE / 16u;   // outputs per invocation along each side
const Q: u32 = TILE / 4u;     // row quads per tile
const V: u32 = TM / 4u;       // vec4s per invocation along each side

struct Params {
    m: u32,         // rows of X
    n: u32,         // rows of W in this part
    k: u32,         // inputs (a multiple of 4)
    kb: u32,        // 16-byte blocks per row of W
    y_offset: u32,  // output column of this part's row 0
    y_stride: u32,  // elements per row of Y
    x_stride4: u32, // vec4s per row of X
    _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act4>;      // (m, k/4)
@group(0) @binding(2) var<storage, read> w: array<u32>;       // (n, kb·4)
#ifdef W_Q4
@group(0) @binding(3) var<storage, read> scales: array<u32>;  // (n·kb) f16, two per word
#endif
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;    // (y_stride)
#endif
@group(0) @binding(5) var<storage, read_write> y: array<act>; // (m, y_stride)

var<workgroup> xs: array<vec4<f32>, 32u * Q>; // [32 k][TILE/4 row quads of X]
var<workgroup> ws: array<vec4<f32>, 32u * Q>; // [32 k][TILE/4 row quads of W]

#ifdef W_Q4
fn scale(i: u32) -> f32 {
    let s = unpack2x16float(scales[i >> 1u]);
    return select(s.x, s.y, (i & 1u) == 1u);
}
// The 8 values of one code word, as (values 0..3, values 4..7), times the group scale.
fn deq(word: u32, d: f32) -> mat2x4<f32> {
    let lo = vec4<f32>((vec4<u32>(word) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)) - vec4<f32>(8.0);
    let hi = vec4<f32>((vec4<u32>(word) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u)) - vec4<f32>(8.0);
    return mat2x4<f32>(lo * d, hi * d);
}
#endif

fn load_x(row: u32, k4: u32, nk4: u32) -> vec4<f32> {
    if (row < p.m && k4 < nk4) {
        return vec4<f32>(x[row * p.x_stride4 + k4]);
    }
    return vec4<f32>(0.0);
}

@compute @workgroup_size(256)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = ids.lid;
    let tx = lid % 16u;
    let ty = lid / 16u;
    let n0 = wg.x * TILE;
    let m0 = wg.y * TILE;
    let nk4 = p.k / 4u;
    var acc: array<vec4<f32>, TM * V>; // acc[i * V + j]: row ty·TM + i, columns tx·TM + 4j .. +3
    let nkt = (p.k + 31u) / 32u;
    for (var kt = 0u; kt < nkt; kt++) {
        // X: (row quad, k vec4) tasks, k fastest so a warp reads whole row segments.
        for (var t = lid; t < Q * 8u; t += 256u) {
            let qd = t / 8u;
            let c4 = t % 8u;
            let r = m0 + qd * 4u;
            let gk = kt * 8u + c4;
            let v0 = load_x(r, gk, nk4);
            let v1 = load_x(r + 1u, gk, nk4);
            let v2 = load_x(r + 2u, gk, nk4);
            let v3 = load_x(r + 3u, gk, nk4);
            let b = c4 * 4u * Q + qd;
            xs[b] = vec4<f32>(v0.x, v1.x, v2.x, v3.x);
            xs[b + Q] = vec4<f32>(v0.y, v1.y, v2.y, v3.y);
            xs[b + 2u * Q] = vec4<f32>(v0.z, v1.z, v2.z, v3.z);
            xs[b + 3u * Q] = vec4<f32>(v0.w, v1.w, v2.w, v3.w);
        }
#ifdef W_Q4
        // W: (row quad, code word) tasks; a word holds 8 consecutive k of one row.
        for (var t = lid; t < Q * 4u; t += 256u) {
            let qd = t / 4u;
            let wd = t % 4u;
            var c: array<mat2x4<f32>, 4>;
            for (var i = 0u; i < 4u; i++) {
                let gn = n0 + qd * 4u + i;
                if (gn < p.n) {
                    c[i] = deq(w[(gn * p.kb + kt) * 4u + wd], scale(gn * p.kb + kt));
                } else {
                    c[i] = mat2x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0));
                }
            }
            let b = wd * 8u * Q + qd;
            ws[b] = vec4<f32>(c[0][0].x, c[1][0].x, c[2][0].x, c[3][0].x);
            ws[b + Q] = vec4<f32>(c[0][0].y, c[1][0].y, c[2][0].y, c[3][0].y);
            ws[b + 2u * Q] = vec4<f32>(c[0][0].z, c[1][0].z, c[2][0].z, c[3][0].z);
            ws[b + 3u * Q] = vec4<f32>(c[0][0].w, c[1][0].w, c[2][0].w, c[3][0].w);
            ws[b + 4u * Q] = vec4<f32>(c[0][1].x, c[1][1].x, c[2][1].x, c[3][1].x);
            ws[b + 5u * Q] = vec4<f32>(c[0][1].y, c[1][1].y, c[2][1].y, c[3][1].y);
            ws[b + 6u * Q] = vec4<f32>(c[0][1].z, c[1][1].z, c[2][1].z, c[3][1].z);
            ws[b + 7u * Q] = vec4<f32>(c[0][1].w, c[1][1].w, c[2][1].w, c[3][1].w);
        }
#else
        // W: (row quad, word of 2 halves) tasks; rows are kb·8 halves long (zero padded).
        for (var t = lid; t < Q * 16u; t += 256u) {
            let qd = t / 16u;
            let wd = t % 16u;
            let word = kt * 16u + wd;
            var c: array<vec2<f32>, 4>;
            for (var i = 0u; i < 4u; i++) {
                let gn = n0 + qd * 4u + i;
                if (gn < p.n && word < p.kb * 4u) {
                    c[i] = unpack2x16float(w[gn * p.kb * 4u + word]);
                } else {
                    c[i] = vec2<f32>(0.0);
                }
            }
            let b = wd * 2u * Q + qd;
            ws[b] = vec4<f32>(c[0].x, c[1].x, c[2].x, c[3].x);
            ws[b + Q] = vec4<f32>(c[0].y, c[1].y, c[2].y, c[3].y);
        }
#endif
        workgroupBarrier();
        for (var kk = 0u; kk < 32u; kk++) {
            for (var i4 = 0u; i4 < V; i4++) {
                let a = xs[kk * Q + ty * V + i4];
                for (var j = 0u; j < V; j++) {
                    let b = ws[kk * Q + tx * V + j];
                    let base = i4 * 4u * V + j;
                    acc[base] = fma(vec4<f32>(a.x), b, acc[base]);
                    acc[base + V] = fma(vec4<f32>(a.y), b, acc[base + V]);
                    acc[base + 2u * V] = fma(vec4<f32>(a.z), b, acc[base + 2u * V]);
                    acc[base + 3u * V] = fma(vec4<f32>(a.w), b, acc[base + 3u * V]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let gm = m0 + ty * TM + i;
        if (gm < p.m) {
            for (var j = 0u; j < V; j++) {
                let v = acc[i * V + j];
                for (var e = 0u; e < 4u; e++) {
                    let gn = n0 + tx * TM + j * 4u + e;
                    if (gn < p.n) {
                        var o = v[e];
#ifdef BIAS
                        o += bias[p.y_offset + gn];
#endif
                        y[gm * p.y_stride + p.y_offset + gn] = act(o);
                    }
                }
            }
        }
    }
}
