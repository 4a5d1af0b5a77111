// Picks the next token from a row of logits on the GPU, so that a decode step reads back one u32.
//   greedy (temperature ≤ 0 or top_k = 1): the first index of the maximum (torch.argmax);
//   otherwise: d_i = (max − l_i)/T ≥ 0, weights e^(−d_i); keep the top_k (ties at the boundary kept, as
//   transformers' TopKLogitsWarper), then the top_p nucleus of what remains (a token stays when the mass of
//   tokens not above it exceeds 1 − top_p, as TopPLogitsWarper), then draw with the uniform number u in index
//   order. Both cut-offs are found by bisection over the bit patterns of d (31 fixed steps, each a pass over
//   the row), so no sort is needed and the control flow stays uniform.
// One workgroup of WG invocations, each owning a contiguous slice of the row.
// Reference: tests/src/reference.rs sample (f64).
#include "ids.wgsl"
#include "reduce.wgsl"

struct Params {
    n: u32,
    top_k: u32,        // 0: off
    top_p: f32,        // 1: off
    temperature: f32,  // ≤ 0: greedy
    u: f32,            // uniform in [0, 1)
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<act>;     // (n)
@group(0) @binding(2) var<storage, read_write> out: array<u32>;  // (1)

var<workgroup> part: array<f32, WG>;
var<workgroup> mx_shared: f32;

const INF_BITS: u32 = 0x7f800000u;

fn d_at(m: f32, inv_t: f32, i: u32) -> f32 {
    return (m - f32(logits[min(i, p.n - 1u)])) * inv_t;
}

// (count, mass) of the tokens with lo_t ≤ d ≤ hi_t (as bit patterns) among i = begin, begin + step, … < end.
// STRIDED: step = WG, eight independent loads per iteration (a lone workgroup is bound by load latency).
fn slice_stats(m: f32, inv_t: f32, lo_t: u32, hi_t: u32, begin: u32, end: u32, step: u32) -> vec2<f32> {
    var cnt = 0.0;
    var mass = 0.0;
    if (step == WG) {
        for (var i = begin; i < end; i += 8u * WG) {
#for u in 0..8
            let d{u} = d_at(m, inv_t, i + {u}u * WG);
            let b{u} = bitcast<u32>(d{u});
            let in{u} = i + {u}u * WG < end && b{u} >= lo_t && b{u} <= hi_t;
            cnt += select(0.0, 1.0, in{u});
            mass += select(0.0, exp(-min(d{u}, 87.0)), in{u});
#endfor
        }
        return vec2<f32>(cnt, mass);
    }
    for (var i = begin; i < end; i += step) {
        let d = (m - f32(logits[i])) * inv_t;
        let b = bitcast<u32>(d);
        if (b >= lo_t && b <= hi_t) {
            cnt += 1.0;
            mass += exp(-min(d, 87.0));
        }
    }
    return vec2<f32>(cnt, mass);
}

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = ids.lid;
    // Passes over the row are strided (coalesced); only the final draw walks contiguous slices.
    let per = (p.n + WG - 1u) / WG;
    var lmax = -3.0e38;
    var lidx = 4.0e9;
    for (var i = lid; i < p.n; i += 8u * WG) {
#for u in 0..8
        let v{u} = f32(logits[min(i + {u}u * WG, p.n - 1u)]);
#endfor
#for u in 0..8
        if (i + {u}u * WG < p.n && v{u} > lmax) {
            lmax = v{u};
            lidx = f32(i + {u}u * WG);
        }
#endfor
    }
    let m = wg_max(lmax, ids);
    let first = wg_min(select(4.0e9, lidx, lmax == m), ids);
    if (p.temperature <= 0.0 || p.top_k == 1u) {
        if (lid == 0u) {
            out[0] = u32(first);
        }
        return;
    }
    let inv_t = 1.0 / p.temperature;
    // top-k: the smallest t with count(d ≤ t) ≥ top_k.
    var tk = INF_BITS;
    if (p.top_k > 0u && p.top_k < p.n) {
        var lo = 0u;
        var hi = INF_BITS;
        for (var it = 0u; it < 31u; it++) {
            let mid = lo + (hi - lo) / 2u;
            let c = wg_sum(slice_stats(m, inv_t, 0u, mid, lid, p.n, WG).x, ids);
            if (c >= f32(p.top_k)) { hi = mid; } else { lo = min(mid + 1u, hi); }
        }
        tk = hi;
    }
    // top-p: the largest t ≤ tk with mass(t ≤ d ≤ tk) > (1 − top_p)·mass(d ≤ tk).
    var t = tk;
    if (p.top_p < 1.0) {
        let z = wg_sum(slice_stats(m, inv_t, 0u, tk, lid, p.n, WG).y, ids);
        let cut = (1.0 - p.top_p) * z;
        var lo = 0u;
        var hi = tk;
        for (var it = 0u; it < 31u; it++) {
            let mid = lo + (hi - lo + 1u) / 2u;
            let mass = wg_sum(slice_stats(m, inv_t, mid, tk, lid, p.n, WG).y, ids);
            if (mass > cut) { lo = mid; } else { hi = max(mid, 1u) - 1u; hi = max(hi, lo); }
        }
        t = lo;
    }
    // Draw: the first token, in index order, where the running mass of kept tokens passes u·total.
    let begin = min(lid * per, p.n);
    part[lid] = slice_stats(m, inv_t, 0u, t, begin, min(begin + per, p.n), 1u).y;
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0.0;
        for (var i = 0u; i < WG; i++) {
            total += part[i];
        }
        let target_mass = p.u * total;
        var run = 0.0;
        var owner = WG - 1u;
        for (var i = 0u; i < WG; i++) {
            if (run + part[i] > target_mass && part[i] > 0.0) {
                owner = i;
                break;
            }
            run += part[i];
        }
        let b0 = min(owner * per, p.n);
        let e0 = min(b0 + per, p.n);
        var pick = u32(first);
        for (var i = b0; i < e0; i++) {
            let d = (m - f32(logits[i])) * inv_t;
            if (bitcast<u32>(d) <= t) {
                pick = i;
                run += exp(-min(d, 87.0));
                if (run > target_mass) {
                    break;
                }
            }
        }
        out[0] = pick;
    }
}
