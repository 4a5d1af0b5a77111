// Element-wise ops, one invocation per element over a grid folded on x and z. One op per variant:
//   ADD        a += b                      (residual)
//   BIAS       x[r, c] += bias[c]          (bias of width `width`)
//   GELU_TANH  x = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))   (SigLIP MLP)
//   GELU_ERF   x = 0.5·x·(1 + erf(x/√2))  (projector)
//   SILU_MUL   y[t, i] = silu(gu[t, i]) · gu[t, width + i]   (gate and up fused in one row of 2·width)
// Reference: tests/src/reference.rs (f64).
#include "ids.wgsl"

struct Params {
    n: u32,      // elements to produce
    width: u32,  // row width (BIAS, SILU_MUL)
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<act>;
#ifdef ADD
@group(0) @binding(2) var<storage, read> b: array<act>;
#endif
#ifdef BIAS
@group(0) @binding(2) var<storage, read> bias: array<f32>;
#endif
#ifdef SILU_MUL
@group(0) @binding(3) var<storage, read_write> y: array<act>;
#endif

// erf by Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, which moves GELU by < 1e-7·|x|.
fn erf_f32(x: f32) -> f32 {
    let ax = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * ax);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let r = 1.0 - poly * exp(-ax * ax);
    return select(-r, r, x >= 0.0);
}

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_wg(wg, nwg) * WG + ids.lid;
    if (i >= p.n) {
        return;
    }
#ifdef ADD
    a[i] = act(f32(a[i]) + f32(b[i]));
#endif
#ifdef BIAS
    a[i] = act(f32(a[i]) + bias[i % p.width]);
#endif
#ifdef GELU_TANH
    let v = f32(a[i]);
    let inner = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    // tanh through exp, stable for large |inner| (WGSL tanh may overflow to NaN on some drivers).
    let t = 1.0 - 2.0 / (exp(2.0 * clamp(inner, -15.0, 15.0)) + 1.0);
    a[i] = act(0.5 * v * (1.0 + t));
#endif
#ifdef GELU_ERF
    let v = f32(a[i]);
    a[i] = act(0.5 * v * (1.0 + erf_f32(v * 0.7071067811865476)));
#endif
#ifdef SILU_MUL
    let t = i / p.width;
    let c = i % p.width;
    let g = f32(a[t * 2u * p.width + c]);
    let u = f32(a[t * 2u * p.width + p.width + c]);
    y[i] = act(g / (1.0 + exp(-g)) * u);
#endif
}
