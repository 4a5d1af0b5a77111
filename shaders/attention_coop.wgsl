// Prefill attention on the tensor cores (the cooperative-matrix tier, issue 14): the semantics of
// attention.wgsl (causal GQA prefill with a position offset, or SigLIP's bidirectional attention) for any head
// size D up to 128 in steps of 8, f16 activations. A workgroup of SG = 4 subgroups of 32 takes 64 queries of
// one head; each subgroup owns 16 of them outright (flash-attention 2's split), so the softmax never crosses
// subgroups. Q is staged once (scaled, f16) and kept in registers as DT = DP/16 cooperative A tiles (D padded
// to DP, a multiple of 16, with zeros); O is DT f32 accumulator tiles in registers. Keys go KB = 32 at a step:
//   stage     K and V of the step into workgroup memory (vec4<f16> loads);
//   S = Q·Kᵀ  16 × 32 scores a subgroup, stored to its scratch in f32;
//   softmax   two lanes a query row, 16 scores each, paired by one shuffle; P = e^(s − m) as f16;
//   O += P·V  straight into the accumulators.
// The running max m is raised only when a row's new scores exceed it by more than 8 (then P ≤ e^8, which f16
// holds exactly enough): only then must O be scaled by e^(m_old − m_new), which cooperative matrices cannot do
// in registers — that rare step goes through the scratch, decided for the whole workgroup at once because
// cooperative operations need uniform control flow. Four barriers a step otherwise.
// Reference: tests/src/reference.rs attention.
#include "attention_io.wgsl"

const T: u32 = 32u * SG;       // invocations
const QB: u32 = 16u * SG;      // queries a workgroup
const LD: u32 = DP + 8u;       // halves per staged row of Q, K and V (the 8: fewer bank conflicts)
const LDS: u32 = KB + 4u;      // f32 per row of a subgroup's scratch
const LDP: u32 = KB + 8u;      // halves per row of P
const D4: u32 = D / 4u;
const DP4: u32 = DP / 4u;

var<workgroup> kv: array<f16, 2u * KB * LD>;     // [key][d]: K rows, then V rows; Q's QB ≤ 2·KB rows first
var<workgroup> pp: array<f16, SG * 16u * LDP>;   // per subgroup: P
var<workgroup> sc: array<f32, SG * 16u * LDS>;   // per subgroup: S, or one O tile being scaled or written
var<workgroup> row_f: array<f32, QB>;            // per query: O's correction this step; 1/l at the end
var<workgroup> raised: array<u32, SG>;           // per subgroup: whether a row must scale its O this step
// Every workgroup variable is a multiple of 16 bytes: cooperative loads and stores need 16-byte aligned
// addresses, and the driver places the variables one after another (a lone 4-byte atomic placed first
// shifted every tile by one element on the H100).

fn put4(at: u32, val: vec4<f16>) {
    kv[at] = val.x;
    kv[at + 1u] = val.y;
    kv[at + 2u] = val.z;
    kv[at + 3u] = val.w;
}

@compute @workgroup_size(T)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let sg = lid / 32u;
    let lane = lid % 32u;
    let h = wg.y;
    let q0 = wg.x * QB;
    let g = h / (p.n_heads / p.n_kv_heads);
    var kv_end = p.n_kv;
#ifdef CAUSAL
    kv_end = min(p.n_kv, p.pos_offset + min(q0 + QB, p.n_q));
#endif
    // Q, scaled, through kv into each subgroup's A tiles
#for e in 0..QPT
    {
        let i = lid + {e}u * T;
        let row = i / DP4;
        let c = i % DP4;
        var val = vec4<f16>(0.0);
        if (q0 + row < p.n_q && c < D4) {
            val = vec4<f16>(vec4<f32>(q[(p.q_offset + (q0 + row) * p.q_stride + h * D) / 4u + c]) * p.scale);
        }
        put4(row * LD + c * 4u, val);
    }
#endfor
    workgroupBarrier();
#for t in 0..DT
    let qa{t} = coopLoadT<coop_mat16x16<f16, A>>(&kv[(sg * 16u) * LD + {t}u * 16u], LD);
    var o{t} = coop_mat16x16<f32, C>();
