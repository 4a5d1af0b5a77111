//! Slow, obviously-correct CPU references in f64. Each follows the PyTorch / transformers definition that
//! the kernel reproduces; inputs are the exact values the kernel sees (dequantized weights, f16-rounded
//! activations).

/// `x (m, k) · w (n, k)ᵀ + bias`.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut y = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = bias.map_or(0.0, |b| b[j] as f64);
            for c in 0..k {
                s += x[i * k + c] as f64 * w[j * k + c] as f64;
            }
            y[i * n + j] = s;
        }
    }
    y
}

/// Attention with GQA: q `(n_q, heads, d)` token-major; `kv(h, s, i)` gives (key, value) element i of KV
/// head h at position s. Causal: query t sees keys 0..=pos_offset + t. Output `(n_q, heads, d)`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    n_q: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    n_kv: usize,
    kv: impl Fn(usize, usize, usize) -> (f32, f32),
    causal: bool,
    pos_offset: usize,
    scale: f64,
) -> Vec<f64> {
    let mut out = vec![0f64; n_q * heads * d];
    for t in 0..n_q {
        for h in 0..heads {
            let g = h / (heads / kv_heads);
            let end = if causal { (pos_offset + t + 1).min(n_kv) } else { n_kv };
            let scores: Vec<f64> = (0..end)
                .map(|s| (0..d).map(|i| q[(t * heads + h) * d + i] as f64 * kv(g, s, i).0 as f64).sum::<f64>() * scale)
                .collect();
            let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
            let z: f64 = w.iter().sum();
            for i in 0..d {
                out[(t * heads + h) * d + i] = (0..end).map(|s| w[s] * kv(g, s, i).1 as f64).sum::<f64>() / z;
            }
        }
    }
    out
}

/// Qwen2 RoPE on `heads` heads at column `offset` of each row (row stride `stride`), positions from
/// `pos_offset`; the angle is the f32 product `pos · inv_freq` as in transformers, its cos/sin in f64.
#[allow(clippy::too_many_arguments)]
/// x as the decode kernel's 8-bit products see it (matvec_fused.wgsl DOT4): each block of 32 values (zeros
/// past the end) rounded to codes floor(0.5 + 127·x/amax), then scaled back by amax/127. The codes are formed
/// in f32 in the shader's order of operations (1/amax, then a product), so that a value on a rounding edge
/// rounds the same way here.
pub fn quantize_x8(x: &[f32]) -> Vec<f32> {
    x.chunks(32)
        .flat_map(|b| {
            let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let inv = if amax > 0.0 { 1.0 / amax } else { 0.0 };
            b.iter().map(move |&v| (0.5 + 127.0 * (v * inv).clamp(-1.0, 1.0)).floor() * (amax as f64 / 127.0) as f32).collect::<Vec<f32>>()
        })
        .collect()
}

pub fn rope(x: &[f32], n_tokens: usize, heads: usize, d: usize, stride: usize, offset: usize, pos_offset: usize, inv_freq: &[f32]) -> Vec<f64> {
    let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let half = d / 2;
    for t in 0..n_tokens {
        for h in 0..heads {
            for i in 0..half {
                let angle = ((pos_offset + t) as f32 * inv_freq[i]) as f64;
                let (s, c) = angle.sin_cos();
                let b = t * stride + offset + h * d;
                let x1 = x[b + i] as f64;
                let x2 = x[b + i + half] as f64;
                y[b + i] = x1 * c - x2 * s;
                y[b + i + half] = x2 * c + x1 * s;
            }
        }
    }
    y
}

pub fn rms_norm(x: &[f32], w: &[f32], n: usize, eps: f64) -> Vec<f64> {
    x.chunks(n)
        .flat_map(|row| {
            let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (ms + eps).sqrt();
            row.iter().zip(w).map(move |(&v, &w)| v as f64 * inv * w as f64).collect::<Vec<_>>()
        })
        .collect()
}

pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], n: usize, eps: f64) -> Vec<f64> {
    x.chunks(n)
        .flat_map(|row| {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (var + eps).sqrt();
            (0..n).map(move |i| (row[i] as f64 - mean) * inv * w[i] as f64 + b[i] as f64).collect::<Vec<_>>()
        })
        .collect()
}

