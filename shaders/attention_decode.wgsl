// Decode attention: one query token per head over a KV cache, split along the sequence (split-K); or a few
// query tokens (a short prompt after a long context), one after another along the grid's z, query i seeing
// keys 0 ..= kv_base + i (causal).
// Pass 1 (default): a workgroup takes one KV head and one chunk of keys, for all N_REP query heads that share
// the KV head (GQA), so every key and value is read once. Keys go WG at a time:
//   scores  — one invocation per key reads the key's row in 16-byte chunks (D/CW independent loads) and
//             scores it against the N_REP queries;
//   softmax — running max and sum per head with workgroup reductions;
//   values  — invocation (key group kg, lane) reads 16 bytes (CW dimensions) of every KG-th key of the block:
//             lanes of a key group cover one value row, so loads coalesce, and each invocation keeps
//             WG/KG loads in flight. Key groups are summed once per chunk through workgroup memory.
// It writes per head (max, sum, unnormalised output). Pass 2 (COMBINE): one workgroup per query head merges
// the chunks. KV cache layout (kv_heads, capacity, D) through strides; f16 values are read as packed u32,
// so the f16 path needs no shader-f16 for the cache itself. Reference: tests/src/reference.rs attention.
#include "ids.wgsl"
#include "reduce.wgsl"

const NEG: f32 = -1.0e30;

// exp with its argument clamped: some implementations (SwiftShader) return NaN for exp(-1e30).
fn exp_c(x: f32) -> f32 {
    return exp(max(x, -87.0));
}

