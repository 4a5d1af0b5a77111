// Attention for head size 128 with register tiling (the fast path of attention.wgsl's family; same
// semantics: causal GQA prefill with a position offset, or bidirectional). A workgroup of 256 invocations
// (16 × 16) takes 64 queries of one head and walks the keys 32 at a time:
//   S = Q·Kᵀ  — like matmul.wgsl: Q and K slices of 32 dimensions staged in workgroup memory, each invocation
//              accumulates a 4 × 2 block (4 queries × 2 keys) in registers;
//   softmax   — S goes to workgroup memory; 64 invocations own one query row each (running max and sum in
//              their registers) and turn S into P;
//   O += P·V  — each invocation owns 4 queries × 8 dimensions of O in registers; V arrives 16 keys at a time.
// Workgroup memory 28.75 KiB. Accumulation in f32. Reference: tests/src/reference.rs attention.
#include "ids.wgsl"

const D: u32 = 128u;

#include "attention_io.wgsl"
#include "attention_rows.wgsl"

var<workgroup> qc: array<vec4<f32>, 32u * 16u>;  // [32 dims][16 query quads]
var<workgroup> kc: array<vec2<f32>, 32u * 16u>;  // [32 dims][16 key pairs]
var<workgroup> ss: array<vec2<f32>, 64u * 16u>;  // [64 queries][16 key pairs]: S, then P
var<workgroup> vs: array<vec4<f32>, 16u * 32u>;  // [16 keys][32 dimension quads]
var<workgroup> row_c: array<f32, 64>;
var<workgroup> row_l: array<f32, 64>;

@compute @workgroup_size(256)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = ids.lid;
    let tx = lid % 16u;
    let ty = lid / 16u;
    let h = wg.y;
    let q0 = wg.x * 64u;
    let g = h / (p.n_heads / p.n_kv_heads);
    var kv_end = p.n_kv;
#ifdef CAUSAL
    kv_end = min(p.n_kv, p.pos_offset + min(q0 + 64u, p.n_q));
#endif
    // the row owners' running max and sum (invocations 0..63)
    var m_run = NEG;
    var l_run = 0.0;
#for i in 0..4
    var o{i}_0 = vec4<f32>(0.0);
    var o{i}_1 = vec4<f32>(0.0);
