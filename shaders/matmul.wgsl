// Y = X · Wᵀ (+ bias) for many rows of X (prefill, vision). W is (n, k) in 4 bits (W_Q4) or f16 (W_F16).
// Register tiling: a workgroup of 256 invocations (16 × 16) computes a TILE × TILE block of Y, each
// invocation a TM × TM sub-block held in registers; K advances 32 at a time (one q4 group), the X and
// dequantized W slices staged in workgroup memory as f32 (2 · 32 · TILE · 4 bytes: 16 KiB at TILE 64,
// 32 KiB at TILE 128). Accumulation in f32.
// Reference: dequantize, then an f64 matrix product (tests/src/reference.rs).
#include "ids.wgsl"

const TM: u32 = TILE / 16u;
const T4: u32 = TILE / 4u;

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

var<workgroup> xs: array<vec4<f32>, 8u * TILE>; // [32 k][TILE m]
var<workgroup> ws: array<vec4<f32>, 8u * TILE>; // [32 k][TILE n]

fn put(buf: u32, kk: u32, col: u32, v: f32) {
    let i = kk * TILE + col;
    if (buf == 0u) { xs[i / 4u][i % 4u] = v; } else { ws[i / 4u][i % 4u] = v; }
}

#ifdef W_Q4
fn scale(i: u32) -> f32 {
    let s = unpack2x16float(scales[i >> 1u]);
    return select(s.x, s.y, (i & 1u) == 1u);
}
fn nib(word: u32, sh: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(word) >> vec4<u32>(sh, sh + 4u, sh + 8u, sh + 12u)) & vec4<u32>(15u)) - vec4<f32>(8.0);
}
#endif

@compute @workgroup_size(256)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = ids.lid;
    let tx = lid % 16u;
    let ty = lid / 16u;
    let n0 = wg.x * TILE;
    let m0 = wg.y * TILE;
    let k4 = p.k / 4u;
    var acc: array<array<f32, TM>, TM>;
    let nkt = (p.k + 31u) / 32u;
    for (var kt = 0u; kt < nkt; kt++) {
        // X slice: TILE rows × 8 vec4.
        for (var i = lid; i < TILE * 8u; i += 256u) {
            let row = i / 8u;
            let c4 = i % 8u;
            let gm = m0 + row;
            let gk4 = kt * 8u + c4;
            var v = vec4<f32>(0.0);
            if (gm < p.m && gk4 < k4) {
                v = vec4<f32>(x[gm * p.x_stride4 + gk4]);
            }
            put(0u, c4 * 4u, row, v.x);
            put(0u, c4 * 4u + 1u, row, v.y);
            put(0u, c4 * 4u + 2u, row, v.z);
            put(0u, c4 * 4u + 3u, row, v.w);
        }
#ifdef W_Q4
        // W slice: TILE rows × one group (4 words of 8 codes).
        for (var i = lid; i < TILE * 4u; i += 256u) {
            let row = i / 4u;
            let wd = i % 4u;
            let gn = n0 + row;
            var lo = vec4<f32>(0.0);
            var hi = vec4<f32>(0.0);
            if (gn < p.n) {
                let word = w[(gn * p.kb + kt) * 4u + wd];
                let d = scale(gn * p.kb + kt);
                lo = nib(word, 0u) * d;
                hi = nib(word, 16u) * d;
            }
            let kk = wd * 8u;
            put(1u, kk, row, lo.x);
            put(1u, kk + 1u, row, lo.y);
            put(1u, kk + 2u, row, lo.z);
            put(1u, kk + 3u, row, lo.w);
            put(1u, kk + 4u, row, hi.x);
            put(1u, kk + 5u, row, hi.y);
            put(1u, kk + 6u, row, hi.z);
            put(1u, kk + 7u, row, hi.w);
        }
#else
        // W slice: TILE rows × 16 words (32 halves).
        for (var i = lid; i < TILE * 16u; i += 256u) {
            let row = i / 16u;
            let wd = i % 16u;
            let gn = n0 + row;
            let word = kt * 16u + wd;
            var v = vec2<f32>(0.0);
            if (gn < p.n && word < p.kb * 4u) {
                v = unpack2x16float(w[gn * p.kb * 4u + word]);
            }
            put(1u, wd * 2u, row, v.x);
            put(1u, wd * 2u + 1u, row, v.y);
        }
#endif
        workgroupBarrier();
        for (var kk = 0u; kk < 32u; kk++) {
            var a: array<f32, TM>;
            var b: array<f32, TM>;
            for (var i = 0u; i < TM / 4u; i++) {
                let av = xs[kk * T4 + ty * (TM / 4u) + i];
                let bv = ws[kk * T4 + tx * (TM / 4u) + i];
                a[i * 4u] = av.x; a[i * 4u + 1u] = av.y; a[i * 4u + 2u] = av.z; a[i * 4u + 3u] = av.w;
                b[i * 4u] = bv.x; b[i * 4u + 1u] = bv.y; b[i * 4u + 2u] = bv.z; b[i * 4u + 3u] = bv.w;
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TM; j++) {
                    acc[i][j] = fma(a[i], b[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i++) {
        let gm = m0 + ty * TM + i;
        for (var j = 0u; j < TM; j++) {
            let gn = n0 + tx * TM + j;
            if (gm < p.m && gn < p.n) {
                var v = acc[i][j];
#ifdef BIAS
                v += bias[p.y_offset + gn];
#endif
                y[gm * p.y_stride + p.y_offset + gn] = act(v);
            }
        }
    }
}
