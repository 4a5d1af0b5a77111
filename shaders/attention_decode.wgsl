// Decode attention: one query token per head over a KV cache, split along the sequence (split-K); or a few
// query tokens (a short prompt after a long context), one after another along the grid's z, query i seeing
// keys 0 ..= kv_base + i (causal).
// Pass 1 (default): a workgroup takes one KV head and one chunk of keys, for all N_REP query heads that share
// the KV head (GQA), so every key and value is read once. Keys go WG at a time (a block):
//   loads   — every invocation's key row in 16-byte chunks (D/CW independent loads), and with V_EARLY the
//             values it will need, all issued together; the first block's before the queries are staged;
//   scores  — one key per invocation, against the N_REP queries;
//   softmax — the block's maximum of all N_REP heads in one workgroup reduction (one barrier with subgroups);
//             each invocation keeps its own share of the sums, added up once at the end;
//   values  — invocation (key group kg, lane) takes 16 bytes (CW dimensions) of every KG-th key of the block:
//             lanes of a key group cover one value row, so loads coalesce. Key groups are summed once per
//             chunk through workgroup memory.
// Three barriers a block and one a head at the end (the version before this took two per head and
// statistic in every block: 32 for a one-block chunk against 9 now).
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
alias raw = vec4<u32>;   // a chunk as loaded: unpacked where it is used, so a load in flight holds 4 registers, not 8
fn unraw(u: raw) -> chunk {
    return chunk(vec4<f32>(unpack2x16float(u.x), unpack2x16float(u.y)), vec4<f32>(unpack2x16float(u.z), unpack2x16float(u.w)));
}
fn zero_chunk() -> chunk { return chunk(vec4<f32>(0.0), vec4<f32>(0.0)); }
fn dot_chunk(a: chunk, b: chunk) -> f32 { return dot(a[0], b[0]) + dot(a[1], b[1]); }
fn chunk_at(c: chunk, e: u32) -> f32 { return c[e / 4u][e % 4u]; }
#else
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;    // (kv_heads, capacity, D/4) f32
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
alias chunk = vec4<f32>;
alias raw = vec4<f32>;
fn unraw(u: raw) -> chunk { return u; }
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
// KG = WG / LANES key groups, KPT = WG / KG keys per invocation per block in the value pass; V_EARLY: the
// block's values are loaded with its keys (so a block waits on one memory round trip, not two), where the
// key row and the values fit 128 registers together (LANES ≤ 16: f16 at D = 128, not f32).

var<workgroup> qs: array<chunk, N_REP * LANES>;
var<workgroup> sc: array<f32, N_REP * WG>;           // the block's probabilities, per head
#ifdef SUBGROUP
var<workgroup> hmax: array<f32, N_REP * (WG / 4u)>;  // per head, each subgroup's maximum (subgroups ≥ 4 wide)
#else
var<workgroup> hmax: array<f32, N_REP * WG>;         // per head, a tree over the block's scores
#endif
var<workgroup> red: array<f32, 2u * KG * (D + 1u)>;  // two heads' key-group sums (D values and the sum of p)

// One block's loads: every invocation's key row, and (V_EARLY) the values its key group takes.
struct Block {
#for c in 0..LANES
    k{c}: raw,
#endfor
#ifdef V_EARLY
#for t in 0..KPT
    v{t}: raw,
#endfor
#endif
}

fn load_block(g: u32, j0: u32, last: u32, lid: u32) -> Block {
    var b: Block;
    let kbase = (g * p.k_head_stride + min(j0 + lid, last) * p.k_seq_stride) / CW;
#for c in 0..LANES
    b.k{c} = k[kbase + {c}u];
#endfor
#ifdef V_EARLY
    let vb = g * p.v_head_stride / CW + lid % LANES;
#for t in 0..KPT
    b.v{t} = v[vb + min(j0 + lid / LANES + KG * {t}u, last) * p.v_seq_stride / CW];
#endfor
#endif
    return b;
}

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = ids.lid;
    let g = wg.x;
    let split = wg.y;
    let qi = wg.z;
    let j_begin = split * p.chunk;
    // a split past this query's keys is empty: it writes max NEG and sum 0, which the merge weighs at 0
    let j_end = max(j_begin, min(min(p.n_kv, p.kv_base + qi + 1u), j_begin + p.chunk));
    let last = max(j_end, 1u) - 1u;
#ifdef PREFETCH
    // the first block's loads go out before the queries are staged, so the two round trips overlap
    var blk = load_block(g, j_begin, last, lid);
