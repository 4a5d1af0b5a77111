// y = x · Wᵀ (+ bias) for a few rows of x (decode: one). W is (n, k) in 4 bits (W_Q4), 8 bits (W_Q8)
// or f16 (W_F16); W_Q is set for both quantized formats.
// One workgroup computes R outputs of one x row; its WG invocations stride over the row's 16-byte blocks
// (a block is one q4 group of 32 values, half a q8 group, or 8 f16 values), so consecutive invocations read consecutive
// blocks and loads coalesce; each x block is loaded once and used for all R rows. Accumulation in f32.
// MULTI: R outputs of MX rows of x (a short prompt: tens of tokens): each weight block is loaded and
// dequantized once and used for all MX rows, so the weights are read ceil(m / MX) times, not m times.
// Reference: quant::QMatrix::dequantize (or the f16 values), then a plain f64 dot product (tests/src/reference.rs).
#include "ids.wgsl"
#include "reduce.wgsl"
#include "linear_io.wgsl"
#include "dequant.wgsl"

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act4>;          // (m, k/4)
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;     // (n, kb)
#ifdef W_Q
@group(0) @binding(3) var<storage, read> scales: array<u32>;     // (n·kb) f16, two per word
#endif
#ifdef BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;       // (y_stride)
#endif
@group(0) @binding(5) var<storage, read_write> y: array<act>;    // (m, y_stride)

fn xv(i: u32, base: u32, k4: u32) -> vec4<f32> {
    if (i < k4) {
        return vec4<f32>(x[base + i]);
    }
    return vec4<f32>(0.0);
}

#ifdef MULTI
@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row0 = flat_wg(wg, nwg) * R;
    let m0 = wg.y * MX;
    let k4 = p.k / 4u;
    // rows past the end read row 0 (W) or the last row (x), in bounds, and are never written
#for r in 0..R
    let n{r} = select(0u, row0 + {r}u, row0 + {r}u < p.n);
#endfor
#for j in 0..MX
    let xb{j} = min(m0 + {j}u, p.m - 1u) * p.x_stride4;
#endfor
#for r in 0..R
#for j in 0..MX
    var acc{r}_{j} = 0.0;
#endfor
#endfor
    for (var c = ids.lid; c < p.kb; c += WG) {
#for r in 0..R
        let w{r} = w[n{r} * p.kb + c];
#ifdef W_Q4
        let d{r} = scale(n{r} * p.kb + c);
        let q{r}_0 = nib(w{r}.x, 0u);
        let q{r}_1 = nib(w{r}.x, 16u);
        let q{r}_2 = nib(w{r}.y, 0u);
        let q{r}_3 = nib(w{r}.y, 16u);
        let q{r}_4 = nib(w{r}.z, 0u);
        let q{r}_5 = nib(w{r}.z, 16u);
        let q{r}_6 = nib(w{r}.w, 0u);
        let q{r}_7 = nib(w{r}.w, 16u);
#endif
#ifdef W_Q8
        let d{r} = scale((n{r} * p.kb + c) >> 1u);
        let q{r}_0 = byt(w{r}.x);
        let q{r}_1 = byt(w{r}.y);
        let q{r}_2 = byt(w{r}.z);
        let q{r}_3 = byt(w{r}.w);
#endif
#ifdef W_F16
        let q{r}_0 = h8(w{r}.xy);
        let q{r}_1 = h8(w{r}.zw);
#endif
#endfor
#for j in 0..MX
        {
#ifdef W_Q4
            let i0 = c * 8u;
            let x0 = xv(i0, xb{j}, k4);
            let x1 = xv(i0 + 1u, xb{j}, k4);
            let x2 = xv(i0 + 2u, xb{j}, k4);
            let x3 = xv(i0 + 3u, xb{j}, k4);
            let x4 = xv(i0 + 4u, xb{j}, k4);
            let x5 = xv(i0 + 5u, xb{j}, k4);
            let x6 = xv(i0 + 6u, xb{j}, k4);
            let x7 = xv(i0 + 7u, xb{j}, k4);
#for r in 0..R
            acc{r}_{j} += d{r} * (dot(x0, q{r}_0) + dot(x1, q{r}_1) + dot(x2, q{r}_2) + dot(x3, q{r}_3)
                + dot(x4, q{r}_4) + dot(x5, q{r}_5) + dot(x6, q{r}_6) + dot(x7, q{r}_7));
#endfor
#endif
#ifdef W_Q8
            let i0 = c * 4u;
            let x0 = xv(i0, xb{j}, k4);
            let x1 = xv(i0 + 1u, xb{j}, k4);
            let x2 = xv(i0 + 2u, xb{j}, k4);
            let x3 = xv(i0 + 3u, xb{j}, k4);
#for r in 0..R
            acc{r}_{j} += d{r} * (dot(x0, q{r}_0) + dot(x1, q{r}_1) + dot(x2, q{r}_2) + dot(x3, q{r}_3));
#endfor
#endif
#ifdef W_F16
            let x0 = xv(c * 2u, xb{j}, k4);
            let x1 = xv(c * 2u + 1u, xb{j}, k4);
#for r in 0..R
            acc{r}_{j} += dot(x0, q{r}_0) + dot(x1, q{r}_1);
#endfor
#endif
        }
#endfor
    }
#for r in 0..R
#for j in 0..MX
    {
        let t = wg_sum(acc{r}_{j}, ids);
        if (ids.lid == 0u && row0 + {r}u < p.n && m0 + {j}u < p.m) {
            var v = t;
#ifdef BIAS
            v += bias[p.y_offset + row0 + {r}u];
#endif
            y[(m0 + {j}u) * p.y_stride + p.y_offset + row0 + {r}u] = act(v);
        }
    }
