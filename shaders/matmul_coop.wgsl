// Y = X · Wᵀ (+ bias) for many rows of X, on the tensor cores (the cooperative-matrix tier, issue 14): W is
// (n, k) in 4 bits (W_Q4), 8 bits (W_Q8) or f16 (W_F16); X and Y are f16 activations.
// A workgroup of WGS invocations is WGS/32 subgroups of 32 (the tier is chosen only where the subgroup size is
// 32: cooperative matrices belong to a subgroup, and the tile split below counts on it). It computes a
// 128 × 128 block of Y: subgroup s owns rows 16·RI·(s / 2) .. + 16·RI and columns 64·(s % 2) .. + 64, as
// RI × 4 accumulators of 16 × 16 in f32 — 8 subgroups of 2 × 4 (WGS 256, RI 2), or 4 subgroups of 4 × 4
// (WGS 128, RI 4: each A and B tile loaded from workgroup memory feeds 4 products instead of 2 or 4).
// K advances KT (32 or 64: one or two q4 groups) a stage; the X slice and the dequantized W slice are
// staged in workgroup memory as f16, each row's KT values contiguous (padded by 8 halves so that the 16 rows
// one matrix load reads start in different banks): X row-major is the A operand,
// W's rows are the columns of the B operand (Wᵀ column-major). The products are f16 × f16 summed in f32 —
// the "accumulation always f32" rule holds; only the inputs are rounded to f16 (the weights' q4/q8 values
// times their f16 scale are exact in f16 up to the scale's rounding, the activations are f16 already).
// Each stage's global reads are issued into registers before the previous stage's products run, and written to
// workgroup memory (converted, dequantized) after them: the loads' latency hides behind the tensor cores'
// work instead of serialising with it (the first version, which loaded, stored and multiplied in turn, ran at
// 43–51 TFLOP/s on the H100 — about 5 % of its tensor cores). NX and NW (defines, from kernels/linear.rs) are
// the X vec4s and W words each invocation carries a stage.
// DOUBLE (NB = 2 staged copies, KT 32 only: 48 KB in all): a stage's registers go into one copy while the
// tensor cores read the other, so a stage needs one barrier instead of two and the subgroups that finish
// their products first go on to stage the next tile instead of waiting for the slowest.
// Results leave through a 16 × 16 f32 scratch per subgroup, so that the bias, the bounds of Y and the
// conversion to f16 are applied per element.
// Reference: dequantize, then an f64 matrix product (tests/src/reference.rs).
#include "linear_io.wgsl"
#include "dequant.wgsl"

const TILE: u32 = 128u;
const LD: u32 = KT + 8u;       // halves per staged row
const BUF: u32 = TILE * LD;    // halves per staged copy of a tile

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f16>>; // (m, k/4)
@group(0) @binding(2) var<storage, read> w: array<u32>;       // (n, kb·4)
#ifdef W_Q
@group(0) @binding(3) var<storage, read> scales: array<u32>;  // (n·kb) f16, two per word
#endif
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;    // (y_stride)
#endif
@group(0) @binding(5) var<storage, read_write> y: array<f16>; // (m, y_stride)

// The staged tiles are arrays of vec4<f16>, so that a stage is written four halves a store (one store per
// X vec4 or half a q4 word, where scalar f16 arrays took four); cooperative loads take a pointer to a vec4
// and a stride in vec4s. Offsets below stay in halves (each a multiple of 4) and are divided at the access.
var<workgroup> xs: array<vec4<f16>, NB * BUF / 4u>;   // [copy][row of X][k]
var<workgroup> ws: array<vec4<f16>, NB * BUF / 4u>;   // [copy][row of W][k]
var<workgroup> out: array<f32, WGS / 32u * 256u>;  // [subgroup][16 × 16], row-major

fn put_x(i: u32, v: vec4<f16>) {
    xs[i / 4u] = v;
}

fn put_w(i: u32, v: vec4<f32>) {
    ws[i / 4u] = vec4<f16>(v);
}

