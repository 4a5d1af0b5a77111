// Y = X · Wᵀ (+ bias) for many rows of X (prefill, vision). W is (n, k) in 4 bits (W_Q4),
// 8 bits (W_Q8) or f16 (W_F16).
// Register tiling: a workgroup of WGT invocations (16 along n × TYN along m: 256 = 16 × 16 by default)
// computes a TILE × TILE block of Y, each invocation VM × VN vec4s of it (4·VM rows × 4·VN columns; by
// default VM = VN = TILE/64) held in registers. K advances 32 at a time (one q4 group);
// the X slice and the dequantized W slice are staged in workgroup memory as f32, laid out [k][row/4] so the
// inner loop reads whole vec4s (VM + VN loads for 16·VM·VN FMAs). Loads are assigned by row quads: an invocation
// loads 4 rows at one k position and transposes them in registers, so every workgroup-memory store is a
// whole vec4. Memory: 2 · 32 · TILE · 4 bytes (16 KiB at TILE 64, 32 KiB at TILE 128). Accumulation in f32.
// PACKED (below) trades "accumulation always f32" for packed f16 arithmetic: within a group of 32 k the products
// and their sum are f16, then added to the f32 sums. It overflows only where one group's 32 products pass
// 65,504 together (activations in the thousands against weights near one); its rounding is ~2⁻¹¹ of the
// group's sum. Tested within the f16 tolerance on random data (tests/tests/kernels.rs); not yet measured on
// the 14B's own activations.
// Variants (ContextOptions::tiled_matmul, all three by default): MM_IL interleaves the invocations' vec4s of
// the staged tiles (quad_m and quad_n below), MM_PF prefetches tile kt + 1 into registers while tile kt is multiplied
// (q4/q8), MM_UR unrolls the 32 k steps; together 22 → 33 TFLOP/s in f32 on the H100 (BENCHMARKS.md).
// MM_BW (with MM_PF, q4) gives every invocation half a code word of four rows to dequantize and stage, where
// half of them had a whole word each and the other half waited at the barrier. MM_MA writes the products as a
// multiply and an add rather than fma() (which form the driver pairs in f16). Ablations for measurement
// only, whose products are wrong: MM_XL leaves out the loads after the first tile (what the inner loop and
// staging cost without memory), MM_XS the loads and the staging (the inner loop and one barrier a tile),
// MM_XB has every invocation read the same vec4s of W's tile (what the inner loop costs without the
// workgroup-memory bandwidth its W reads take). MM_W8 arranges a subgroup's invocations 8 × 4.
// Reference: dequantize, then an f64 matrix product (tests/src/reference.rs).
#include "ids.wgsl"

const Q: u32 = TILE / 4u;     // row quads per tile
// Defines: WGT invocations, TYN = WGT / 16 of them along m; VM, VN vec4s of outputs an invocation along m and
// n (VM·TYN = VN·16 = Q); XT tasks of X's staging an invocation with MM_PF. MM_T16 (the 128-wide tile, q4,
// prefetched: WGT 128, VM 4, VN 2, XT 2) gives each invocation 16 rows × 8 columns where it had 8 × 8: six
// workgroup-memory reads a k step for 128 products instead of four for 64.

#include "linear_io.wgsl"
#include "dequant.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act4>;      // (m, k/4)
@group(0) @binding(2) var<storage, read> w: array<u32>;       // (n, kb·4)
#ifdef W_Q
@group(0) @binding(3) var<storage, read> scales: array<u32>;  // (n·kb) f16, two per word
#endif
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;    // (y_stride)
#endif
@group(0) @binding(5) var<storage, read_write> y: array<act>; // (m, y_stride)

#ifdef PACKED
// PACKED (f16 activations): the tiles are staged as f16 and multiplied in packed f16 (two products an
// instruction where the GPU pairs them), summed in f16 over one group of 32 k and in f32 across groups
alias tile4 = vec4<f16>;
#else
alias tile4 = vec4<f32>;
#endif
var<workgroup> xs: array<tile4, 32u * Q>; // [32 k][TILE/4 row quads of X]
var<workgroup> ws: array<tile4, 32u * Q>; // [32 k][TILE/4 row quads of W]

