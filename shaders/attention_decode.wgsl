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
// It writes per head (max, sum, unnormalised output), D + 4 floats a split: (max, sum, 0, 0) and the values,
// 16-byte aligned. Pass 2 (COMBINE): one workgroup per query head merges the chunks, SG groups of splits at
// once over the head's D/4 columns of vec4, each group's loads issued four splits at a time: a long context's
// 64 splits cost four dependent loads an invocation, not sixteen. XP_OUT (one query, D a multiple of 32): the
// merge also writes the head's blocks of 32 as the fused matvec's XQ8 reads them (o's x prepared once, in
// prepared.wgsl's format, from the values as stored). KV cache layout (kv_heads, capacity, D) through
// strides; f16 values are read as packed u32, so the f16 path needs no shader-f16 for the cache itself. Reference: tests/src/reference.rs attention.
#include "ids.wgsl"
#include "reduce.wgsl"
#include "prepared.wgsl"

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
#ifdef COMBINE
@group(0) @binding(4) var<storage, read> part4: array<vec4<f32>>; // (queries, n_heads, n_splits, PV)
@group(0) @binding(5) var<storage, read_write> o: array<act>;    // (n_heads, D)
#ifdef XP_OUT
@group(0) @binding(6) var<storage, read_write> xpc: array<u32>;       // (n_heads·D/32, 8): codes lo, hi
@group(0) @binding(7) var<storage, read_write> xps: array<vec4<f32>>; // (n_heads·D/32): scale, Σ codes, Σ x², 0
#endif
#else
@group(0) @binding(4) var<storage, read_write> part: array<f32>; // (queries, n_heads, n_splits, D + 4)
#endif
// vec4s a split's partial result takes: its statistics, then D/4 of values
const PV: u32 = D / 4u + 1u;

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
        let base = (((qi * p.n_heads) + g * N_REP + {h}u) * p.n_splits + split) * (4u * PV);
        for (var d = lid; d < D; d += WG) {
            var t = 0.0;
            for (var i = 0u; i < KG; i++) {
                t += red[i * D + d];
            }
            part[base + 4u + d] = t;
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
// SG groups of splits, each over all D/4 columns (one where the workgroup is narrower than the columns)
const DV: u32 = D / 4u;
const SG: u32 = max(1u, WG / DV);
var<workgroup> wts: array<f32, 256>;
var<workgroup> ls: array<f32, 256>;
var<workgroup> acc4: array<vec4<f32>, SG * DV>;
#ifdef XP_OUT
// the head's values as stored, and per packed word (Σ x², Σ codes)
var<workgroup> xv: array<f32, D>;
var<workgroup> xpart: array<vec2<f32>, D / 4u>;
var<workgroup> amaxs: array<f32, D / 32u>;
#endif

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let qi = wg.z;
    let h = qi * p.n_heads + wg.x;
    let lid = ids.lid;
    let ns = p.n_splits;
    // every split's (max, sum) loaded at once (n_splits ≤ 256), then the merge weights e^(m_s − M)
    var mloc = NEG;
    for (var s = lid; s < ns; s += WG) {
        let st = part4[(h * ns + s) * PV];
        wts[s] = st.x;
        ls[s] = st.y;
        mloc = max(mloc, st.x);
    }
    let mx = wg_max(mloc, ids);
    var lloc = 0.0;
    for (var s = lid; s < ns; s += WG) {
        wts[s] = exp_c(wts[s] - mx);
        lloc += ls[s] * wts[s];
    }
    let l = wg_sum(lloc, ids);
    // invocation (group sg, column c): splits sg, sg + SG, … four at a time, their loads independent
    for (var t = lid; t < SG * DV; t += WG) {
        let c = t % DV;
        let first = (h * ns) * PV + 1u + c;
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        var s = t / DV;
        for (; s + 3u * SG < ns; s += 4u * SG) {
            let b = first + s * PV;
            a0 += part4[b] * wts[s];
            a1 += part4[b + SG * PV] * wts[s + SG];
            a2 += part4[b + 2u * SG * PV] * wts[s + 2u * SG];
            a3 += part4[b + 3u * SG * PV] * wts[s + 3u * SG];
        }
        for (; s < ns; s += SG) {
            a0 += part4[first + s * PV] * wts[s];
        }
        acc4[t] = (a0 + a1) + (a2 + a3);
    }
    workgroupBarrier();
    for (var c = lid; c < DV; c += WG) {
        var t = acc4[c];
        for (var g = 1u; g < SG; g++) {
            t += acc4[g * DV + c];
        }
        let v = t / l;
        let at = p.o_offset + qi * p.o_stride + wg.x * D + 4u * c;
#ifdef XP_OUT
        let sv = vec4<f32>(stored(v.x), stored(v.y), stored(v.z), stored(v.w));
        xv[4u * c] = sv.x;
        xv[4u * c + 1u] = sv.y;
        xv[4u * c + 2u] = sv.z;
        xv[4u * c + 3u] = sv.w;
#else
        let sv = v;
#endif
        o[at] = act(sv.x);
        o[at + 1u] = act(sv.y);
        o[at + 2u] = act(sv.z);
        o[at + 3u] = act(sv.w);
    }
#ifdef XP_OUT
    workgroupBarrier();
    // word e: word e % 8 of block e / 8 (prepared.wgsl); each of a block's eight takes its largest |value|
    let blk0 = (p.o_offset + wg.x * D) / 32u;
    for (var e = lid; e < D / 4u; e += WG) {
        let b = e / 8u;
        var amax = 0.0;
        for (var j = 0u; j < 32u; j++) {
            amax = max(amax, abs(xv[32u * b + j]));
        }
        let f = 32u * b + prepared_first(e % 8u);
        let pw = prepared_word(vec4<f32>(xv[f], xv[f + 2u], xv[f + 4u], xv[f + 6u]), amax);
        xpc[blk0 * 8u + e] = pw.word;
        xpart[e] = pw.sums;
        if (e % 8u == 0u) {
            amaxs[b] = amax;
        }
    }
    workgroupBarrier();
    for (var b = lid; b < D / 32u; b += WG) {
        var t = vec2<f32>(0.0);
        for (var w = 0u; w < 8u; w++) {
            t += xpart[8u * b + w];
        }
        xps[blk0 + b] = prepared_scales(amaxs[b], t);
    }
#endif
}
#endif
