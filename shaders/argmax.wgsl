// Greedy decoding's choice, the first index of the maximum logit (torch.argmax), in two passes so that many
// workgroups read the row (one workgroup alone is bound by load latency: 23 µs over 151,680 logits on an
// H200, against a few µs here):
//   default: workgroup g takes the slice [g·per, (g+1)·per) and writes its (max, first index) to part[2g..];
//   FINAL:   one workgroup reduces the `groups` partial results into out[0] — the first pass's, or those that
//            lm_head's epilogue wrote (matvec_fused.wgsl ARGMAX, one a workgroup: 18,960 on the 14B), each
//            pair one 8-byte load, eight in flight an invocation (with 256 invocations and four scalar pairs in
//            flight the 14B's 18,960 took 17 µs on an H100: a chain of load latencies; sample.rs runs this
//            pass over lm_head's maxima with the widest workgroup the device allows).
// Reference: tests/src/reference.rs sample (temperature 0).
#include "ids.wgsl"
#include "reduce.wgsl"

struct Params {
    n: u32,
    per: u32,      // logits a workgroup of the first pass takes
    groups: u32,   // workgroups of the first pass
    _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<act>;       // (n)
@group(0) @binding(2) var<storage, read_write> out: array<u32>;    // (1)
#ifdef FINAL
@group(0) @binding(3) var<storage, read> part: array<vec2<u32>>;  // (groups): max as f32 bits, index
#else
@group(0) @binding(3) var<storage, read_write> part: array<u32>;   // (groups, 2): max as f32 bits, index
#endif

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>) {
    let lid = ids.lid;
    var best = -3.0e38;
    var at = 4.0e9;
#ifdef FINAL
    for (var i = lid; i < p.groups; i += 8u * WG) {
#for u in 0..8
        let s{u} = part[min(i + {u}u * WG, p.groups - 1u)];
#endfor
#for u in 0..8
        let v{u} = bitcast<f32>(s{u}.x);
        let j{u} = f32(s{u}.y);
        if (i + {u}u * WG < p.groups && (v{u} > best || (v{u} == best && j{u} < at))) {
            best = v{u};
            at = j{u};
        }
#endfor
    }
#else
    let begin = wg.x * p.per;
    let end = min(begin + p.per, p.n);
    for (var i = begin + lid; i < end; i += 4u * WG) {
#for u in 0..4
        let v{u} = f32(logits[min(i + {u}u * WG, p.n - 1u)]);
#endfor
#for u in 0..4
        if (i + {u}u * WG < end && v{u} > best) {
            best = v{u};
            at = f32(i + {u}u * WG);
        }
#endfor
    }
#endif
    let m = wg_max(best, ids);
    let first = wg_min(select(4.0e9, at, best == m), ids);
    if (lid == 0u) {
#ifdef FINAL
        out[0] = u32(first);
#else
        part[2u * wg.x] = bitcast<u32>(m);
        part[2u * wg.x + 1u] = u32(first);
#endif
    }
}