// Four rows' values at four consecutive k, transposed into a tile ([k][row quad]) from position b (the rows'
// quad at the first k): one vec4 store a k.
fn put_x(b: u32, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) {
    xs[b] = tile4(vec4<f32>(v0.x, v1.x, v2.x, v3.x));
    xs[b + Q] = tile4(vec4<f32>(v0.y, v1.y, v2.y, v3.y));
    xs[b + 2u * Q] = tile4(vec4<f32>(v0.z, v1.z, v2.z, v3.z));
    xs[b + 3u * Q] = tile4(vec4<f32>(v0.w, v1.w, v2.w, v3.w));
}
fn put_w(b: u32, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) {
    ws[b] = tile4(vec4<f32>(v0.x, v1.x, v2.x, v3.x));
    ws[b + Q] = tile4(vec4<f32>(v0.y, v1.y, v2.y, v3.y));
    ws[b + 2u * Q] = tile4(vec4<f32>(v0.z, v1.z, v2.z, v3.z));
    ws[b + 3u * Q] = tile4(vec4<f32>(v0.w, v1.w, v2.w, v3.w));
}

#ifdef W_Q4
// Values 0..3 (h = 0) or 4..7 (h = 1) of one code word, times the group scale (MM_BW stages one half).
fn deq_half(word: u32, h: u32, d: f32) -> vec4<f32> {
    // 2^23 + q as a float, minus 2^23 + 8: exact, and no int→float conversion
    let sh = vec4<u32>(0u, 4u, 8u, 12u) + vec4<u32>(h * 16u);
    return (bitcast<vec4<f32>>(((vec4<u32>(word) >> sh) & vec4<u32>(15u)) | vec4<u32>(0x4B000000u)) - vec4<f32>(8388616.0)) * d;
}

// The 8 values of one code word, as (values 0..3, values 4..7), times the group scale.
fn deq(word: u32, d: f32) -> mat2x4<f32> {
    return mat2x4<f32>(deq_half(word, 0u, d), deq_half(word, 1u, d));
}
#endif

// Four outputs of one row, columns gn0 .. gn0 + 3 (those inside Y).
fn store4(gm: u32, gn0: u32, v: vec4<f32>) {
    if (gm >= p.m) {
        return;
    }
    for (var e = 0u; e < 4u; e++) {
        let gn = gn0 + e;
        if (gn < p.n) {
            var o = v[e];
#ifdef BIAS
            o += bias[p.y_offset + gn];
#endif
            y[gm * p.y_stride + p.y_offset + gn] = act(o);
        }
    }
}

fn load_x(row: u32, k4: u32, nk4: u32) -> vec4<f32> {
    return vec4<f32>(ld_x(row, k4, nk4));
}
// X's vec4 as stored (MM_PF keeps it so until it is staged: converting it at once would wait for the load).
fn ld_x(row: u32, k4: u32, nk4: u32) -> act4 {
    if (row < p.m && k4 < nk4) {
        return x[row * p.x_stride4 + k4];
    }
    return act4(0.0);
}

#ifdef MM_PF
// Code word `wd` of row `gn`'s group (q4) or block pair (q8) `kt`, and the word holding its scale.
fn ld_w(gn: u32, kt: u32, wd: u32) -> u32 {
    if (gn < p.n) {
#ifdef W_Q4
        return w[(gn * p.kb + kt) * 4u + wd];
#else
        return w[(gn * p.kb + kt * 2u) * 4u + wd];
#endif
    }
    return 0u;
}
fn ld_s(gn: u32, kt: u32) -> u32 {
    if (gn < p.n) {
#ifdef W_Q4
        return scales[(gn * p.kb + kt) >> 1u];
#else
        return scales[(gn * p.kb + kt * 2u) >> 2u];
#endif
    }
    return 0u;
}
#endif