#endfor
    for (var j0 = 0u; j0 < kv_end; j0 += 32u) {
        // ---- S = Q·Kᵀ over four slices of 32 dimensions
#for i in 0..4
        var s{i} = vec2<f32>(0.0);
#endfor
        for (var dc = 0u; dc < D; dc += 32u) {
            workgroupBarrier();
            // Q: (query quad, dimension quad) tasks, 16 × 8
            if (lid < 128u) {
                let qd = lid / 8u;
                let d4 = lid % 8u;
                let a0 = q4(q0 + qd * 4u, h, dc + d4 * 4u);
                let a1 = q4(q0 + qd * 4u + 1u, h, dc + d4 * 4u);
                let a2 = q4(q0 + qd * 4u + 2u, h, dc + d4 * 4u);
                let a3 = q4(q0 + qd * 4u + 3u, h, dc + d4 * 4u);
                let b = d4 * 4u * 16u + qd;
                qc[b] = vec4<f32>(a0.x, a1.x, a2.x, a3.x);
                qc[b + 16u] = vec4<f32>(a0.y, a1.y, a2.y, a3.y);
                qc[b + 32u] = vec4<f32>(a0.z, a1.z, a2.z, a3.z);
                qc[b + 48u] = vec4<f32>(a0.w, a1.w, a2.w, a3.w);
            } else {
                // K: (key pair, dimension quad) tasks, 16 × 8
                let t = lid - 128u;
                let kp = t / 8u;
                let d4 = t % 8u;
                let c0 = k4(g, j0 + kp * 2u, dc + d4 * 4u, kv_end);
                let c1 = k4(g, j0 + kp * 2u + 1u, dc + d4 * 4u, kv_end);
                let b = d4 * 4u * 16u + kp;
                kc[b] = vec2<f32>(c0.x, c1.x);
                kc[b + 16u] = vec2<f32>(c0.y, c1.y);
                kc[b + 32u] = vec2<f32>(c0.z, c1.z);
                kc[b + 48u] = vec2<f32>(c0.w, c1.w);
            }
            workgroupBarrier();
            for (var d = 0u; d < 32u; d++) {
                let a = qc[d * 16u + ty];
                let b = kc[d * 16u + tx];
                s0 = fma(vec2<f32>(a.x), b, s0);
                s1 = fma(vec2<f32>(a.y), b, s1);
                s2 = fma(vec2<f32>(a.z), b, s2);
                s3 = fma(vec2<f32>(a.w), b, s3);
            }
        }
        // ---- mask and hand S to the row owners
#for i in 0..4
        {
            let qi = ty * 4u + {i}u;
            let key = j0 + tx * 2u;
            var ok0 = key < kv_end;
            var ok1 = key + 1u < kv_end;
#ifdef CAUSAL
            ok0 = ok0 && key <= p.pos_offset + q0 + qi;
            ok1 = ok1 && key + 1u <= p.pos_offset + q0 + qi;
#endif
            ss[qi * 16u + tx] = vec2<f32>(select(NEG, s{i}.x, ok0), select(NEG, s{i}.y, ok1));
        }
#endfor
        workgroupBarrier();
        if (lid < 64u) {
            var mx = NEG;
            for (var c = 0u; c < 16u; c++) {
                let sv = ss[lid * 16u + c];
                mx = max(mx, max(sv.x, sv.y));
            }
            let m_new = max(m_run, mx);
            let corr = exp_c(m_run - m_new);
            var l = l_run * corr;
            for (var c = 0u; c < 16u; c++) {
                let sv = ss[lid * 16u + c];
                let pv = vec2<f32>(select(0.0, exp_c(sv.x - m_new), sv.x > 0.5 * NEG), select(0.0, exp_c(sv.y - m_new), sv.y > 0.5 * NEG));
                ss[lid * 16u + c] = pv;
                l += pv.x + pv.y;
            }
            m_run = m_new;
            l_run = l;
            row_c[lid] = corr;
        }
        workgroupBarrier();
        // ---- O = O·corr + P·V, 16 keys at a time
#for i in 0..4
        {
            let c = row_c[ty * 4u + {i}u];
            o{i}_0 = o{i}_0 * c;
            o{i}_1 = o{i}_1 * c;
        }
#endfor
        for (var kh = 0u; kh < 2u; kh++) {
            workgroupBarrier();
            // V: 16 keys × 32 dimension quads = 512 tasks, two per invocation
#for r in 0..2
            {
                let t = lid + {r}u * 256u;
                let key = t / 32u;
                let d4 = t % 32u;
                vs[t] = v4(g, j0 + kh * 16u + key, d4 * 4u, kv_end);
            }
#endfor
            workgroupBarrier();
            for (var kp = 0u; kp < 8u; kp++) {
                let va0 = vs[(kp * 2u) * 32u + tx * 2u];
                let va1 = vs[(kp * 2u) * 32u + tx * 2u + 1u];
                let vb0 = vs[(kp * 2u + 1u) * 32u + tx * 2u];
                let vb1 = vs[(kp * 2u + 1u) * 32u + tx * 2u + 1u];
#for i in 0..4
                {
                    let pp = ss[(ty * 4u + {i}u) * 16u + kh * 8u + kp];
                    o{i}_0 = fma(vec4<f32>(pp.x), va0, fma(vec4<f32>(pp.y), vb0, o{i}_0));
                    o{i}_1 = fma(vec4<f32>(pp.x), va1, fma(vec4<f32>(pp.y), vb1, o{i}_1));
                }
#endfor
            }
        }
        workgroupBarrier();
    }
    if (lid < 64u) {
        row_l[lid] = l_run;
    }
    workgroupBarrier();
#for i in 0..4
    {
        let qi = ty * 4u + {i}u;
        store8(q0 + qi, h, tx * 8u, o{i}_0, o{i}_1, 1.0 / row_l[qi]);
    }
#endfor
}