struct Params {
    n_kv: u32,          // keys (the last query's)
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
    q_stride: u32,      // elements from one query token's row to the next
    o_stride: u32,
    kv_base: u32,       // query i sees keys 0 ..= kv_base + i (and fewer than n_kv)
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#ifndef COMBINE
@group(0) @binding(1) var<storage, read> q: array<act>;          // (n_heads, D)
#ifdef ACT_F16
@group(0) @binding(2) var<storage, read> k: array<vec4<u32>>;    // (kv_heads, capacity, D/8) f16
@group(0) @binding(3) var<storage, read> v: array<vec4<u32>>;
alias chunk = mat2x4<f32>;
fn unpack8(u: vec4<u32>) -> chunk {
    return chunk(vec4<f32>(unpack2x16float(u.x), unpack2x16float(u.y)), vec4<f32>(unpack2x16float(u.z), unpack2x16float(u.w)));
}
fn k_chunk(i: u32) -> chunk { return unpack8(k[i]); }
fn v_chunk(i: u32) -> chunk { return unpack8(v[i]); }
fn zero_chunk() -> chunk { return chunk(vec4<f32>(0.0), vec4<f32>(0.0)); }
fn dot_chunk(a: chunk, b: chunk) -> f32 { return dot(a[0], b[0]) + dot(a[1], b[1]); }
fn chunk_at(c: chunk, e: u32) -> f32 { return c[e / 4u][e % 4u]; }
#else
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;    // (kv_heads, capacity, D/4) f32
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
alias chunk = vec4<f32>;
fn k_chunk(i: u32) -> chunk { return k[i]; }
fn v_chunk(i: u32) -> chunk { return v[i]; }
fn zero_chunk() -> chunk { return vec4<f32>(0.0); }
fn dot_chunk(a: chunk, b: chunk) -> f32 { return dot(a, b); }
fn chunk_at(c: chunk, e: u32) -> f32 { return c[e]; }
#endif
#endif
@group(0) @binding(4) var<storage, read_write> part: array<f32>; // (queries, n_heads, n_splits, D + 2)
#ifdef COMBINE
@group(0) @binding(5) var<storage, read_write> o: array<act>;    // (n_heads, D)
#endif

#ifndef COMBINE
// Defines: CW values per 16-byte chunk (8 for f16, 4 for f32), LANES = D / CW invocations per value row,
// KG = WG / LANES key groups, KPT = WG / KG keys per invocation per block in the value pass.

var<workgroup> qs: array<chunk, N_REP * LANES>;
var<workgroup> sc: array<f32, N_REP * WG>;
var<workgroup> red: array<f32, KG * D>;

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = ids.lid;
    let g = wg.x;
    let split = wg.y;
    let qi = wg.z;
    let j_begin = split * p.chunk;
    // a split past this query's keys is empty: it writes max NEG and sum 0, which the merge weighs at 0
    let j_end = max(j_begin, min(min(p.n_kv, p.kv_base + qi + 1u), j_begin + p.chunk));
    for (var e = lid; e < N_REP * LANES; e += WG) {
        let b = p.q_offset + qi * p.q_stride + g * N_REP * D + e * CW;
#ifdef ACT_F16
        qs[e] = chunk(vec4<f32>(f32(q[b]), f32(q[b + 1u]), f32(q[b + 2u]), f32(q[b + 3u])) * p.scale,
                      vec4<f32>(f32(q[b + 4u]), f32(q[b + 5u]), f32(q[b + 6u]), f32(q[b + 7u])) * p.scale);
#else
        qs[e] = vec4<f32>(f32(q[b]), f32(q[b + 1u]), f32(q[b + 2u]), f32(q[b + 3u])) * p.scale;
#endif
    }
    workgroupBarrier();
    let kg = lid / LANES;
    let lane = lid % LANES;
#for h in 0..N_REP
    var m_run{h} = NEG;
    var l_run{h} = 0.0;
    var acc{h} = zero_chunk();
#endfor
    for (var j0 = j_begin; j0 < j_end; j0 += WG) {
        // scores: one key per invocation, its row's chunks loaded together
        let live = j0 + lid < j_end;
        let kbase = (g * p.k_head_stride + min(j0 + lid, j_end - 1u) * p.k_seq_stride) / CW;
#for c in 0..LANES
        let kc{c} = k_chunk(kbase + {c}u);
#endfor
#for h in 0..N_REP
        var s{h} = 0.0;
#for c in 0..LANES
        s{h} += dot_chunk(qs[{h}u * LANES + {c}u], kc{c});
#endfor
#endfor
        // softmax statistics, per head
#for h in 0..N_REP
        let sv{h} = select(NEG, s{h}, live);
        let m_new{h} = max(m_run{h}, wg_max(sv{h}, ids));
        let p{h} = select(0.0, exp_c(sv{h} - m_new{h}), live);
        let corr{h} = exp_c(m_run{h} - m_new{h});
        l_run{h} = l_run{h} * corr{h} + wg_sum(p{h}, ids);
        m_run{h} = m_new{h};
        sc[{h}u * WG + lid] = p{h};
        acc{h} = acc{h} * corr{h};
#endfor
        workgroupBarrier();
        // values: invocation (kg, lane) takes keys kg, kg + KG, … of the block (probability 0 past the end)
        let vb = g * p.v_head_stride / CW + lane;
#for t in 0..KPT
        let vc{t} = v_chunk(vb + min(j0 + kg + KG * {t}u, j_end - 1u) * p.v_seq_stride / CW);
#endfor
#for t in 0..KPT
#for h in 0..N_REP
        acc{h} = acc{h} + vc{t} * sc[{h}u * WG + kg + KG * {t}u];
#endfor
#endfor
        workgroupBarrier();
    }
    // sum the key groups, head by head, and write this split's partial result
#for h in 0..N_REP
    {
#for e in 0..CW
        red[kg * D + lane * CW + {e}u] = chunk_at(acc{h}, {e}u);
#endfor
        workgroupBarrier();
        let base = (((qi * p.n_heads) + g * N_REP + {h}u) * p.n_splits + split) * (D + 2u);
        for (var d = lid; d < D; d += WG) {
            var t = 0.0;
            for (var i = 0u; i < KG; i++) {
                t += red[i * D + d];
            }
            part[base + 2u + d] = t;
        }
        if (lid == 0u) {
            part[base] = m_run{h};
            part[base + 1u] = l_run{h};
        }
        workgroupBarrier();
    }
#endfor
}
#else
var<workgroup> wts: array<f32, 256>;
var<workgroup> ls: array<f32, 256>;

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let qi = wg.z;
    let h = qi * p.n_heads + wg.x;
    let lid = ids.lid;
    // every split's (max, sum) loaded at once (n_splits ≤ 256), then the merge weights e^(m_s − M)
    var mloc = NEG;
    for (var s = lid; s < p.n_splits; s += WG) {
        let b = (h * p.n_splits + s) * (D + 2u);
        wts[s] = part[b];
        ls[s] = part[b + 1u];
        mloc = max(mloc, wts[s]);
    }
    let mx = wg_max(mloc, ids);
    var lloc = 0.0;
    for (var s = lid; s < p.n_splits; s += WG) {
        wts[s] = exp_c(wts[s] - mx);
        lloc += ls[s] * wts[s];
    }
    let l = wg_sum(lloc, ids);
    // four splits per step, their loads independent
    for (var d = lid; d < D; d += WG) {
        var a0 = 0.0;
        var a1 = 0.0;
        var a2 = 0.0;
        var a3 = 0.0;
        var s = 0u;
        for (; s + 4u <= p.n_splits; s += 4u) {
            let b = (h * p.n_splits + s) * (D + 2u) + 2u + d;
            a0 += part[b] * wts[s];
            a1 += part[b + (D + 2u)] * wts[s + 1u];
            a2 += part[b + 2u * (D + 2u)] * wts[s + 2u];
            a3 += part[b + 3u * (D + 2u)] * wts[s + 3u];
        }
        for (; s < p.n_splits; s++) {
            a0 += part[(h * p.n_splits + s) * (D + 2u) + 2u + d] * wts[s];
        }
        o[p.o_offset + qi * p.o_stride + wg.x * D + d] = act(((a0 + a1) + (a2 + a3)) / l);
    }
}
#endif