// Sixteen rows × sixteen columns of Y from this subgroup's scratch: each lane writes 8 elements.
fn store16(sg: u32, lane: u32, r0: u32, c0: u32) {
    for (var e = 0u; e < 8u; e++) {
        let i = lane * 8u + e;
        let r = r0 + i / 16u;
        let c = c0 + i % 16u;
        if (r < p.m && c < p.n) {
            var o = out[sg * 256u + i];
#ifdef BIAS
            o += bias[p.y_offset + c];
#endif
            y[r * p.y_stride + p.y_offset + c] = f16(o);
        }
    }
}

// The registers one stage passes through: X as read, W's code words (and scales) as read. Indexed only by
// the unrolled constants below, so they stay in registers.
struct Stage {
    x: array<vec4<f16>, NX>,
#ifdef W_F16
    w: array<vec2<u32>, NW>,   // two words: four halves
#else
    w: array<u32, NW>,
#endif
#ifdef W_Q
    d: array<f32, NW>,
#endif
}

// Stage s's reads from global memory (zeros outside X and W).
fn fetch(s: u32, lid: u32, n0: u32, m0: u32) -> Stage {
    var st: Stage;
    let nk4 = p.k / 4u;
    // X: TILE rows × KT/4 vec4s, k fastest so that a warp reads whole row segments
#for e in 0..NX
    {
        let t = lid + {e}u * WGS;
        let r = m0 + t / (KT / 4u);
        let gk4 = s * (KT / 4u) + t % (KT / 4u);
        st.x[{e}] = vec4<f16>(0.0);
        if (r < p.m && gk4 < nk4) {
            st.x[{e}] = x[r * p.x_stride4 + gk4];
        }
    }
#endfor
#ifdef W_Q4
    // W: TILE rows × KT/8 words; a q4 group (one scale) is 4 words
#for e in 0..NW
    {
        let t = lid + {e}u * WGS;
        let gn = n0 + t / (KT / 8u);
        let wd = t % (KT / 8u);
        let g = s * (KT / 32u) + wd / 4u;
        st.w[{e}] = 0u;
        st.d[{e}] = 0.0;
        if (gn < p.n && g < p.kb) {
            st.w[{e}] = w[(gn * p.kb + g) * 4u + wd % 4u];
            st.d[{e}] = scale(gn * p.kb + g);
        }
    }
#endfor
#endif
#ifdef W_Q8
    // W: TILE rows × KT/4 words; a 16-byte block is 4 words, a group (one scale) two blocks
#for e in 0..NW
    {
        let t = lid + {e}u * WGS;
        let gn = n0 + t / (KT / 4u);
        let wd = t % (KT / 4u);
        let blk = s * (KT / 16u) + wd / 4u;
        st.w[{e}] = 0u;
        st.d[{e}] = 0.0;
        if (gn < p.n && blk < p.kb) {
            let b = gn * p.kb + blk;
            st.w[{e}] = w[b * 4u + wd % 4u];
            st.d[{e}] = scale(b >> 1u);
        }
    }
#endfor
#endif
#ifdef W_F16
    // W: TILE rows × KT/4 pairs of words (rows are kb·8 halves, zero padded)
#for e in 0..NW
    {
        let t = lid + {e}u * WGS;
        let gn = n0 + t / (KT / 4u);
        let pair = s * (KT / 4u) + t % (KT / 4u);
        st.w[{e}] = vec2<u32>(0u);
        if (gn < p.n && pair < p.kb * 2u) {
            let at = gn * p.kb * 4u + 2u * pair;
            st.w[{e}] = vec2<u32>(w[at], w[at + 1u]);
        }
    }
#endfor
#endif
    return st;
}

