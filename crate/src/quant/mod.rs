//! The 4-bit weight format ("q4"), and its CPU quantizer and dequantizer (also the tests' reference).
//!
//! A weight `(n, k)` (PyTorch `Linear` layout: `n` outputs, `k` inputs) is cut along `k` into groups of
//! [`GROUP`] = 32 values; the last group of a row is zero-padded. Each group stores
//! - one f16 scale `d`, chosen so that the value of largest magnitude maps to −8 (as llama.cpp's Q4_0), and
//! - 32 codes `q = clamp(round(w / d), −8, 7) + 8` in 4 bits, the value being `(q − 8)·d`.
//!
//! Memory layout (why: every load a GPU thread makes is one aligned 16-byte `vec4<u32>` holding a whole
//! group, consecutive threads read consecutive groups of a row, so loads coalesce; scales live in a separate
//! dense array, so the nibble array needs no padding between groups):
//! - `qs`: `u32[n · groups · 4]`; group `g` of row `r` is the four words at `(r · groups + g) · 4`; value
//!   `j` of the group is nibble `j % 8` (bits `4·(j%8)..`) of word `j / 8`.
//! - `scales`: `f16[n · groups]` (row-major), viewed by the GPU as `u32` pairs; padded to an even count.
//!
//! Cost: 4.5 bits a weight. The measured error and the alternatives are in `docs/FORMAT.md`.

use half::f16;

/// Values per quantization group.
pub const GROUP: usize = 32;

/// A quantized `(n, k)` matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Q4Matrix {
    pub n: usize,
    pub k: usize,
    pub qs: Vec<u32>,
    pub scales: Vec<f16>,
}

impl Q4Matrix {
    /// Groups per row.
    pub fn groups(&self) -> usize {
        self.k.div_ceil(GROUP)
    }

    /// Quantizes row-major `(n, k)` values.
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "quantize: {} values for a {n}x{k} matrix", w.len());
        let groups = k.div_ceil(GROUP);
        let mut qs = vec![0u32; n * groups * 4];
        let mut scales = vec![f16::ZERO; (n * groups).next_multiple_of(2)];
        let mut vals = [0f32; GROUP];
        for r in 0..n {
            for g in 0..groups {
                let k0 = g * GROUP;
                let len = GROUP.min(k - k0);
                vals.fill(0.0);
                vals[..len].copy_from_slice(&w[r * k + k0..r * k + k0 + len]);
                let (d, codes) = quantize_group(&vals);
                scales[r * groups + g] = d;
                let base = (r * groups + g) * 4;
                for (j, &c) in codes.iter().enumerate() {
                    qs[base + j / 8] |= (c as u32) << (4 * (j % 8));
                }
            }
        }
        Q4Matrix { n, k, qs, scales }
    }

    /// The value at row `r`, column `c`.
    pub fn get(&self, r: usize, c: usize) -> f32 {
        let g = c / GROUP;
        let j = c % GROUP;
        let idx = r * self.groups() + g;
        let code = (self.qs[idx * 4 + j / 8] >> (4 * (j % 8))) & 15;
        (code as f32 - 8.0) * self.scales[idx].to_f32()
    }

    /// All values, row-major `(n, k)`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.n * self.k);
        for r in 0..self.n {
            for c in 0..self.k {
                out.push(self.get(r, c));
            }
        }
        out
    }

    /// Bytes of the packed form (nibbles and scales).
    pub fn bytes(&self) -> usize {
        self.qs.len() * 4 + self.scales.len() * 2
    }
}

/// Scale and codes (0..=15) of one group.
fn quantize_group(vals: &[f32; GROUP]) -> (f16, [u8; GROUP]) {
    let mut max = 0f32;
    for &v in vals {
        if v.abs() > max.abs() {
            max = v;
        }
    }
    let d = f16::from_f32(max / -8.0);
    let df = d.to_f32();
    let inv = if df != 0.0 { 1.0 / df } else { 0.0 };
    let mut codes = [8u8; GROUP];
    for (c, &v) in codes.iter_mut().zip(vals) {
        *c = ((v * inv).round().clamp(-8.0, 7.0) + 8.0) as u8;
    }
    (d, codes)
}

/// Relative RMS error ‖w − deq(q(w))‖ / ‖w‖ of a few candidate 4-bit formats on the same values, for the
/// format decision (printed by `varco bench kernels`): (name, bits per weight, error).
pub fn compare_formats(w: &[f32]) -> Vec<(&'static str, f64, f64)> {
    let norm: f64 = w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let mut out = Vec::new();
    for &(name, group, asym) in &[
        ("sym g32 f16 scale (chosen)", 32usize, false),
        ("sym g64 f16 scale", 64, false),
        ("sym g128 f16 scale", 128, false),
        ("asym g64 f16 scale+min", 64, true),
        ("asym g128 f16 scale+min", 128, true),
    ] {
        let mut err = 0f64;
        for chunk in w.chunks(group) {
            if asym {
                let lo = chunk.iter().cloned().fold(f32::INFINITY, f32::min);
                let hi = chunk.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let d = f16::from_f32((hi - lo) / 15.0).to_f32();
                let m = f16::from_f32(lo).to_f32();
                for &v in chunk {
                    let q = if d > 0.0 { ((v - m) / d).round().clamp(0.0, 15.0) } else { 0.0 };
                    err += ((q * d + m - v) as f64).powi(2);
                }
            } else {
                let mut max = 0f32;
                for &v in chunk {
                    if v.abs() > max.abs() {
                        max = v;
                    }
                }
                let d = f16::from_f32(max / -8.0).to_f32();
                for &v in chunk {
                    let q = if d != 0.0 { (v / d).round().clamp(-8.0, 7.0) } else { 0.0 };
                    err += ((q * d - v) as f64).powi(2);
                }
            }
        }
        let bits = 4.0 + if asym { 32.0 } else { 16.0 } / group as f64;
        out.push((name, bits, err.sqrt() / norm));
    }
    out
}
