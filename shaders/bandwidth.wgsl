// Read-bandwidth probe (the model benchmark's roofline): a grid-stride loop of 16-byte loads, four in flight
// per invocation, folded with xor. One word is written only when the fold equals a constant, so the loads
// cannot be optimised away and nothing is stored in practice.
// WARM (the decode step's L2 warming, kernels/bandwidth.rs warm): a range of src and then one of src2 read the
// same way, to bring weights into the cache while a dispatch that leaves bandwidth idle runs beside it.
// The word is written at g modulo out's length, so that one small buffer serves as the sink.
// FMA: the arithmetic probe instead (what the shader compiler lets a kernel reach at all, `bench kernels
// --filter peak`): eight independent chains of vec4 FMAs an invocation, in f32, or in f16 with ACT_F16 (pairs
// of halves an instruction where the GPU packs them); the factors come from the uniform so nothing folds.
// FMA_MULADD writes each as a multiply and an add; FMA_V2 as sixteen chains of vec2 (issue 14: which form, if
// any, the driver turns into paired f16 instructions).
#include "ids.wgsl"

struct Params {
    n4: u32,     // vec4<u32> elements to read (WARM: of src from start)
    stride: u32, // invocations in the grid
    _p0: u32,    // WARM: vec4<u32> elements of src2 from start2
    _p1: u32,
    start: u32,  // WARM: the first element of src read
    start2: u32, // WARM: of src2
    _p2: u32,
    _p3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#ifndef FMA
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
#endif
#ifdef WARM
@group(0) @binding(2) var<storage, read> src2: array<vec4<u32>>;
#endif
@group(0) @binding(5) var<storage, read_write> out: array<u32>;

#ifdef FMA
// FMA_V2: sixteen chains of vec2 (CH = 16; the same operations a step as eight of vec4): the shape of one
// paired f16 instruction
#ifdef FMA_V2
alias fv = vec2<act>;
#else
alias fv = act4;
#endif
@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>) {
    let g = wg.x * WG + ids.lid;
    // p.n4: steps; p.stride: the factor's bits (an f32 a little under one); p._p0: a sum never reached
    let b = fv(act(bitcast<f32>(p.stride)));
    let c = fv(act(0.5));
#for i in 0..CH
    var a{i} = fv(act(f32(g % 7u + {i}u) * 0.125));
#endfor
    for (var i = 0u; i < p.n4; i++) {
#for i in 0..CH
#ifdef FMA_MULADD
        // a multiply and an add, which the driver may contract (and pair) where fma()'s SPIR-V Fma it may not
        a{i} = a{i} * b + c;
#else
        a{i} = fma(a{i}, b, c);
#endif
#endfor
    }
    var sum = fv(act(0.0));
#for i in 0..CH
    sum += a{i};
#endfor
    if (f32(dot(sum, fv(act(1.0)))) == bitcast<f32>(p._p0)) {
        out[g] = 1u;
    }
}
#else
@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>) {
    let g = wg.x * WG + ids.lid;
    var a = vec4<u32>(0u);
    var b = vec4<u32>(0u);
    var c = vec4<u32>(0u);
    var d = vec4<u32>(0u);
    var i = g;
    let s0 = p.start;
    for (; i + 3u * p.stride < p.n4; i += 4u * p.stride) {
        a ^= src[s0 + i];
        b ^= src[s0 + i + p.stride];
        c ^= src[s0 + i + 2u * p.stride];
        d ^= src[s0 + i + 3u * p.stride];
    }
    for (; i < p.n4; i += p.stride) {
        a ^= src[s0 + i];
    }
#ifdef WARM
    let s2 = p.start2;
    for (i = g; i + 3u * p.stride < p._p0; i += 4u * p.stride) {
        a ^= src2[s2 + i];
        b ^= src2[s2 + i + p.stride];
        c ^= src2[s2 + i + 2u * p.stride];
        d ^= src2[s2 + i + 3u * p.stride];
    }
    for (; i < p._p0; i += p.stride) {
        a ^= src2[s2 + i];
    }
#endif
    let f = a ^ b ^ c ^ d;
    if ((f.x ^ f.y ^ f.z ^ f.w) == 0x9E3779B9u) {
        out[g % arrayLength(&out)] = 1u;
    }
}
#endif