// A stage's registers into workgroup memory, converted to f16 (W dequantized), at `b` halves: the copy
// the stage goes to (0 unless DOUBLE).
fn stash(st: Stage, lid: u32, b: u32) {
#for e in 0..NX
    put_x(b + ((lid + {e}u * WGS) / (KT / 4u)) * LD + ((lid + {e}u * WGS) % (KT / 4u)) * 4u, st.x[{e}]);
#endfor
#ifdef W_Q4
    // a word: 8 consecutive k of one row
#for e in 0..NW
    {
        let i = b + ((lid + {e}u * WGS) / (KT / 8u)) * LD + ((lid + {e}u * WGS) % (KT / 8u)) * 8u;
        put_w(i, nib(st.w[{e}], 0u) * st.d[{e}]);
        put_w(i + 4u, nib(st.w[{e}], 16u) * st.d[{e}]);
    }
#endfor
#endif
#ifdef W_Q8
    // a word: 4 consecutive k of one row
#for e in 0..NW
    put_w(b + ((lid + {e}u * WGS) / (KT / 4u)) * LD + ((lid + {e}u * WGS) % (KT / 4u)) * 4u, byt(st.w[{e}]) * st.d[{e}]);
#endfor
#endif
#ifdef W_F16
    // a pair of words: 4 consecutive k of one row
#for e in 0..NW
    put_w(b + ((lid + {e}u * WGS) / (KT / 4u)) * LD + ((lid + {e}u * WGS) % (KT / 4u)) * 4u, h8(st.w[{e}]));
#endfor
#endif
}

@compute @workgroup_size(WGS)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let sg = lid / 32u;
    let lane = lid % 32u;
    let n0 = wg.x * TILE;
    let m0 = wg.y * TILE;
    let sr = (sg / 2u) * (16u * RI);   // this subgroup's first row within the tile
    let sc = (sg % 2u) * 64u;   // and first column
#for i in 0..RI
#for j in 0..4
    var acc{i}{j} = coop_mat16x16<f32, C>();
#endfor
#endfor
    let nkt = (p.k + KT - 1u) / KT;
    var st = fetch(0u, lid, n0, m0);
#ifdef DOUBLE
    stash(st, lid, 0u);
    if (1u < nkt) {
        st = fetch(1u, lid, n0, m0);
    }
    workgroupBarrier();
#endif
    for (var s = 0u; s < nkt; s++) {
#ifdef DOUBLE
        let cur = (s % 2u) * BUF;
        // stage s + 1 into the other copy, whose last readers (stage s − 1) are past the barrier that ended
        // their stage; then stage s + 2's reads go out while the tensor cores work on stage s
        if (s + 1u < nkt) {
            stash(st, lid, BUF - cur);
            if (s + 2u < nkt) {
                st = fetch(s + 2u, lid, n0, m0);
            }
        }
#else
        let cur = 0u;
        stash(st, lid, 0u);
        workgroupBarrier();
        // the next stage's reads are in flight while the tensor cores work on this one
        if (s + 1u < nkt) {
            st = fetch(s + 1u, lid, n0, m0);
        }
#endif
        for (var kk = 0u; kk < KT; kk += 16u) {
#for i in 0..RI
            let a{i} = coopLoadT<coop_mat16x16<f16, A>>(&xs[(cur + (sr + {i}u * 16u) * LD + kk) / 4u], LD / 4u);
#endfor
#for j in 0..4
            let b{j} = coopLoad<coop_mat16x16<f16, B>>(&ws[(cur + (sc + {j}u * 16u) * LD + kk) / 4u], LD / 4u);
#endfor
#for i in 0..RI
#for j in 0..4
            acc{i}{j} = coopMultiplyAdd(a{i}, b{j}, acc{i}{j});
#endfor
#endfor
        }
        workgroupBarrier();
    }
#for i in 0..RI
#for j in 0..4
    coopStoreT(acc{i}{j}, &out[sg * 256u], 16u);
    workgroupBarrier();
    store16(sg, lane, m0 + sr + {i}u * 16u, n0 + sc + {j}u * 16u);
    workgroupBarrier();
#endfor
#endfor
}