// The row quad (of X's tile) that invocation t along m covers with its i-th vec4 of outputs, and the column
// quad (of W's) along n. MM_IL interleaves them (quad i·16 + t along n), so the invocations along a side
// read consecutive vec4s of the staged tile a step, not every other one.
fn quad_m(i: u32, t: u32) -> u32 {
#ifdef MM_IL
    return i * TYN + t;
#else
    return t * VM + i;
#endif
}
fn quad_n(j: u32, t: u32) -> u32 {
#ifdef MM_IL
    return j * 16u + t;
#else
    return t * VN + j;
#endif
}

@compute @workgroup_size(WGT)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = ids.lid;
#ifdef MM_W8
    // (256 invocations) a subgroup of 32 covers 8 columns × 4 rows of invocations (not 16 × 2): its reads of W's tile are 8
    // vec4s (128 bytes) a step, of X's 4, each shared by the others
    let tx = (lid / 32u) % 2u * 8u + lid % 8u;
    let ty = lid / 64u * 4u + (lid % 32u) / 8u;
#else
    let tx = lid % 16u;
    let ty = lid / 16u;
#endif
    let n0 = wg.x * TILE;
    let m0 = wg.y * TILE;
    let nk4 = p.k / 4u;
    // acc_{i4}_{j}_{e}: row 4·quad_m(i4, ty) + e, columns 4·quad_n(j, tx) .. + 3
#for i4 in 0..VM
#for j in 0..VN
#for e in 0..4
    var acc_{i4}_{j}_{e} = vec4<f32>(0.0);
#endfor
#endfor
#endfor
    let nkt = (p.k + 31u) / 32u;
#ifdef MM_PF
    // Tile kt + 1's loads go out before tile kt is multiplied and land in registers as loaded (raw words:
    // converting them at once would wait for them); XT tasks of X and at most one of W an invocation.
#for u in 0..XT
    let xq{u} = (lid + {u}u * WGT) / 8u;
    let xc{u} = (lid + {u}u * WGT) % 8u;
    let x_on{u} = lid + {u}u * WGT < Q * 8u;
#endfor
#ifdef W_Q4
#ifdef MM_BW
    let wq = lid / 8u;
    let wd = (lid % 8u) / 2u;
    let wh = lid % 2u; // values 0..3 or 4..7 of the word
    let w_on = lid < Q * 8u;
#else
    let wq = lid / 4u;
    let wd = lid % 4u;
    let w_on = lid < Q * 4u;
#endif
#else
    let wq = lid / 8u;
    let wd = lid % 8u;
    let w_on = lid < Q * 8u;
#endif
#for i in 0..4
#for u in 0..XT
    var px{u}_{i} = act4(0.0);
    if (x_on{u}) {
        px{u}_{i} = ld_x(m0 + xq{u} * 4u + {i}u, xc{u}, nk4);
    }
#endfor
    var pw{i} = 0u;
    var ps{i} = 0u;
    if (w_on) {
        pw{i} = ld_w(n0 + wq * 4u + {i}u, 0u, wd);
        ps{i} = ld_s(n0 + wq * 4u + {i}u, 0u);
    }
