// cos and sin of a rotary angle, accurate to about an ulp (WGSL's builtins are not; positions reach 32k, so
// angles reach 32k radians): rope.wgsl and the fused qkv kernel (matvec_fused.wgsl) share it.
// π/2 = P1 + P2 + P3, P1 and P2 of at most 9 significant bits, so k·P1 and k·P2 are exact for |k| < 2^15
// (angles up to 32k radians at positions up to 32k).
const P1: f32 = 1.5703125;
const P2: f32 = 0.00048351287841796875;
const P3: f32 = 3.1391647326017846e-07;

// sin and cos of a reduced |r| ≤ π/4 (Cephes sinf/cosf polynomials, ~1 ulp); WGSL's own sin/cos are only
// required to be accurate to 2^-11 (SwiftShader is close to that), too coarse for 1e-5.
fn sin_poly(r: f32) -> f32 {
    let z = r * r;
    return ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
}
fn cos_poly(r: f32) -> f32 {
    let z = r * r;
    return ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
}

// (cos, sin) of an f32 angle: quadrant k = round(angle / (π/2)), remainder by Cody–Waite.
fn cos_sin(angle: f32) -> vec2<f32> {
    let k = round(angle * 0.6366197723675814);
    let r = ((angle - k * P1) - k * P2) - k * P3;
    let s = sin_poly(r);
    let c = cos_poly(r);
    let q = u32(i32(k) & 3);
    if (q == 0u) { return vec2<f32>(c, s); }
    if (q == 1u) { return vec2<f32>(-s, c); }
    if (q == 2u) { return vec2<f32>(-c, -s); }
    return vec2<f32>(s, -c);
}