#endfor
    // this lane's half row of scores: query sg·16 + row, keys half·16 .. + 15 of each step
    let row = lane / 2u;
    let half = lane % 2u;
    let qpos = p.pos_offset + q0 + sg * 16u + row;
    let scr = sg * 16u * LDS;
    var m_run = NEG;
    var l_run = 0.0;
    for (var j0 = 0u; j0 < kv_end; j0 += KB) {
        // every subgroup is done with the last step's K, V, P and flags (and Q's rows, the first time)
        workgroupBarrier();
#for e in 0..KVPT
        {
            let i = lid + {e}u * T;
            let r = i / DP4;
            let c = i % DP4;
            let key = j0 + r % KB;
            var val = vec4<f16>(0.0);
            if (key < kv_end && c < D4) {
                if (r < KB) {
                    val = k[(p.k_offset + g * p.k_head_stride + key * p.k_seq_stride) / 4u + c];
                } else {
                    val = v[(p.v_offset + g * p.v_head_stride + key * p.v_seq_stride) / 4u + c];
                }
            }
            put4(r * LD + c * 4u, val);
        }
#endfor
        workgroupBarrier();
        // ---- S = Q·Kᵀ: 16 queries × 32 keys, two tiles
#for s in 0..2
        {
            var st = coop_mat16x16<f32, C>();
#for t in 0..DT
            st = coopMultiplyAdd(qa{t}, coopLoad<coop_mat16x16<f16, B>>(&kv[({s}u * 16u) * LD + {t}u * 16u], LD), st);
#endfor
            coopStoreT(st, &sc[scr + {s}u * 16u], LDS);
        }
#endfor
        workgroupBarrier();
        // ---- softmax of this lane's 16 scores
        var mx = NEG;
#for c in 0..16
        let key{c} = j0 + half * 16u + {c}u;
#ifdef CAUSAL
        let ok{c} = key{c} < kv_end && key{c} <= qpos;
#else
        let ok{c} = key{c} < kv_end;
#endif
        let s{c} = select(NEG, sc[scr + row * LDS + half * 16u + {c}u], ok{c});
        mx = max(mx, s{c});
#endfor
        mx = max(mx, subgroupShuffleXor(mx, 1u));
        let m_new = max(m_run, mx);
        var corr = 1.0;
        let raise = m_new > m_run + 8.0;
        if (raise) {
            corr = exp_c(m_run - m_new);
            m_run = m_new;
        }
        var ls = 0.0;
#for c in 0..16
        {
            let pv = select(0.0, exp_c(s{c} - m_run), ok{c});
            pp[sg * 16u * LDP + row * LDP + half * 16u + {c}u] = f16(pv);
            ls += pv;
        }
#endfor
        ls += subgroupShuffleXor(ls, 1u);
        l_run = l_run * corr + ls;
        if (half == 0u) {
            row_f[sg * 16u + row] = corr;
        }

        // O is still zero after the first step: nothing to scale
        let any_raised = subgroupAny(raise && j0 > 0u);
        if (lane == 0u) {
            raised[sg] = u32(any_raised);
        }
        // a barrier too: P and the corrections are visible after it (naga counts any local variable as
        // non-uniform, so the condition is built from the loaded flags alone)
        let r = workgroupUniformLoad(&raised);
        if (r[0] + r[1] + r[2] + r[3] != 0u) {  // SG = 4 (kernels/attention.rs asserts it)
#for t in 0..DT
            coopStoreT(o{t}, &sc[scr], LDS);
            workgroupBarrier();
#for c in 0..8
            sc[scr + row * LDS + half * 8u + {c}u] *= row_f[sg * 16u + row];
#endfor
            workgroupBarrier();
            o{t} = coopLoadT<coop_mat16x16<f32, C>>(&sc[scr], LDS);
            workgroupBarrier();
#endfor
        }
        // ---- O += P·V
#for s in 0..2
        {
            let pa = coopLoadT<coop_mat16x16<f16, A>>(&pp[sg * 16u * LDP + {s}u * 16u], LDP);
#for t in 0..DT
            o{t} = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&kv[(KB + {s}u * 16u) * LD + {t}u * 16u], LD), o{t});
#endfor
        }
#endfor
    }
    if (half == 0u) {
        row_f[sg * 16u + row] = 1.0 / l_run;
    }
    workgroupBarrier();
    let qi = q0 + sg * 16u + row;
#for t in 0..DT
    coopStoreT(o{t}, &sc[scr], LDS);
    workgroupBarrier();
#for c in 0..8
    {
        let d = {t}u * 16u + half * 8u + {c}u;
        if (qi < p.n_q && d < D) {
            o[p.o_offset + qi * p.o_stride + h * D + d] = act(sc[scr + row * LDS + half * 8u + {c}u] * row_f[sg * 16u + row]);
        }
    }
#endfor
    workgroupBarrier();
#endfor
}
