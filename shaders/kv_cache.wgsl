// Appends the K and V heads of T tokens (read from token-major qkv rows) to a head-major KV cache
// (kv_heads, capacity, D) at positions pos .. pos + T. One invocation per (token, head, dimension).
#include "ids.wgsl"

struct Params {
    n_tokens: u32,
    kv_heads: u32,
    head_dim: u32,
    capacity: u32,
    pos: u32,
    src_stride: u32, // elements per qkv row
    k_offset: u32,   // column of K head 0 in a row
    v_offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<act>;         // (n_tokens, src_stride)
@group(0) @binding(2) var<storage, read_write> k: array<act>;     // (kv_heads, capacity, head_dim)
@group(0) @binding(3) var<storage, read_write> v: array<act>;

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_wg(wg, nwg) * WG + ids.lid;
    if (e >= p.n_tokens * p.kv_heads * p.head_dim) {
        return;
    }
    let d = e % p.head_dim;
    let g = (e / p.head_dim) % p.kv_heads;
    let t = e / (p.head_dim * p.kv_heads);
    let dst = (g * p.capacity + p.pos + t) * p.head_dim + d;
    let s = t * p.src_stride + g * p.head_dim + d;
    k[dst] = src[s + p.k_offset];
    v[dst] = src[s + p.v_offset];
}