#endfor
#endif
    for (var kt = 0u; kt < nkt; kt++) {
#ifdef MM_PF
#ifdef MM_XS
        if (kt == 0u) {
#endif
#for u in 0..XT
        if (x_on{u}) {
            put_x(xc{u} * 4u * Q + xq{u}, vec4<f32>(px{u}_0), vec4<f32>(px{u}_1), vec4<f32>(px{u}_2), vec4<f32>(px{u}_3));
        }
#endfor
        if (w_on) {
#ifdef W_Q4
#ifdef MM_BW
#for i in 0..4
            let c{i} = deq_half(pw{i}, wh, scale_in(ps{i}, (n0 + wq * 4u + {i}u) * p.kb + kt));
#endfor
            put_w((wd * 8u + wh * 4u) * Q + wq, c0, c1, c2, c3);
#else
#for i in 0..4
            let c{i} = deq(pw{i}, scale_in(ps{i}, (n0 + wq * 4u + {i}u) * p.kb + kt));
#endfor
            let b = wd * 8u * Q + wq;
            put_w(b, c0[0], c1[0], c2[0], c3[0]);
            put_w(b + 4u * Q, c0[1], c1[1], c2[1], c3[1]);
#endif
#else
#for i in 0..4
            let c{i} = byt(pw{i}) * scale_in(ps{i}, ((n0 + wq * 4u + {i}u) * p.kb + kt * 2u) >> 1u);
#endfor
            let b = wd * 4u * Q + wq;
            put_w(b, c0, c1, c2, c3);
#endif
        }
        workgroupBarrier();
#ifdef MM_XS
        }
#endif
#ifndef MM_XS
#ifndef MM_XL
        if (kt + 1u < nkt) {
#for i in 0..4
#for u in 0..XT
            if (x_on{u}) {
                px{u}_{i} = ld_x(m0 + xq{u} * 4u + {i}u, (kt + 1u) * 8u + xc{u}, nk4);
            }
#endfor
            if (w_on) {
                pw{i} = ld_w(n0 + wq * 4u + {i}u, kt + 1u, wd);
                ps{i} = ld_s(n0 + wq * 4u + {i}u, kt + 1u);
            }
#endfor
        }
#endif
#endif
#else
        // X: (row quad, k vec4) tasks, k fastest so a warp reads whole row segments.
        for (var t = lid; t < Q * 8u; t += WGT) {
            let qd = t / 8u;
            let c4 = t % 8u;
            let r = m0 + qd * 4u;
            let gk = kt * 8u + c4;
            let v0 = load_x(r, gk, nk4);
            let v1 = load_x(r + 1u, gk, nk4);
            let v2 = load_x(r + 2u, gk, nk4);
            let v3 = load_x(r + 3u, gk, nk4);
            let b = c4 * 4u * Q + qd;
            put_x(b, v0, v1, v2, v3);
        }
#ifdef W_Q4
        // W: (row quad, code word) tasks; a word holds 8 consecutive k of one row.
        for (var t = lid; t < Q * 4u; t += WGT) {
            let qd = t / 4u;
            let wd = t % 4u;
#for i in 0..4
            let gn{i} = n0 + qd * 4u + {i}u;
            var c{i} = mat2x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0));
            if (gn{i} < p.n) {
                c{i} = deq(w[(gn{i} * p.kb + kt) * 4u + wd], scale(gn{i} * p.kb + kt));
            }
#endfor
            let b = wd * 8u * Q + qd;
            put_w(b, c0[0], c1[0], c2[0], c3[0]);
            put_w(b + 4u * Q, c0[1], c1[1], c2[1], c3[1]);
        }
#endif
#ifdef W_Q8
        // W: (row quad, code word) tasks; a word holds 4 consecutive k of one row, a group 8 words.
        for (var t = lid; t < Q * 8u; t += WGT) {
            let qd = t / 8u;
            let wd = t % 8u;
#for i in 0..4
            let gn{i} = n0 + qd * 4u + {i}u;
            var c{i} = vec4<f32>(0.0);
            if (gn{i} < p.n) {
                let blk = gn{i} * p.kb + kt * 2u;
                c{i} = byt(w[blk * 4u + wd]) * scale(blk >> 1u);
            }
#endfor
            let b = wd * 4u * Q + qd;
            put_w(b, c0, c1, c2, c3);
        }
#endif
#ifdef W_F16
        // W: (row quad, word of 2 halves) tasks; rows are kb·8 halves long (zero padded).
        for (var t = lid; t < Q * 16u; t += WGT) {
            let qd = t / 16u;
            let wd = t % 16u;
            let word = kt * 16u + wd;
#for i in 0..4
            let gn{i} = n0 + qd * 4u + {i}u;
            var c{i} = vec2<f32>(0.0);
            if (gn{i} < p.n && word < p.kb * 4u) {
                c{i} = unpack2x16float(w[gn{i} * p.kb * 4u + word]);
            }
#endfor
            let b = wd * 2u * Q + qd;
            ws[b] = tile4(vec4<f32>(c0.x, c1.x, c2.x, c3.x));
            ws[b + Q] = tile4(vec4<f32>(c0.y, c1.y, c2.y, c3.y));
        }
