// x prepared once (matvec_fused.wgsl and attention_decode.wgsl XP_OUT): a value as the activation store keeps
// it, for packing a block exactly as DOT4's reader would from memory. f16 rounds to nearest even by arithmetic
// (11 significant bits, or multiples of 2^-24 below f16's normal range): NVIDIA's compiler took both
// `f32(f16(v))` and `unpack2x16float(pack2x16float(v))` for v itself (the H100, twenty-first session: a
// block's scale 2e-4 off the stored values'). Store `act(stored(v))`, which is then exact.
fn stored(v: f32) -> f32 {
#ifdef ACT_F16
    let e = max(frexp(v).exp - 11, -24);
    return ldexp(round(ldexp(v, -e)), e);
#else
    return v;
#endif
}
