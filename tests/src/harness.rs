//! Test plumbing: seeded random data, poisoned outputs with a guard region, tolerances, comparisons.

use varco_web::gpu::{Context, DType, Recorder, Tensor};

/// SplitMix64: small, seedable, identical on every target.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn normals(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| (self.normal() * scale) as f32).collect()
    }
}

/// Rounds values to what a tensor of `dtype` stores, so references see the kernel's real inputs.
pub fn as_stored(v: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
        _ => v.to_vec(),
    }
}

pub const GUARD: usize = 64;

/// An output tensor of `shape` whose buffer has GUARD extra elements, all filled with 0xFF bytes (NaN).
pub fn poisoned(ctx: &Context, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let mut t = Tensor::empty(ctx, &[n + GUARD], dtype).expect("allocate output");
    t.shape = shape.to_vec();
    t.fill_bytes(ctx, 0xFF);
    t
}

/// Reads a poisoned output: its values, after checking that the guard region was not written.
pub async fn read_guarded(ctx: &Context, t: &Tensor) -> Vec<f32> {
    let n = t.len();
    let size = t.dtype.size();
    let bytes = ctx.read_bytes(&t.buffer, 0, ((n + GUARD) * size) as u64).await.expect("readback");
    assert!(bytes[n * size..(n + GUARD) * size].iter().all(|&b| b == 0xFF), "a kernel wrote past the end of its output");
    match t.dtype {
        DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(&bytes[..n * 4]),
        DType::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(&bytes[..n * 2]).iter().map(|h| h.to_f32()).collect(),
        DType::U32 => bytemuck::pod_collect_to_vec::<u8, u32>(&bytes[..n * 4]).iter().map(|&u| u as f32).collect(),
    }
}

/// Relative tolerance by activation type (docs: TESTING.md §4).
pub fn tol(dtype: DType, long_rows: bool) -> f64 {
    match (dtype, long_rows) {
        (DType::F16, _) => 1e-2,
        (_, false) => 1e-5,
        (_, true) => 1e-4,
    }
}

/// ‖got − want‖ / ‖want‖.
pub fn rel_error(got: &[f32], want: &[f64]) -> f64 {
    let mut num = 0f64;
    let mut den = 0f64;
    for (g, w) in got.iter().zip(want) {
        num += (*g as f64 - w).powi(2);
        den += w.powi(2);
    }
    (num / den.max(1e-300)).sqrt()
}

/// ‖got − want‖ / ‖want‖ ≤ tol, with every value finite (a poisoned element is NaN and fails).
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        panic!("{what}: element {i} is {} (not written, or overflow)", got[i]);
    }
    let rel = rel_error(got, want);
    assert!(rel <= tol, "{what}: relative error {rel:.3e} > {tol:.0e}");
}

/// Records with `f`, submits, and waits.
pub async fn run(ctx: &Context, f: impl FnOnce(&mut Recorder) -> varco_web::Result<()>) {
    let mut rec = Recorder::new(ctx);
    f(&mut rec).expect("record");
    rec.submit().expect("submit");
    ctx.sync().await.expect("sync");
}
