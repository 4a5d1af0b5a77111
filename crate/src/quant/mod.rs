//! The quantized weight formats (4-bit "q4", 8-bit "q8"), and their CPU quantizer and dequantizer (also the
//! tests' reference). q8 is q4 with 8-bit codes: the same groups and scales, code of zero 128, two 16-byte
//! loads a group.
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

/// The two quantized formats: 4-bit codes (LLM linears) and 8-bit codes (embed_tokens / lm_head / vision
/// tower, by the converter's choice). Both: groups of [`GROUP`] values, one f16 scale a group, symmetric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QFormat {
    Q4,
    Q8,
}

impl QFormat {
    pub fn bits(self) -> usize {
        match self {
            QFormat::Q4 => 4,
            QFormat::Q8 => 8,
        }
    }

    /// u32 words of codes per group (4 or 8: one or two 16-byte loads).
    pub fn words_per_group(self) -> usize {
        GROUP * self.bits() / 32
    }

    /// The code of zero (8 or 128): codes are offset binary, `value = (code − zero) · d`.
    pub fn zero(self) -> i32 {
        1 << (self.bits() - 1)
    }
}

/// A quantized `(n, k)` matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct QMatrix {
    pub format: QFormat,
    pub n: usize,
    pub k: usize,
    pub qs: Vec<u32>,
    pub scales: Vec<f16>,
}

/// Quantizes `rows` rows of `k` values, appending their codes and scales (scales unpadded: whole matrices
/// pad them to an even count once, at the end).
pub fn quantize_rows(format: QFormat, w: &[f32], rows: usize, k: usize, qs: &mut Vec<u32>, scales: &mut Vec<f16>) {
    assert_eq!(w.len(), rows * k, "quantize: {} values for {rows} rows of {k}", w.len());
    let groups = k.div_ceil(GROUP);
    let wpg = format.words_per_group();
    let per_word = 32 / format.bits();
    let mut vals = [0f32; GROUP];
    qs.reserve(rows * groups * wpg);
    scales.reserve(rows * groups);
    for r in 0..rows {
        for g in 0..groups {
            let k0 = g * GROUP;
            let len = GROUP.min(k - k0);
            vals.fill(0.0);
            vals[..len].copy_from_slice(&w[r * k + k0..r * k + k0 + len]);
            let (d, codes) = quantize_group(format, &vals);
            scales.push(d);
            let base = qs.len();
            qs.resize(base + wpg, 0);
            for (j, &c) in codes.iter().enumerate() {
                qs[base + j / per_word] |= c << (format.bits() * (j % per_word));
            }
        }
    }
}

impl QMatrix {
    /// Groups per row.
    pub fn groups(&self) -> usize {
        self.k.div_ceil(GROUP)
    }

    /// Quantizes row-major `(n, k)` values.
    pub fn quantize(format: QFormat, w: &[f32], n: usize, k: usize) -> Self {
        let (mut qs, mut scales) = (Vec::new(), Vec::new());
        quantize_rows(format, w, n, k, &mut qs, &mut scales);
        scales.resize(scales.len().next_multiple_of(2), f16::ZERO);
        QMatrix { format, n, k, qs, scales }
    }

    /// The value at row `r`, column `c`.
    pub fn get(&self, r: usize, c: usize) -> f32 {
        let (g, j) = (c / GROUP, c % GROUP);
        let idx = r * self.groups() + g;
        let bits = self.format.bits();
        let per_word = 32 / bits;
        let code = (self.qs[idx * self.format.words_per_group() + j / per_word] >> (bits * (j % per_word))) & ((1 << bits) - 1);
        (code as i32 - self.format.zero()) as f32 * self.scales[idx].to_f32()
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

    /// Bytes of the packed form (codes and scales).
    pub fn bytes(&self) -> usize {
        self.qs.len() * 4 + self.scales.len() * 2
    }
}

/// Scale and codes (0 ..= 2^bits − 1) of one group: the value of largest magnitude maps to code 0.
fn quantize_group(format: QFormat, vals: &[f32; GROUP]) -> (f16, [u32; GROUP]) {
    let mut max = 0f32;
    for &v in vals {
        if v.abs() > max.abs() {
            max = v;
        }
    }
    let zero = format.zero() as f32;
    let d = f16::from_f32(max / -zero);
    let df = d.to_f32();
    let inv = if df != 0.0 { 1.0 / df } else { 0.0 };
    let mut codes = [format.zero() as u32; GROUP];
    for (c, &v) in codes.iter_mut().zip(vals) {
        *c = ((v * inv).round().clamp(-zero, zero - 1.0) + zero) as u32;
    }
    (d, codes)
}

/// Relative RMS error `‖w − deq(q(w))‖ / ‖w‖` of `w` quantized as `(n, k)` in `format` (the converter's
/// `--report`).
pub fn relative_error(format: QFormat, w: &[f32], n: usize, k: usize) -> f64 {
    let q = QMatrix::quantize(format, w, n, k);
    let (mut num, mut den) = (0f64, 0f64);
    for r in 0..n {
        for c in 0..k {
            let v = w[r * k + c] as f64;
            num += (v - q.get(r, c) as f64).powi(2);
            den += v * v;
        }
    }
    if den == 0.0 {
        0.0
    } else {
        (num / den).sqrt()
    }
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
