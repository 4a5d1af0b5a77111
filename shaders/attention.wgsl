// Attention over a block of queries with online softmax (flash-style), for prefill (CAUSAL, GQA, queries at
// absolute positions pos_offset..) and for SigLIP (bidirectional). Head size D; a workgroup takes BQ queries
// of one head and walks the keys BKV at a time, K and V tiles staged in workgroup memory, scores and
// probabilities in workgroup memory, the output block in registers. Any sequence length.
// Q and O are token-major (t, heads, D) with a row stride; K and V are addressed by head and sequence
// strides, so the same kernel reads a (heads, seq, D) KV cache or token-major projections.
// Reference: softmax(q·kᵀ·scale + mask)·v in f64 (tests/src/reference.rs).
#include "ids.wgsl"

// OPT (a define) = ceil(BQ·D / WG): output elements per invocation.

#include "attention_io.wgsl"

var<workgroup> qs: array<f32, BQ * D>;
var<workgroup> kv: array<f32, BKV * D>;
var<workgroup> sc: array<f32, BQ * BKV>;
var<workgroup> row_m: array<f32, BQ>;
var<workgroup> row_l: array<f32, BQ>;
var<workgroup> row_c: array<f32, BQ>;

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = ids.lid;
    let h = wg.y;
    let q0 = wg.x * BQ;
    let g = h / (p.n_heads / p.n_kv_heads);
    for (var e = lid; e < BQ * D; e += WG) {
        let t = q0 + e / D;
        var val = 0.0;
        if (t < p.n_q) {
            val = f32(q[p.q_offset + t * p.q_stride + h * D + e % D]) * p.scale;
        }
        qs[e] = val;
    }
    if (lid < BQ) {
        row_m[lid] = NEG;
        row_l[lid] = 0.0;
    }
#for r in 0..OPT
    var acc{r} = 0.0;
#endfor
    var kv_end = p.n_kv;
#ifdef CAUSAL
    kv_end = min(p.n_kv, p.pos_offset + min(q0 + BQ, p.n_q));
#endif
    for (var j0 = 0u; j0 < kv_end; j0 += BKV) {
        workgroupBarrier();
        for (var e = lid; e < BKV * D; e += WG) {
            let s = j0 + e / D;
            var val = 0.0;
            if (s < kv_end) {
                val = f32(k[p.k_offset + g * p.k_head_stride + s * p.k_seq_stride + e % D]);
            }
            kv[e] = val;
        }
        workgroupBarrier();
        for (var e = lid; e < BQ * BKV; e += WG) {
            let i = e / BKV;
            let j = e % BKV;
            var dotp = 0.0;
            for (var d = 0u; d < D; d++) {
                dotp = fma(qs[i * D + d], kv[j * D + d], dotp);
            }
            var ok = j0 + j < kv_end;
#ifdef CAUSAL
            ok = ok && (j0 + j <= p.pos_offset + q0 + i);
#endif
            sc[e] = select(NEG, dotp, ok);
        }
        workgroupBarrier();
        if (lid < BQ) {
            var mx = NEG;
            for (var j = 0u; j < BKV; j++) {
                mx = max(mx, sc[lid * BKV + j]);
            }
            let m_old = row_m[lid];
            let m_new = max(m_old, mx);
            let corr = exp_c(m_old - m_new);
            var l = row_l[lid] * corr;
            for (var j = 0u; j < BKV; j++) {
                let s = sc[lid * BKV + j];
                let pj = select(0.0, exp_c(s - m_new), s > 0.5 * NEG);
                sc[lid * BKV + j] = pj;
                l += pj;
            }
            row_m[lid] = m_new;
            row_l[lid] = l;
            row_c[lid] = corr;
        }
        for (var e = lid; e < BKV * D; e += WG) {
            let s = j0 + e / D;
            var val = 0.0;
            if (s < kv_end) {
                val = f32(v[p.v_offset + g * p.v_head_stride + s * p.v_seq_stride + e % D]);
            }
            kv[e] = val;
        }
        workgroupBarrier();
#for r in 0..OPT
        {
            let e = lid + {r}u * WG;
            if (e < BQ * D) {
                let i = e / D;
                let d = e % D;
                var a = acc{r} * row_c[i];
                for (var j = 0u; j < BKV; j++) {
                    a = fma(sc[i * BKV + j], kv[j * D + d], a);
                }
                acc{r} = a;
            }
        }
#endfor
    }
    workgroupBarrier();
#for r in 0..OPT
    {
        let e = lid + {r}u * WG;
        let t = q0 + e / D;
        if (e < BQ * D && t < p.n_q) {
            o[p.o_offset + t * p.o_stride + h * D + e % D] = act(acc{r} / row_l[e / D]);
        }
    }
#endfor
}
