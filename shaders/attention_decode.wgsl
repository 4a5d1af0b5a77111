// Decode attention: one query token per head over a KV cache, split along the sequence (split-K).
// Pass 1 (default): a workgroup takes one KV head and one chunk of keys, for all N_REP query heads that share
// the KV head (GQA), so every key and value is read once. Each invocation scores one key against the N_REP
// queries; each owns output dimensions for the value pass. It writes per head (max, sum, unnormalised o).
// Pass 2 (COMBINE): one workgroup per query head merges the chunks.
// KV cache layout: (kv_heads, capacity, D), addressed through strides. Reference: as attention.wgsl.
#include "ids.wgsl"

const NEG: f32 = -1.0e30;

// exp with its argument clamped: some implementations (SwiftShader) return NaN for exp(-1e30).
fn exp_c(x: f32) -> f32 {
    return exp(max(x, -87.0));
}
const OPT: u32 = (D + WG - 1u) / WG;

struct Params {
    n_kv: u32,          // valid keys
    n_heads: u32,
    chunk: u32,         // keys per split (a multiple of WG)
    n_splits: u32,
    k_head_stride: u32,
    k_seq_stride: u32,
    v_head_stride: u32,
    v_seq_stride: u32,
    q_offset: u32,      // Q's first element (its column in a fused qkv row)
    o_offset: u32,
    scale: f32,
    _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#ifndef COMBINE
@group(0) @binding(1) var<storage, read> q: array<act>;         // (n_heads, D)
@group(0) @binding(2) var<storage, read> k: array<act4>;        // (kv_heads, capacity, D/4)
@group(0) @binding(3) var<storage, read> v: array<act>;         // (kv_heads, capacity, D)
#endif
@group(0) @binding(4) var<storage, read_write> part: array<f32>; // (n_heads, n_splits, D + 2)
#ifdef COMBINE
@group(0) @binding(5) var<storage, read_write> o: array<act>;    // (n_heads, D)
#endif

#ifndef COMBINE
var<workgroup> qs: array<f32, N_REP * D>;
var<workgroup> sc: array<f32, N_REP * WG>;
var<workgroup> st_m: array<f32, N_REP>;
var<workgroup> st_l: array<f32, N_REP>;
var<workgroup> st_c: array<f32, N_REP>;

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = ids.lid;
    let g = wg.x;
    let split = wg.y;
    let j_begin = split * p.chunk;
    let j_end = min(p.n_kv, j_begin + p.chunk);
    for (var e = lid; e < N_REP * D; e += WG) {
        qs[e] = f32(q[p.q_offset + g * N_REP * D + e]) * p.scale;
    }
    if (lid < N_REP) {
        st_m[lid] = NEG;
        st_l[lid] = 0.0;
    }
    var acc: array<f32, N_REP * OPT>;
    for (var j0 = j_begin; j0 < j_end; j0 += WG) {
        workgroupBarrier();
        let j = j0 + lid;
        var s: array<f32, N_REP>;
        for (var hh = 0u; hh < N_REP; hh++) {
            s[hh] = NEG;
        }
        if (j < j_end) {
            for (var hh = 0u; hh < N_REP; hh++) {
                s[hh] = 0.0;
            }
            let base = (g * p.k_head_stride + j * p.k_seq_stride) / 4u;
            for (var d4 = 0u; d4 < D / 4u; d4++) {
                let kk = vec4<f32>(k[base + d4]);
                for (var hh = 0u; hh < N_REP; hh++) {
                    let qb = hh * D + d4 * 4u;
                    s[hh] += dot(vec4<f32>(qs[qb], qs[qb + 1u], qs[qb + 2u], qs[qb + 3u]), kk);
                }
            }
        }
        for (var hh = 0u; hh < N_REP; hh++) {
            sc[hh * WG + lid] = s[hh];
        }
        workgroupBarrier();
        let nj = min(WG, j_end - j0);
        if (lid < N_REP) {
            var mx = NEG;
            for (var jj = 0u; jj < nj; jj++) {
                mx = max(mx, sc[lid * WG + jj]);
            }
            let m_old = st_m[lid];
            let m_new = max(m_old, mx);
            let corr = exp_c(m_old - m_new);
            var l = st_l[lid] * corr;
            for (var jj = 0u; jj < nj; jj++) {
                let pj = exp_c(sc[lid * WG + jj] - m_new);
                sc[lid * WG + jj] = pj;
                l += pj;
            }
            st_m[lid] = m_new;
            st_l[lid] = l;
            st_c[lid] = corr;
        }
        workgroupBarrier();
        for (var r = 0u; r < OPT; r++) {
            let d = lid + r * WG;
            if (d < D) {
                for (var hh = 0u; hh < N_REP; hh++) {
                    acc[hh * OPT + r] *= st_c[hh];
                }
                let vb = g * p.v_head_stride + j0 * p.v_seq_stride + d;
                for (var jj = 0u; jj < nj; jj++) {
                    let vv = f32(v[vb + jj * p.v_seq_stride]);
                    for (var hh = 0u; hh < N_REP; hh++) {
                        acc[hh * OPT + r] = fma(sc[hh * WG + jj], vv, acc[hh * OPT + r]);
                    }
                }
            }
        }
    }
    workgroupBarrier();
    for (var hh = 0u; hh < N_REP; hh++) {
        let base = ((g * N_REP + hh) * p.n_splits + split) * (D + 2u);
        if (lid == 0u) {
            part[base] = st_m[hh];
            part[base + 1u] = st_l[hh];
        }
        for (var r = 0u; r < OPT; r++) {
            let d = lid + r * WG;
            if (d < D) {
                part[base + 2u + d] = acc[hh * OPT + r];
            }
        }
    }
}
#else
@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let h = wg.x;
    var mx = NEG;
    for (var s = 0u; s < p.n_splits; s++) {
        mx = max(mx, part[(h * p.n_splits + s) * (D + 2u)]);
    }
    var l = 0.0;
    for (var s = 0u; s < p.n_splits; s++) {
        let b = (h * p.n_splits + s) * (D + 2u);
        l += part[b + 1u] * exp_c(part[b] - mx);
    }
    for (var d = ids.lid; d < D; d += WG) {
        var a = 0.0;
        for (var s = 0u; s < p.n_splits; s++) {
            let b = (h * p.n_splits + s) * (D + 2u);
            a += part[b + 2u + d] * exp_c(part[b] - mx);
        }
        o[p.o_offset + h * D + d] = act(a / l);
    }
}
#endif
