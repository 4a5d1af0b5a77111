// Rotary position embedding with Qwen2's (NeoX) semantics, in place:
//   x'[i] = x[i]·cos − x[i + D/2]·sin,  x'[i + D/2] = x[i + D/2]·cos + x[i]·sin,  i < D/2,
//   angle = f32(pos_offset + t) · inv_freq[i], inv_freq[i] = theta^(−2i/D) (computed on the CPU, as
//   transformers does in f32). sin and cos are computed here (quadrant reduction + polynomials) rather
//   than by the builtins, whose accuracy WGSL leaves loose; positions reach 32k, angles 32k radians.
// x is token-major (t, heads, D) with a row stride and a column offset (Q or K inside a fused qkv row).
// Reference: tests/src/reference.rs rope (f64).
#include "ids.wgsl"
#include "rope_angle.wgsl"

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
