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

// The format of a prepared block of 32 values (XQ8 reads it): 8 words of 8-bit codes round(127·x/amax), word w
// holding values f, f + 2, f + 4, f + 6 with f = prepared_first(w) — words 0..3 the even values of each 8,
// words 4..7 the odd ones, the order in which a q4 weight word's low and high nibbles come apart (matvec_fused
// quant_x) — then (amax/127, Σ codes, Σ x², 0).
fn prepared_first(w: u32) -> u32 {
    return 8u * (w % 4u) + w / 4u;
}

// Word w from its four values and the block's largest |value|, with its (Σ x², Σ codes).
struct PreparedWord {
    word: u32,
    sums: vec2<f32>,
}

fn prepared_word(e: vec4<f32>, amax: f32) -> PreparedWord {
    let inv = select(0.0, 1.0 / amax, amax > 0.0);
    let word = pack4x8snorm(e * inv);
    return PreparedWord(word, vec2<f32>(dot(e, e), f32(dot4I8Packed(word, 0x01010101u))));
}

// The block's (scale, Σ codes, Σ x², 0) from its largest |value| and its words' summed (Σ x², Σ codes).
fn prepared_scales(amax: f32, sums: vec2<f32>) -> vec4<f32> {
    return vec4<f32>(amax / 127.0, sums.y, sums.x, 0.0);
}
