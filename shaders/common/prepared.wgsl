// x prepared once (matvec_fused.wgsl and attention_decode.wgsl XP_OUT): a value as the activation store keeps
// it, for packing a block exactly as DOT4's reader would from memory. f16 goes through its bits: given
// `f32(f16(v))`, NVIDIA's compiler kept the unrounded f32 (the H100, twenty-first session: a block's scale
// 2e-4 off the stored values'), and pack2x16float cannot be skipped so. Store `act(stored(v))`, which is exact.
fn stored(v: f32) -> f32 {
#ifdef ACT_F16
    return unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
#else
    return v;
#endif
}
