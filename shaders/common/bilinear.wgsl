// PyTorch's source coordinate for bilinear, align_corners=False, no antialiasing:
// src = max(0, (dst + 0.5)·(in/out) − 0.5) → (i0, i1 = min(i0 + 1, in − 1), λ) as floats.
fn bilinear_src(dst: u32, n_in: u32, n_out: u32) -> vec3<f32> {
    let s = max((f32(dst) + 0.5) * (f32(n_in) / f32(n_out)) - 0.5, 0.0);
    let i0 = min(u32(floor(s)), n_in - 1u);
    return vec3<f32>(f32(i0), f32(min(i0 + 1u, n_in - 1u)), s - f32(i0));
}
