// The parameters shared by matvec.wgsl and matmul.wgsl (kernels/linear.rs fills one struct for both).
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