#endif
        workgroupBarrier();
#endif
#ifdef PACKED
#for i4 in 0..VM
#for j in 0..VN
#for e in 0..4
        var h_{i4}_{j}_{e} = vec4<f16>(0.0);
#endfor
#endfor
#endfor
#endif
#ifdef MM_UR
        // unrolled: each step's workgroup-memory addresses are the loop's base plus a constant
#for kk0 in 0..32
        {
            let kk = {kk0}u;
#else
        for (var kk = 0u; kk < 32u; kk++) {
#endif
#for i4 in 0..VM
            let a{i4} = xs[kk * Q + quad_m({i4}u, ty)];
#endfor
#for j in 0..VN
#ifdef MM_XB
            let b{j} = ws[kk * Q + quad_n({j}u, 0u)];
#else
            let b{j} = ws[kk * Q + quad_n({j}u, tx)];
#endif
#endfor
#for i4 in 0..VM
#for j in 0..VN
#ifdef PACKED
#ifdef MM_MA
            h_{i4}_{j}_0 += vec4<f16>(a{i4}.x) * b{j};
            h_{i4}_{j}_1 += vec4<f16>(a{i4}.y) * b{j};
            h_{i4}_{j}_2 += vec4<f16>(a{i4}.z) * b{j};
            h_{i4}_{j}_3 += vec4<f16>(a{i4}.w) * b{j};
#else
            h_{i4}_{j}_0 = fma(vec4<f16>(a{i4}.x), b{j}, h_{i4}_{j}_0);
            h_{i4}_{j}_1 = fma(vec4<f16>(a{i4}.y), b{j}, h_{i4}_{j}_1);
            h_{i4}_{j}_2 = fma(vec4<f16>(a{i4}.z), b{j}, h_{i4}_{j}_2);
            h_{i4}_{j}_3 = fma(vec4<f16>(a{i4}.w), b{j}, h_{i4}_{j}_3);
#endif
#else
#ifdef MM_MA
            acc_{i4}_{j}_0 += vec4<f32>(a{i4}.x) * b{j};
            acc_{i4}_{j}_1 += vec4<f32>(a{i4}.y) * b{j};
            acc_{i4}_{j}_2 += vec4<f32>(a{i4}.z) * b{j};
            acc_{i4}_{j}_3 += vec4<f32>(a{i4}.w) * b{j};
#else
            acc_{i4}_{j}_0 = fma(vec4<f32>(a{i4}.x), b{j}, acc_{i4}_{j}_0);
            acc_{i4}_{j}_1 = fma(vec4<f32>(a{i4}.y), b{j}, acc_{i4}_{j}_1);
            acc_{i4}_{j}_2 = fma(vec4<f32>(a{i4}.z), b{j}, acc_{i4}_{j}_2);
            acc_{i4}_{j}_3 = fma(vec4<f32>(a{i4}.w), b{j}, acc_{i4}_{j}_3);
#endif
#endif
#endfor
#endfor
        }
#ifdef MM_UR
#endfor
#endif
#ifdef PACKED
#for i4 in 0..VM
#for j in 0..VN
#for e in 0..4
        acc_{i4}_{j}_{e} += vec4<f32>(h_{i4}_{j}_{e});
#endfor
#endfor
#endfor
#endif
        workgroupBarrier();
    }
#for i4 in 0..VM
#for e in 0..4
#for j in 0..VN
    store4(m0 + quad_m({i4}u, ty) * 4u + {e}u, n0 + quad_n({j}u, tx) * 4u, acc_{i4}_{j}_{e});
#endfor
#endfor
#endfor
}
