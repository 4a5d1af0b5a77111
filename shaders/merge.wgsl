// LLaVA-NeXT's anyres merge (spatial_unpad + anyres_max_N), from projected tile features to the image's
// embedding sequence, in one gather:
//   rows 0 .. cells²          : the base tile's features, as they are;
//   then for each grid row r  : cols values bilinearly sampled (align_corners=False) from the unpadded grid
//                               (rows_u × cols_u, the tiles' cells laid side by side, padding cropped), then
//                               the learned image_newline.
// Without a shrink (rows = rows_u, cols = cols_u) the sampling lands exactly on cells. One invocation per
// output element. Reference: LLaVA-NeXT's llava_arch.py; checked against the fixtures' image_features
// (tests/tests/model.rs).
#include "ids.wgsl"
#include "bilinear.wgsl"

struct Params {
    cells: u32,    // feature cells per tile side (27)
    grid_w: u32,   // tiles across
    rows_u: u32,   // unpadded grid
    cols_u: u32,
    pad_r: u32,    // rows and columns cropped at the top and left
    pad_c: u32,
    rows: u32,     // output grid
    cols: u32,
    c: u32,        // channels
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> feats: array<act>;      // (1 + tiles, cells², c), base first
@group(0) @binding(2) var<storage, read> newline: array<f32>;    // (c)
@group(0) @binding(3) var<storage, read_write> out: array<act>;  // (cells² + rows·(cols + 1), c)

// Feature of unpadded-grid cell (r, col).
fn cell(r: u32, col: u32, ch: u32) -> f32 {
    let gr = r + p.pad_r;
    let gc = col + p.pad_c;
    let tile = 1u + (gr / p.cells) * p.grid_w + gc / p.cells;
    let idx = (gr % p.cells) * p.cells + gc % p.cells;
    return f32(feats[(tile * p.cells * p.cells + idx) * p.c + ch]);
}


@compute @workgroup_size(WG)
fn main(ids: Ids, @builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat_wg(wg, nwg) * WG + ids.lid;
    let base = p.cells * p.cells;
    let total = (base + p.rows * (p.cols + 1u)) * p.c;
    if (e >= total) {
        return;
    }
    let ch = e % p.c;
    let tok = e / p.c;
    if (tok < base) {
        out[e] = feats[e];
        return;
    }
    let g = tok - base;
    let r = g / (p.cols + 1u);
    let col = g % (p.cols + 1u);
    if (col == p.cols) {
        out[e] = act(newline[ch]);
        return;
    }
    let sy = bilinear_src(r, p.rows_u, p.rows);
    let sx = bilinear_src(col, p.cols_u, p.cols);
    let y0 = u32(sy.x);
    let y1 = u32(sy.y);
    let x0 = u32(sx.x);
    let x1 = u32(sx.y);
    let top = cell(y0, x0, ch) * (1.0 - sx.z) + cell(y0, x1, ch) * sx.z;
    let bot = cell(y1, x0, ch) * (1.0 - sx.z) + cell(y1, x1, ch) * sx.z;
    out[e] = act(top * (1.0 - sy.z) + bot * sy.z);
}
