// SigLIP's 14×14 stride-14 patch embedding, first half: im2col. Each output row is one patch of one tile,
// its columns ordered (channel, ky, kx) like Conv2d's weight, so the convolution is then an ordinary
// matmul with W (1152, 3·14·14) and its bias. Patches row-major over the 27 × 27 grid; the last 6 pixel rows
// and columns of a 384 tile are never read ("valid" padding).
// Reference: tests/src/reference.rs conv2d.
#include "ids.wgsl"

struct Params {
    n_tiles: u32,
    size: u32,      // tile side in pixels (384)
    patch_px: u32,  // 14
    grid: u32,      // patches per side (27)
    channels: u32,  // 3
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pixels: array<f32>;      // (n_tiles, channels, size, size)
@group(0) @binding(2) var<storage, read_write> cols: array<act>;  // (n_tiles·grid², channels·patch²)

@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_wg(wg, nwg) * WG + ids.lid;
    let pp = p.patch_px * p.patch_px;
    let width = p.channels * pp;
    if (e >= p.n_tiles * p.grid * p.grid * width) {
        return;
    }
    let row = e / width;
    let col = e % width;
    let tile = row / (p.grid * p.grid);
    let cell = row % (p.grid * p.grid);
    let py = cell / p.grid;
    let px = cell % p.grid;
    let ch = col / pp;
    let ky = (col % pp) / p.patch_px;
    let kx = col % p.patch_px;
    let yy = py * p.patch_px + ky;
    let xx = px * p.patch_px + kx;
    cols[e] = act(pixels[((tile * p.channels + ch) * p.size + yy) * p.size + xx]);
}
