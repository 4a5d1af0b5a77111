// Dequantizing the weight formats (docs/FORMAT.md): scales of q4/q8 (the including shader binds `scales`
// under W_Q), 4-bit and 8-bit codes and packed f16 values as f32 vec4s.
#ifdef W_Q
// Scale i of the (n · groups) f16 scales, stored two per u32 word.
fn scale(i: u32) -> f32 {
    return scale_in(scales[i >> 1u], i);
}
// Scale i from the word that holds it, scales[i >> 1] (loaded ahead, as matmul.wgsl's MM_PF does).
fn scale_in(word: u32, i: u32) -> f32 {
    let s = unpack2x16float(word);
    return select(s.x, s.y, (i & 1u) == 1u);
}
#endif

#ifdef W_Q8
// The 4 codes of a q8 word minus the zero point 128, as floats: 2^23 + q − (2^23 + 128), exact and without
// int→float conversions (as nib below).
fn byt(word: u32) -> vec4<f32> {
    let bits = ((vec4<u32>(word) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u)) | vec4<u32>(0x4B000000u);
    return bitcast<vec4<f32>>(bits) - vec4<f32>(8388736.0);
}
#endif

// Codes j..j+3 of a word (shift sh = 0 or 16), minus the zero point 8.
// Exact and without int→float conversions (quarter rate on many GPUs): a code q placed in the low mantissa
// bits of 2^23 is the float 2^23 + q, so subtracting 2^23 + 8 leaves q − 8.
fn nib(word: u32, sh: u32) -> vec4<f32> {
    let bits = ((vec4<u32>(word) >> vec4<u32>(sh, sh + 4u, sh + 8u, sh + 12u)) & vec4<u32>(15u)) | vec4<u32>(0x4B000000u);
    return bitcast<vec4<f32>>(bits) - vec4<f32>(8388616.0);
}

// Four f16 values (two words) as an f32 vec4.
fn h8(v: vec2<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y));
}
