// Embedding gather: out[t, :] = W[ids[t], :], W (vocab, k) in 4 bits (W_Q4), 8 bits (W_Q8) or f16 (W_F16),
// dequantized on
// the fly. A weight split over several buffers is gathered one part at a time: this part holds rows
// row_begin..row_end and writes only the tokens that fall there. One invocation per output element.
// Reference: quant::QMatrix::get (or the f16 values).
#include "ids.wgsl"

struct Params {
    n_tokens: u32,
    k: u32,
    kb: u32,         // 16-byte blocks per row
    row_begin: u32,
    row_end: u32,
    out_stride: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;   // (n_tokens)
@group(0) @binding(2) var<storage, read> w: array<u32>;        // (rows, kb·4)
#ifdef W_Q
@group(0) @binding(3) var<storage, read> scales: array<u32>;   // (rows·kb) f16, two per word
#endif
@group(0) @binding(5) var<storage, read_write> out: array<act>; // (n_tokens, out_stride)

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = wg.x * WG + ids.lid;
    let t = wg.y + wg.z * 65535u;
    if (c >= p.k || t >= p.n_tokens) {
        return;
    }
    let id = tokens[t];
    if (id < p.row_begin || id >= p.row_end) {
        return;
    }
    let r = id - p.row_begin;
#ifdef W_Q4
    let blk = r * p.kb + c / 32u;
    let j = c % 32u;
    let code = (w[blk * 4u + j / 8u] >> (4u * (j % 8u))) & 15u;
    let sp = unpack2x16float(scales[blk >> 1u]);
    let d = select(sp.x, sp.y, (blk & 1u) == 1u);
    out[t * p.out_stride + c] = act((f32(code) - 8.0) * d);
#endif
#ifdef W_Q8
    let g = r * (p.kb / 2u) + c / 32u;
    let j = c % 32u;
    let code = (w[g * 8u + j / 4u] >> (8u * (j % 4u))) & 255u;
    let sp = unpack2x16float(scales[g >> 1u]);
    let d = select(sp.x, sp.y, (g & 1u) == 1u);
    out[t * p.out_stride + c] = act((f32(code) - 128.0) * d);
#endif
#ifdef W_F16
    let idx = r * p.kb * 8u + c;
    let hv = unpack2x16float(w[idx >> 1u]);
    out[t * p.out_stride + c] = act(select(hv.x, hv.y, (idx & 1u) == 1u));
#endif
}
