// Read-bandwidth probe (the model benchmark's roofline): a grid-stride loop of 16-byte loads, four in flight
// per invocation, folded with xor. One word is written only when the fold equals a constant, so the loads
// cannot be optimised away and nothing is stored in practice.
#include "ids.wgsl"

struct Params {
    n4: u32,     // vec4<u32> elements to read
    stride: u32, // invocations in the grid
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>) {
    let g = wg.x * WG + ids.lid;
    var a = vec4<u32>(0u);
    var b = vec4<u32>(0u);
    var c = vec4<u32>(0u);
    var d = vec4<u32>(0u);
    var i = g;
    for (; i + 3u * p.stride < p.n4; i += 4u * p.stride) {
        a ^= src[i];
        b ^= src[i + p.stride];
        c ^= src[i + 2u * p.stride];
        d ^= src[i + 3u * p.stride];
    }
    for (; i < p.n4; i += p.stride) {
        a ^= src[i];
    }
    let f = a ^ b ^ c ^ d;
    if ((f.x ^ f.y ^ f.z ^ f.w) == 0x9E3779B9u) {
        out[g] = 1u;
    }
}