#endfor
#endfor
}
#else
@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row0 = flat_wg(wg, nwg) * R;
    let m = wg.y;
    let k4 = p.k / 4u;
    let xb = m * p.x_stride4;
    // Rows past the end read row 0 (in bounds) and are never written.
#for r in 0..R
    let n{r} = select(0u, row0 + {r}u, row0 + {r}u < p.n);
    var acc{r} = 0.0;
#endfor
    // Two blocks per invocation per step, all weight loads issued before any arithmetic, so each
    // invocation keeps 2·R 16-byte loads in flight (decode is bound by memory latency as much as bandwidth).
    for (var c = ids.lid; c < p.kb; c += 2u * WG) {
        let c2 = min(c + WG, p.kb - 1u);
        let two = c + WG < p.kb;
#for r in 0..R
        let wa{r} = w[n{r} * p.kb + c];
        let wb{r} = w[n{r} * p.kb + c2];
#ifdef W_Q4
        let da{r} = scale(n{r} * p.kb + c);
        let db{r} = select(0.0, scale(n{r} * p.kb + c2), two);
#endif
#ifdef W_Q8
        let da{r} = scale((n{r} * p.kb + c) >> 1u);
        let db{r} = select(0.0, scale((n{r} * p.kb + c2) >> 1u), two);
#endif
#endfor
#ifdef W_Q4
        let i0 = c * 8u;
        let i1 = select(k4, c2 * 8u, two); // past the end: x reads as zero
        let x0 = xv(i0, xb, k4);
        let x1 = xv(i0 + 1u, xb, k4);
        let x2 = xv(i0 + 2u, xb, k4);
        let x3 = xv(i0 + 3u, xb, k4);
        let x4 = xv(i0 + 4u, xb, k4);
        let x5 = xv(i0 + 5u, xb, k4);
        let x6 = xv(i0 + 6u, xb, k4);
        let x7 = xv(i0 + 7u, xb, k4);
        let y0 = xv(i1, xb, k4);
        let y1 = xv(i1 + 1u, xb, k4);
        let y2 = xv(i1 + 2u, xb, k4);
        let y3 = xv(i1 + 3u, xb, k4);
        let y4 = xv(i1 + 4u, xb, k4);
        let y5 = xv(i1 + 5u, xb, k4);
        let y6 = xv(i1 + 6u, xb, k4);
        let y7 = xv(i1 + 7u, xb, k4);
#for r in 0..R
        acc{r} += da{r} * (dot(x0, nib(wa{r}.x, 0u)) + dot(x1, nib(wa{r}.x, 16u)) + dot(x2, nib(wa{r}.y, 0u)) + dot(x3, nib(wa{r}.y, 16u))
                   + dot(x4, nib(wa{r}.z, 0u)) + dot(x5, nib(wa{r}.z, 16u)) + dot(x6, nib(wa{r}.w, 0u)) + dot(x7, nib(wa{r}.w, 16u)))
                + db{r} * (dot(y0, nib(wb{r}.x, 0u)) + dot(y1, nib(wb{r}.x, 16u)) + dot(y2, nib(wb{r}.y, 0u)) + dot(y3, nib(wb{r}.y, 16u))
                   + dot(y4, nib(wb{r}.z, 0u)) + dot(y5, nib(wb{r}.z, 16u)) + dot(y6, nib(wb{r}.w, 0u)) + dot(y7, nib(wb{r}.w, 16u)));
#endfor
#endif
#ifdef W_Q8
        let i0 = c * 4u;
        let i1 = select(k4, c2 * 4u, two);
        let x0 = xv(i0, xb, k4);
        let x1 = xv(i0 + 1u, xb, k4);
        let x2 = xv(i0 + 2u, xb, k4);
        let x3 = xv(i0 + 3u, xb, k4);
        let y0 = xv(i1, xb, k4);
        let y1 = xv(i1 + 1u, xb, k4);
        let y2 = xv(i1 + 2u, xb, k4);
        let y3 = xv(i1 + 3u, xb, k4);
#for r in 0..R
        acc{r} += da{r} * (dot(x0, byt(wa{r}.x)) + dot(x1, byt(wa{r}.y)) + dot(x2, byt(wa{r}.z)) + dot(x3, byt(wa{r}.w)))
                + db{r} * (dot(y0, byt(wb{r}.x)) + dot(y1, byt(wb{r}.y)) + dot(y2, byt(wb{r}.z)) + dot(y3, byt(wb{r}.w)));
#endfor
#endif
#ifdef W_F16
        let i1 = select(k4, c2 * 2u, two);
        let x0 = xv(c * 2u, xb, k4);
        let x1 = xv(c * 2u + 1u, xb, k4);
        let y0 = xv(i1, xb, k4);
        let y1 = xv(i1 + 1u, xb, k4);
#for r in 0..R
        acc{r} += dot(x0, h8(wa{r}.xy)) + dot(x1, h8(wa{r}.zw)) + dot(y0, h8(wb{r}.xy)) + dot(y1, h8(wb{r}.zw));
#endfor
#endif
    }
#for r in 0..R
    {
        let t = wg_sum(acc{r}, ids);
        if (ids.lid == 0u && row0 + {r}u < p.n) {
            var v = t;
#ifdef BIAS
            v += bias[p.y_offset + row0 + {r}u];
#endif
            y[m * p.y_stride + p.y_offset + row0 + {r}u] = act(v);
        }
    }
#endfor
}
#endif
