// Row normalisation, one workgroup per row, statistics in f32:
//   RMSNorm (default, Qwen2):  y = x · rsqrt(mean(x²) + eps) · w
//   LAYER (SigLIP LayerNorm):  y = (x − mean) · rsqrt(var + eps) · w + b   (two passes: mean, then var)
// Reference: tests/src/reference.rs rms_norm / layer_norm (f64).
#include "ids.wgsl"
#include "reduce.wgsl"

struct Params {
    n_rows: u32,
    n: u32,        // row width
    x_stride: u32,
    y_stride: u32,
    eps: f32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;       // (n_rows, x_stride)
@group(0) @binding(2) var<storage, read> w: array<f32>;       // (n)
#ifdef LAYER
@group(0) @binding(3) var<storage, read> b: array<f32>;       // (n)
#endif
@group(0) @binding(4) var<storage, read_write> y: array<act>; // (n_rows, y_stride)

// x[xb + i], or 0 past the row (four independent loads per step keep more in flight).
fn ld(xb: u32, i: u32) -> f32 {
    return select(0.0, f32(x[xb + min(i, p.n - 1u)]), i < p.n);
}

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = flat_wg(wg, nwg);
    // Workgroups past the last row still take part in nothing but must not return before barriers.
    let live = row < p.n_rows;
    let xb = min(row, p.n_rows - 1u) * p.x_stride;
    let nf = f32(p.n);
#ifdef LAYER
    var s = 0.0;
    for (var i = ids.lid; i < p.n; i += 4u * WG) {
#for u in 0..4
        let v{u} = ld(xb, i + {u}u * WG);
#endfor
        s += (v0 + v1) + (v2 + v3);
    }
    let mean = wg_sum(s, ids) / nf;
    var s2 = 0.0;
    for (var i = ids.lid; i < p.n; i += WG) {
        let d = f32(x[xb + i]) - mean;
        s2 += d * d;
    }
    let inv = inverseSqrt(wg_sum(s2, ids) / nf + p.eps);
    if (live) {
        for (var i = ids.lid; i < p.n; i += WG) {
            y[row * p.y_stride + i] = act((f32(x[xb + i]) - mean) * inv * w[i] + b[i]);
        }
    }
#else
    var s2 = 0.0;
    for (var i = ids.lid; i < p.n; i += 4u * WG) {
#for u in 0..4
        let v{u} = ld(xb, i + {u}u * WG);
#endfor
        s2 += (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3);
    }
    let inv = inverseSqrt(wg_sum(s2, ids) / nf + p.eps);
    if (live) {
        for (var i = ids.lid; i < p.n; i += WG) {
            // transformers rounds the normalised value to the activation type before the weight.
            y[row * p.y_stride + i] = act(f32(act(f32(x[xb + i]) * inv)) * w[i]);
        }
    }
#endif
}