#endif
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
    // running maximum (the same in every invocation), and this invocation's share of the sum and output:
    // its key group's keys, its lane's CW dimensions
#for h in 0..N_REP
    var m_run{h} = NEG;
    var l_run{h} = 0.0;
    var acc{h} = zero_chunk();
#endfor
    for (var j0 = j_begin; j0 < j_end; j0 += WG) {
#ifndef PREFETCH
        let blk = load_block(g, j0, last, lid);
#endif
        // scores: one key per invocation
        let live = j0 + lid < j_end;
#for h in 0..N_REP
        var s{h} = 0.0;
#for c in 0..LANES
        s{h} += dot_chunk(qs[{h}u * LANES + {c}u], unraw(blk.k{c}));
#endfor
        let sv{h} = select(NEG, s{h}, live);
#endfor
        // the block's maximum of every head at once: one barrier
#ifdef SUBGROUP
        let nsg = (WG + ids.sg_size - 1u) / ids.sg_size;
#for h in 0..N_REP
        let sm{h} = subgroupMax(sv{h});
#endfor
        if (ids.sg_lane == 0u) {
#for h in 0..N_REP
            hmax[{h}u * (WG / 4u) + lid / ids.sg_size] = sm{h};
#endfor
        }
        workgroupBarrier();
#for h in 0..N_REP
        var bm{h} = hmax[{h}u * (WG / 4u)];
#endfor
        for (var i = 1u; i < nsg; i++) {
#for h in 0..N_REP
            bm{h} = max(bm{h}, hmax[{h}u * (WG / 4u) + i]);
#endfor
        }
#else
#for h in 0..N_REP
        hmax[{h}u * WG + lid] = sv{h};
#endfor
        workgroupBarrier();
        for (var o = WG / 2u; o > 0u; o >>= 1u) {
            if (lid < o) {
#for h in 0..N_REP
                hmax[{h}u * WG + lid] = max(hmax[{h}u * WG + lid], hmax[{h}u * WG + lid + o]);
#endfor
            }
            workgroupBarrier();
        }
#for h in 0..N_REP
        let bm{h} = hmax[{h}u * WG];
#endfor
#endif
#for h in 0..N_REP
        let m_new{h} = max(m_run{h}, bm{h});
        let corr{h} = exp_c(m_run{h} - m_new{h});
        m_run{h} = m_new{h};
        sc[{h}u * WG + lid] = select(0.0, exp_c(sv{h} - m_new{h}), live);
        acc{h} = acc{h} * corr{h};
        l_run{h} = l_run{h} * corr{h};
#endfor
        workgroupBarrier();
        // values: invocation (kg, lane) takes keys kg, kg + KG, … of the block (probability 0 past the end)
#ifndef V_EARLY
        let vb = g * p.v_head_stride / CW + lane;
#endif
#for t in 0..KPT
#ifdef V_EARLY
        let vc{t} = unraw(blk.v{t});
#else
        let vc{t} = unraw(v[vb + min(j0 + kg + KG * {t}u, last) * p.v_seq_stride / CW]);
#endif
#endfor
#for t in 0..KPT
#for h in 0..N_REP
        let pr{h}_{t} = sc[{h}u * WG + kg + KG * {t}u];
        acc{h} = acc{h} + vc{t} * pr{h}_{t};
        l_run{h} += pr{h}_{t};
#endfor
#endfor
#ifdef PREFETCH
        // the next block's loads go out before the barrier that lets sc be overwritten
        if (j0 + WG < j_end) {
            blk = load_block(g, j0 + WG, last, lid);
        }
#endif
        workgroupBarrier();
    }
    // sum the key groups, head by head through two alternating buffers (one barrier a head), and write this
    // split's partial result: (max, sum, unnormalised output)
#for h in 0..N_REP
    {
        let rb = ({h}u % 2u) * KG * (D + 1u);
#for e in 0..CW
        red[rb + kg * (D + 1u) + lane * CW + {e}u] = chunk_at(acc{h}, {e}u);
#endfor
        if (lane == 0u) {
            red[rb + kg * (D + 1u) + D] = l_run{h};
        }
        workgroupBarrier();
        let base = (((qi * p.n_heads) + g * N_REP + {h}u) * p.n_splits + split) * (D + 2u);
        for (var d = lid; d <= D; d += WG) {
            var t = 0.0;
            for (var i = 0u; i < KG; i++) {
                t += red[rb + i * (D + 1u) + d];
            }
            if (d < D) {
                part[base + 2u + d] = t;
            } else {
                part[base + 1u] = t;
            }
        }
        if (lid == 0u) {
            part[base] = m_run{h};
        }
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
