// Bilinear resize of a feature map (h, w, c) → (oh, ow, c), PyTorch's `interpolate(mode="bilinear",
// align_corners=False)` without antialiasing: src = (dst + 0.5)·(in/out) − 0.5, clamped below at 0.
// Used to shrink the unpadded anyres feature grid (LLaVA-NeXT anyres_max_9). One invocation per element.
// Reference: tests/src/reference.rs bilinear.
#include "ids.wgsl"
#include "bilinear.wgsl"

struct Params {
    in_h: u32,
    in_w: u32,
    out_h: u32,
    out_w: u32,
    c: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;        // (in_h, in_w, c)
@group(0) @binding(2) var<storage, read_write> y: array<act>;  // (out_h, out_w, c)


@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_wg(wg, nwg) * WG + ids.lid;
    if (e >= p.out_h * p.out_w * p.c) {
        return;
    }
    let ch = e % p.c;
    let ox = (e / p.c) % p.out_w;
    let oy = e / (p.c * p.out_w);
    let sy = bilinear_src(oy, p.in_h, p.out_h);
    let sx = bilinear_src(ox, p.in_w, p.out_w);
    let y0 = u32(sy.x);
    let y1 = u32(sy.y);
    let x0 = u32(sx.x);
    let x1 = u32(sx.y);
    let v00 = f32(x[(y0 * p.in_w + x0) * p.c + ch]);
    let v01 = f32(x[(y0 * p.in_w + x1) * p.c + ch]);
    let v10 = f32(x[(y1 * p.in_w + x0) * p.c + ch]);
    let v11 = f32(x[(y1 * p.in_w + x1) * p.c + ch]);
    let top = v00 * (1.0 - sx.z) + v01 * sx.z;
    let bot = v10 * (1.0 - sx.z) + v11 * sx.z;
    y[e] = act(top * (1.0 - sy.z) + bot * sy.z);
}
