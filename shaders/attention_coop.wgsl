// Prefill attention on the tensor cores (the cooperative-matrix tier, issue 14): the semantics of
// attention.wgsl (causal GQA prefill with a position offset, or SigLIP's bidirectional attention) for any head
// size D up to 128, f16 activations. A workgroup of 8 subgroups of 32 takes 64 queries of one head (Q staged
// once, scaled, as f16) and walks the keys 32 at a time:
//   S = Q·Kᵀ  — 64 × 32 scores, one 16 × 16 tile a subgroup, summed over D in 16-wide slices (D padded to DP,
//              a multiple of 16, with zeros), stored to workgroup memory in f32;
//   softmax   — 64 invocations own one query row each (running max and sum in registers) and write P as f16;
//   O += P·V  — each subgroup owns 16 queries × every other 16 dimensions of O, kept in f32 registers (8
//              values a lane a tile): a fresh 16 × 16 product P·V goes through the subgroup's f32 scratch and
//              is added to the registers after they are scaled by the row's correction (cooperative
//              matrices cannot be scaled element by element).
// Cooperative operations need uniform control flow: every subgroup runs TPS tile slots, and a slot beyond DP
// (odd D/16) multiplies a clamped tile whose result is not kept. Workgroup memory ≈ 47 KiB at D = 128.
// Reference: tests/src/reference.rs attention.
#include "attention_io.wgsl"

const LDQ: u32 = DP + 8u;   // halves per staged row of Q, K and V
const LDP: u32 = 40u;       // halves per row of P (32 keys + 8)

var<workgroup> qs: array<f16, 64u * LDQ>;   // [query][d]
var<workgroup> kvs: array<f16, 32u * LDQ>;  // [key][d]: K, then V
var<workgroup> ss: array<f32, 64u * 32u>;   // [query][key]
var<workgroup> ps: array<f16, 64u * LDP>;   // [query][key]
var<workgroup> scratch: array<f32, 8u * 256u>;
var<workgroup> row_c: array<f32, 64>;
var<workgroup> row_l: array<f32, 64>;

// 32 keys from j0 on of K (or V) head g into kvs as f16, zeros beyond `end` and beyond D.
fn stage_kv(lid: u32, g: u32, j0: u32, end: u32, is_v: bool) {
#for e in 0..KPT
    {
        let i = lid + {e}u * 256u;
        let key = i / DP;
        let d = i % DP;
        var val = f16(0.0);
        if (j0 + key < end && d < D) {
            if (is_v) {
                val = f16(v[p.v_offset + g * p.v_head_stride + (j0 + key) * p.v_seq_stride + d]);
            } else {
                val = f16(k[p.k_offset + g * p.k_head_stride + (j0 + key) * p.k_seq_stride + d]);
            }
        }
        kvs[key * LDQ + d] = val;
    }
#endfor
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let sg = lid / 32u;
    let lane = lid % 32u;
    let h = wg.y;
    let q0 = wg.x * 64u;
    let g = h / (p.n_heads / p.n_kv_heads);
    var kv_end = p.n_kv;
#ifdef CAUSAL
    kv_end = min(p.n_kv, p.pos_offset + min(q0 + 64u, p.n_q));
#endif
    // Q, scaled, once
#for e in 0..QPT
    {
        let i = lid + {e}u * 256u;
        let row = i / DP;
        let d = i % DP;
        var val = f16(0.0);
        if (q0 + row < p.n_q && d < D) {
            val = f16(f32(q[p.q_offset + (q0 + row) * p.q_stride + h * D + d]) * p.scale);
        }
        qs[row * LDQ + d] = val;
    }
#endfor
    let sq = (sg / 2u) * 16u;   // this subgroup's 16 queries (S and O)
    let sk = (sg % 2u) * 16u;   // its 16 keys of S
    var m_run = NEG;
    var l_run = 0.0;
    // O: slot u holds dimensions 16·(sg % 2 + 2u) ..; lane owns elements lane·8 .. + 7 of the 16 × 16 tile
#for u in 0..TPS
#for e in 0..8
    var o{u}_{e} = 0.0;
#endfor
#endfor
    for (var j0 = 0u; j0 < kv_end; j0 += 32u) {
        stage_kv(lid, g, j0, kv_end, false);
        workgroupBarrier();
        // ---- S = Q·Kᵀ, one 16 × 16 tile a subgroup
        var s = coop_mat16x16<f32, C>();
        for (var t = 0u; t < DP; t += 16u) {
            let a = coopLoadT<coop_mat16x16<f16, A>>(&qs[sq * LDQ + t], LDQ);
            let b = coopLoad<coop_mat16x16<f16, B>>(&kvs[sk * LDQ + t], LDQ);
            s = coopMultiplyAdd(a, b, s);
        }
        coopStoreT(s, &ss[sq * 32u + sk], 32u);
        workgroupBarrier();
        // ---- mask, softmax by the row owners; meanwhile V replaces K
        if (lid < 64u) {
            var mx = NEG;
            for (var c = 0u; c < 32u; c++) {
                let key = j0 + c;
                var ok = key < kv_end;
#ifdef CAUSAL
                ok = ok && key <= p.pos_offset + q0 + lid;
#endif
                let sv = select(NEG, ss[lid * 32u + c], ok);
                ss[lid * 32u + c] = sv;
                mx = max(mx, sv);
            }
            let m_new = max(m_run, mx);
            let corr = exp_c(m_run - m_new);
            var l = l_run * corr;
            for (var c = 0u; c < 32u; c++) {
                let sv = ss[lid * 32u + c];
                let pv = select(0.0, exp_c(sv - m_new), sv > 0.5 * NEG);
                ps[lid * LDP + c] = f16(pv);
                l += pv;
            }
            m_run = m_new;
            l_run = l;
            row_c[lid] = corr;
        }
        workgroupBarrier();
        stage_kv(lid, g, j0, kv_end, true);
        workgroupBarrier();
        // ---- O = O·corr + P·V
#for u in 0..TPS
        {
            let t = min(((sg % 2u) + 2u * {u}u) * 16u, DP - 16u);
            var pv = coop_mat16x16<f32, C>();
            for (var kk = 0u; kk < 32u; kk += 16u) {
                let a = coopLoadT<coop_mat16x16<f16, A>>(&ps[sq * LDP + kk], LDP);
                let b = coopLoadT<coop_mat16x16<f16, B>>(&kvs[kk * LDQ + t], LDQ);
                pv = coopMultiplyAdd(a, b, pv);
            }
            coopStoreT(pv, &scratch[sg * 256u], 16u);
            workgroupBarrier();
#for e in 0..8
            {
                let i = lane * 8u + {e}u;
                o{u}_{e} = o{u}_{e} * row_c[sq + i / 16u] + scratch[sg * 256u + i];
            }
#endfor
            workgroupBarrier();
        }
#endfor
    }
    if (lid < 64u) {
        row_l[lid] = l_run;
    }
    workgroupBarrier();
#for u in 0..TPS
#for e in 0..8
    {
        let i = lane * 8u + {e}u;
        let row = sq + i / 16u;
        let d = ((sg % 2u) + 2u * {u}u) * 16u + i % 16u;
        if (q0 + row < p.n_q && d < D) {
            o[p.o_offset + (q0 + row) * p.o_stride + h * D + d] = act(o{u}_{e} / row_l[row]);
        }
    }
#endfor
#endfor
}
