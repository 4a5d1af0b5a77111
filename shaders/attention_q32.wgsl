// Attention for head size 128, 32 queries × 64 keys a step (issue 14's prefill attention on the portable
// tiers; ContextOptions::attention_q32 picks it over attention_tiled.wgsl). Same semantics: causal GQA
// prefill with a position offset, or bidirectional. Where attention_tiled.wgsl stages its 64 queries again for
// every 32 keys, reads two workgroup-memory vectors for 8 products of S and leaves the softmax to a quarter
// of its invocations, a workgroup of 128 invocations (16 along keys or dimensions × 8 query quads) here:
//   stages its 32 queries once (scaled), [128 dimensions][8 query quads];
//   S = Q·Kᵀ  — K's 64 keys staged 32 dimensions at a time, each invocation a 4 × 4 block of S (two
//              workgroup-memory vectors for 16 products);
//   softmax   — every invocation: four a query row, 16 keys each, partial maxima and sums through
//              workgroup memory;
//   O += P·V  — each invocation 4 queries × 8 dimensions of O in registers; V arrives 16 keys at a time.
// K's next slice and V's next chunk are loaded into registers while the current ones are multiplied.
// Workgroup memory 32 KiB (attention::Q32_STORAGE: browsers offer no more): K's slice and V's chunk, never
// needed at once, share one array, which also holds the softmax's partial results between the two.
// Accumulation in f32. Reference: tests/src/reference.rs attention.
#include "ids.wgsl"

const D: u32 = 128u;

#include "attention_io.wgsl"
#include "attention_rows.wgsl"

var<workgroup> qs: array<vec4<f32>, 128u * 8u>; // [128 dimensions][8 query quads], scaled
var<workgroup> ss: array<vec4<f32>, 32u * 16u>; // [32 queries][16 key quads]: S, then P
// K: [32 dimensions][16 key quads] while S is summed; then each invocation's partial maximum (.x) and sum
// (.y) of its quarter row at [lid], the row's correction of O (.z) and at the end its sum (.w) at [r];
// then V: [16 keys][32 dimension quads]
var<workgroup> kv: array<vec4<f32>, 512>;