/// erf by its Taylor series (|x| < 5, error < 1e-7 there) and ±1 beyond (erfc(5) ≈ 1.5e-12).
pub fn erf(x: f64) -> f64 {
    if x.abs() >= 5.0 {
        return x.signum();
    }
    let mut term = x;
    let mut sum = x;
    let x2 = x * x;
    for n in 1..200 {
        term *= -x2 / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-17 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

pub fn gelu_erf(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

pub fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
}

pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// Conv2d with kernel = stride = `patch`, no padding: pixels `(tiles, c, size, size)`, w `(o, c, patch, patch)`
/// → `(tiles · grid², o)`, patches row-major.
pub fn patch_conv(pixels: &[f32], w: &[f32], bias: &[f32], tiles: usize, c: usize, size: usize, patch: usize, o: usize) -> Vec<f64> {
    let grid = size / patch;
    let mut out = vec![0f64; tiles * grid * grid * o];
    for t in 0..tiles {
        for py in 0..grid {
            for px in 0..grid {
                let row = (t * grid + py) * grid + px;
                for oc in 0..o {
                    let mut s = bias[oc] as f64;
                    for ch in 0..c {
                        for ky in 0..patch {
                            for kx in 0..patch {
                                let pix = pixels[((t * c + ch) * size + py * patch + ky) * size + px * patch + kx] as f64;
                                s += pix * w[((oc * c + ch) * patch + ky) * patch + kx] as f64;
                            }
                        }
                    }
                    out[row * o + oc] = s;
                }
            }
        }
    }
    out
}

/// PyTorch `interpolate(mode="bilinear", align_corners=False)` of `(h, w, c)` to `(oh, ow, c)`.
pub fn bilinear(x: &[f32], h: usize, w: usize, c: usize, oh: usize, ow: usize) -> Vec<f64> {
    let src = |dst: usize, n_in: usize, n_out: usize| {
        let scale = n_in as f32 / n_out as f32;
        let s = ((dst as f32 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        (i0, i1, (s - i0 as f32) as f64)
    };
    let mut y = vec![0f64; oh * ow * c];
    for oy in 0..oh {
        let (y0, y1, ly) = src(oy, h, oh);
        for ox in 0..ow {
            let (x0, x1, lx) = src(ox, w, ow);
            for ch in 0..c {
                let v = |yy: usize, xx: usize| x[(yy * w + xx) * c + ch] as f64;
                let top = v(y0, x0) * (1.0 - lx) + v(y0, x1) * lx;
                let bot = v(y1, x0) * (1.0 - lx) + v(y1, x1) * lx;
                y[(oy * ow + ox) * c + ch] = top * (1.0 - ly) + bot * ly;
            }
        }
    }
    y
}

/// What the sampler must pick, and how close the draw was to a decision boundary (relative to the kept
/// mass), so that a test tolerates a different pick only where f32 rounding could explain it.
pub struct SampleRef {
    pub pick: usize,
    pub kept: Vec<bool>,
    pub margin: f64,
}

/// transformers' order: temperature, top-k (boundary ties kept), top-p (a token stays when the mass of the
/// tokens not above it exceeds 1 − p), then the first token in index order whose running mass passes u·Z.
pub fn sample(logits: &[f32], temperature: f64, top_k: usize, top_p: f64, u: f64) -> SampleRef {
    let n = logits.len();
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let first = logits.iter().position(|&v| v == m).unwrap();
    if temperature <= 0.0 || top_k == 1 {
        let mut kept = vec![false; n];
        kept[first] = true;
        return SampleRef { pick: first, kept, margin: 1.0 };
    }
    let d: Vec<f64> = logits.iter().map(|&l| (m as f64 - l as f64) / temperature).collect();
    let mut kept = vec![true; n];
    if top_k > 0 && top_k < n {
        let mut s = d.clone();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let kth = s[top_k - 1];
        for i in 0..n {
            kept[i] = d[i] <= kth;
        }
    }
    let mut margin = 1.0f64;
    if top_p < 1.0 {
        let z: f64 = (0..n).filter(|&i| kept[i]).map(|i| (-d[i]).exp()).sum();
        let cut = (1.0 - top_p) * z;
        let mut order: Vec<usize> = (0..n).filter(|&i| kept[i]).collect();
        order.sort_by(|&a, &b| d[b].partial_cmp(&d[a]).unwrap()); // ascending score
        let mut cum = 0.0;
        let mut mass_not_above = vec![0f64; n];
        let mut i = 0;
        while i < order.len() {
            // tokens with equal d share the mass of everything not above them
            let mut j = i;
            while j < order.len() && d[order[j]] == d[order[i]] {
                cum += (-d[order[j]]).exp();
                j += 1;
            }
            for &t in &order[i..j] {
                mass_not_above[t] = cum;
            }
            i = j;
        }
        for &t in &order {
            margin = margin.min((mass_not_above[t] - cut).abs() / z);
            kept[t] = mass_not_above[t] > cut;
        }
        // at least the top token survives (min_tokens_to_keep = 1); d = 0 is the maximum
        if !kept.iter().any(|&k| k) {
            for i in 0..n {
                kept[i] = d[i] == 0.0;
            }
        }
    }
    let total: f64 = (0..n).filter(|&i| kept[i]).map(|i| (-d[i]).exp()).sum();
    let target = u * total;
    let mut run = 0.0;
    let mut pick = n - 1;
    for i in 0..n {
        if kept[i] {
            run += (-d[i]).exp();
            margin = margin.min((run - target).abs() / total);
            if run > target {
                pick = i;
                break;
            }
        }
    }
    SampleRef { pick, kept, margin }
}
