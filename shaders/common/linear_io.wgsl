// The parameters shared by matvec.wgsl and matmul.wgsl (kernels/linear.rs fills one struct for both),
// and the scale lookup of the quantized formats.
struct Params {
    m: u32,         // rows of x (matmul; matvec takes its row from the workgroup id)
    n: u32,         // rows of W in this part
    k: u32,         // inputs (a multiple of 4)
    kb: u32,        // 16-byte blocks per row of W (q4: one a group; q8: two; f16: 8 values)
    y_offset: u32,  // output column of this part's row 0
    y_stride: u32,  // elements per row of y
    x_stride4: u32, // vec4s per row of x
    _p0: u32,
}

#ifdef W_Q
// Scale i of the (n · groups) f16 scales, stored two per u32 word.
fn scale(i: u32) -> f32 {
    let s = unpack2x16float(scales[i >> 1u]);
    return select(s.x, s.y, (i & 1u) == 1u);
}
#endif

#ifdef W_Q8
// The 4 codes of a q8 word minus the zero point 128, as floats: 2^23 + q − (2^23 + 128), exact and without
// int→float conversions (see matvec.wgsl's nib).
fn byt(word: u32) -> vec4<f32> {
    let bits = ((vec4<u32>(word) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u)) | vec4<u32>(0x4B000000u);
    return bitcast<vec4<f32>>(bits) - vec4<f32>(8388736.0);
}
#endif
