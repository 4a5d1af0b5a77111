// Rotary position embedding with Qwen2's (NeoX) semantics, in place:
//   x'[i] = x[i]·cos − x[i + D/2]·sin,  x'[i + D/2] = x[i + D/2]·cos + x[i]·sin,  i < D/2,
//   angle = f32(pos_offset + t) · inv_freq[i], inv_freq[i] = theta^(−2i/D) (computed on the CPU, as
//   transformers does in f32). sin and cos are computed here (quadrant reduction + polynomials) rather
//   than by the builtins, whose accuracy WGSL leaves loose; positions reach 32k, angles 32k radians.
// x is token-major (t, heads, D) with a row stride and a column offset (Q or K inside a fused qkv row).
// Reference: tests/src/reference.rs rope (f64).
#include "ids.wgsl"

struct Params {
    n_tokens: u32,
    n_heads: u32,
    head_dim: u32,
    stride: u32,     // elements per token row
    offset: u32,     // column of head 0
    pos_offset: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<act>;  // (n_tokens, stride)
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>; // (head_dim / 2)

// π/2 = P1 + P2 + P3, P1 and P2 of at most 9 significant bits, so k·P1 and k·P2 are exact for |k| < 2^15
// (angles up to 32k radians at positions up to 32k).
const P1: f32 = 1.5703125;
const P2: f32 = 0.00048351287841796875;
const P3: f32 = 3.1391647326017846e-07;

// sin and cos of a reduced |r| ≤ π/4 (Cephes sinf/cosf polynomials, ~1 ulp); WGSL's own sin/cos are only
// required to be accurate to 2^-11 (SwiftShader is close to that), too coarse for 1e-5.
fn sin_poly(r: f32) -> f32 {
    let z = r * r;
    return ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
}
fn cos_poly(r: f32) -> f32 {
    let z = r * r;
    return ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
}

// (cos, sin) of an f32 angle: quadrant k = round(angle / (π/2)), remainder by Cody–Waite.
fn cos_sin(angle: f32) -> vec2<f32> {
    let k = round(angle * 0.6366197723675814);
    let r = ((angle - k * P1) - k * P2) - k * P3;
    let s = sin_poly(r);
    let c = cos_poly(r);
    let q = u32(i32(k) & 3);
    if (q == 0u) { return vec2<f32>(c, s); }
    if (q == 1u) { return vec2<f32>(-s, c); }
    if (q == 2u) { return vec2<f32>(-c, -s); }
    return vec2<f32>(s, -c);
}

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let half = p.head_dim / 2u;
    let e = flat_wg(wg, nwg) * WG + ids.lid;
    if (e >= p.n_tokens * p.n_heads * half) {
        return;
    }
    let i = e % half;
    let th = e / half;
    let h = th % p.n_heads;
    let t = th / p.n_heads;
    let angle = f32(p.pos_offset + t) * inv_freq[i];
    let cs = cos_sin(angle);
    let c = cs.x;
    let s = cs.y;
    let base = t * p.stride + p.offset + h * p.head_dim;
    let x1 = f32(x[base + i]);
    let x2 = f32(x[base + i + half]);
    x[base + i] = act(x1 * c - x2 * s);
    x[base + i + half] = act(x2 * c + x1 * s);
}