@compute @workgroup_size(128)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>) {
    let lid = ids.lid;
    let tx = lid % 16u;
    let ty = lid / 16u;
    // the softmax's row and quarter of it
    let r = lid / 4u;
    let c = lid % 4u;
    let h = wg.y;
    let q0 = wg.x * 32u;
    let g = h / (p.n_heads / p.n_kv_heads);
    var kv_end = p.n_kv;
#ifdef CAUSAL
    kv_end = min(p.n_kv, p.pos_offset + min(q0 + 32u, p.n_q));
#endif
    // Q: (query quad, dimension quad) tasks, 8 × 32, two an invocation
#for u in 0..2
    {
        let t = lid + {u}u * 128u;
        let qd = t / 32u;
        let d4 = t % 32u;
        let a0 = q4(q0 + qd * 4u, h, d4 * 4u);
        let a1 = q4(q0 + qd * 4u + 1u, h, d4 * 4u);
        let a2 = q4(q0 + qd * 4u + 2u, h, d4 * 4u);
        let a3 = q4(q0 + qd * 4u + 3u, h, d4 * 4u);
        let b = d4 * 32u + qd;
        qs[b] = vec4<f32>(a0.x, a1.x, a2.x, a3.x);
        qs[b + 8u] = vec4<f32>(a0.y, a1.y, a2.y, a3.y);
        qs[b + 16u] = vec4<f32>(a0.z, a1.z, a2.z, a3.z);
        qs[b + 24u] = vec4<f32>(a0.w, a1.w, a2.w, a3.w);
    }
#endfor
    // the row's running max and sum, the same in its four invocations
    var m_run = NEG;
    var l_run = 0.0;
#for i in 0..4
    var o{i}_0 = vec4<f32>(0.0);
    var o{i}_1 = vec4<f32>(0.0);
#endfor
    // K's staging task (key quad, dimension quad), 16 × 8, one an invocation; the next slice is loaded into
    // registers while this one is multiplied (and V's next chunk likewise), so the loads wait on no barrier
    let kq = lid / 8u;
    let d4 = lid % 8u;
#for i in 0..4
    var pk{i} = k4(g, kq * 4u + {i}u, d4 * 4u, kv_end);
    var pv{i} = vec4<f32>(0.0);
#endfor
    for (var j0 = 0u; j0 < kv_end; j0 += 64u) {
        // ---- S = Q·Kᵀ: queries ty·4 + i, keys j0 + tx·4 .. + 3
#for i in 0..4
        var s{i} = vec4<f32>(0.0);
#endfor
        for (var dc = 0u; dc < D; dc += 32u) {
            workgroupBarrier();
            {
                let b = d4 * 64u + kq;
                kv[b] = vec4<f32>(pk0.x, pk1.x, pk2.x, pk3.x);
                kv[b + 16u] = vec4<f32>(pk0.y, pk1.y, pk2.y, pk3.y);
                kv[b + 32u] = vec4<f32>(pk0.z, pk1.z, pk2.z, pk3.z);
                kv[b + 48u] = vec4<f32>(pk0.w, pk1.w, pk2.w, pk3.w);
            }
            workgroupBarrier();
            // the next slice: this block's next 32 dimensions, or the next block's first (zeros past the end)
            {
                let last = dc + 32u == D;
                let nj = select(j0, j0 + 64u, last);
                let nd = select(dc + 32u, 0u, last);
#for i in 0..4
                pk{i} = k4(g, nj + kq * 4u + {i}u, nd + d4 * 4u, kv_end);
#endfor
            }
            for (var d = 0u; d < 32u; d++) {
                let a = qs[(dc + d) * 8u + ty];
                let b = kv[d * 16u + tx];
                s0 = fma(vec4<f32>(a.x), b, s0);
                s1 = fma(vec4<f32>(a.y), b, s1);
                s2 = fma(vec4<f32>(a.z), b, s2);
                s3 = fma(vec4<f32>(a.w), b, s3);
            }
        }
        // V's first chunk on its way during the softmax
#for u in 0..4
        pv{u} = v4(g, j0 + (lid + {u}u * 128u) / 32u, ((lid + {u}u * 128u) % 32u) * 4u, kv_end);
#endfor
        // ---- mask, and S into workgroup memory
#for i in 0..4
        {
            let qi = ty * 4u + {i}u;
            let key = vec4<u32>(j0 + tx * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
            var ok = key < vec4<u32>(kv_end);
#ifdef CAUSAL
            ok = ok & (key <= vec4<u32>(p.pos_offset + q0 + qi));
#endif
            ss[qi * 16u + tx] = select(vec4<f32>(NEG), s{i}, ok);
        }
#endfor
        workgroupBarrier();
        // ---- softmax: row r's keys c·16 .. + 15 in this invocation
        var mx = NEG;
        for (var u = 0u; u < 4u; u++) {
            let sv = ss[r * 16u + c * 4u + u];
            mx = max(mx, max(max(sv.x, sv.y), max(sv.z, sv.w)));
        }
        kv[lid].x = mx;
        workgroupBarrier();
        let m_new = max(m_run, max(max(kv[r * 4u].x, kv[r * 4u + 1u].x), max(kv[r * 4u + 2u].x, kv[r * 4u + 3u].x)));
        let corr = exp_c(m_run - m_new);
        var l = 0.0;
        for (var u = 0u; u < 4u; u++) {
            let at = r * 16u + c * 4u + u;
            let sv = ss[at];
            let ex = vec4<f32>(exp_c(sv.x - m_new), exp_c(sv.y - m_new), exp_c(sv.z - m_new), exp_c(sv.w - m_new));
            let pv = select(vec4<f32>(0.0), ex, sv > vec4<f32>(0.5 * NEG));
            ss[at] = pv;
            l += pv.x + pv.y + pv.z + pv.w;
        }
        kv[lid].y = l;
        workgroupBarrier();
        l_run = l_run * corr + (kv[r * 4u].y + kv[r * 4u + 1u].y) + (kv[r * 4u + 2u].y + kv[r * 4u + 3u].y);
        m_run = m_new;
        workgroupBarrier(); // every sum read before a correction takes the place of some
        if (c == 0u) {
            kv[r].z = corr;
        }
        workgroupBarrier();
        // ---- O = O·corr + P·V, 16 keys at a time
#for i in 0..4
        {
            let cr = kv[ty * 4u + {i}u].z;
            o{i}_0 = o{i}_0 * cr;
            o{i}_1 = o{i}_1 * cr;
        }
#endfor
        for (var kh = 0u; kh < 4u; kh++) {
            workgroupBarrier();
            // V: 16 keys × 32 dimension quads = 512 tasks, four an invocation; then the next chunk's loads
#for u in 0..4
            kv[lid + {u}u * 128u] = pv{u};
#endfor
            workgroupBarrier();
            if (kh < 3u) {
#for u in 0..4
                pv{u} = v4(g, j0 + (kh + 1u) * 16u + (lid + {u}u * 128u) / 32u, ((lid + {u}u * 128u) % 32u) * 4u, kv_end);
#endfor
            }
            for (var kq = 0u; kq < 4u; kq++) {
#for i in 0..4
                let pp{i} = ss[(ty * 4u + {i}u) * 16u + kh * 4u + kq];
#endfor
#for e in 0..4
                {
                    let va = kv[(kq * 4u + {e}u) * 32u + tx * 2u];
                    let vb = kv[(kq * 4u + {e}u) * 32u + tx * 2u + 1u];
#for i in 0..4
                    o{i}_0 = fma(vec4<f32>(pp{i}[{e}]), va, o{i}_0);
                    o{i}_1 = fma(vec4<f32>(pp{i}[{e}]), vb, o{i}_1);
#endfor
                }
#endfor
            }
        }
    }
    workgroupBarrier(); // V's last chunk read
    if (c == 0u) {
        kv[r].w = l_run;
    }
    workgroupBarrier();
#for i in 0..4
    {
        let qi = ty * 4u + {i}u;
        store8(q0 + qi, h, tx * 8u, o{i}_0, o{i}_1, 1.0 / kv[qi].w);
    }
#endfor
}
