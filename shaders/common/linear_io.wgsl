// The parameters shared by matvec.wgsl and matmul.wgsl (kernels/linear.rs fills one struct for both),
// and the q4 scale lookup.
struct Params {
    m: u32,         // rows of x (matmul; matvec takes its row from the workgroup id)
    n: u32,         // rows of W in this part
    k: u32,         // inputs (a multiple of 4)
    kb: u32,        // 16-byte blocks per row of W
    y_offset: u32,  // output column of this part's row 0
    y_stride: u32,  // elements per row of y
    x_stride4: u32, // vec4s per row of x
    _p0: u32,
}

#ifdef W_Q4
// Scale i of the (n·kb) f16 scales, stored two per u32 word.
fn scale(i: u32) -> f32 {
    let s = unpack2x16float(scales[i >> 1u]);
    return select(s.x, s.y, (i & 1u) == 1u);
}
#endif
