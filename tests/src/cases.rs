//! Kernel test cases: each draws seeded random inputs at awkward sizes (1, primes, non-multiples of the
//! tiles), runs the kernel into a poisoned output with a guard region, and compares with `reference`.
//! The same functions run natively and in the browser; `act` picks the activation type.

use half::f16;
use varco_web::gpu::tensor::{Weight, WeightFormat};
use varco_web::gpu::{Context, DType, DecodeTuning, Tensor};
use varco_web::kernels::attention::{self, AttnArgs};
use varco_web::kernels::linear::{self, MatvecShape};
use varco_web::kernels::{elementwise, embed, norm, patch_embed, resize, rope, sample};
use varco_web::quant::QMatrix;

use crate::harness::{as_stored, assert_close, poisoned, read_guarded, run, tol, Rng};
use crate::reference as r;

fn upload(ctx: &Context, v: &[f32], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_f32(ctx, v, shape, dtype).expect("upload")
}

/// A random `(n, k)` weight in `format`, split into parts of at most `limit` bytes; also its exact values.
pub fn random_weight(ctx: &Context, rng: &mut Rng, n: usize, k: usize, format: WeightFormat, limit: u64) -> (Weight, Vec<f32>) {
    let w = rng.normals(n * k, 0.5);
    match format {
        WeightFormat::Q4 | WeightFormat::Q8 => {
            let q = QMatrix::quantize(format.quant().unwrap(), &w, n, k);
            (Weight::from_q_limited(ctx, &q, limit).expect("upload a quantized weight"), q.dequantize())
        }
        WeightFormat::F16 => {
            let h: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let exact = h.iter().map(|v| v.to_f32()).collect();
            (Weight::from_f16_limited(ctx, &h, n, k, limit).expect("upload f16"), exact)
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum LinearKernel {
    Matvec(MatvecShape),
    /// The MULTI variant: this many x rows a workgroup.
    MatvecMulti(MatvecShape, u32),
    Matmul(u32),
    /// The cooperative-matrix kernel in this shape.
    Coop(linear::CoopShape),
    /// `linear::linear`'s own choice (a short single row goes to the fused kernel's SHORT path).
    Chosen,
}

/// One linear kernel's output on seeded random inputs `(m, n, k)` (optional bias, weight parts of at most
/// `limit` bytes), with the inputs it had: `(y, x as stored, W dequantized, bias)`.
#[allow(clippy::too_many_arguments)]
pub async fn linear_output(ctx: &Context, act: DType, format: WeightFormat, kernel: LinearKernel, m: usize, n: usize, k: usize, bias: bool, limit: u64, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, usize) {
    let mut rng = Rng::new(seed);
    let (w, wv) = random_weight(ctx, &mut rng, n, k, format, limit);
    let x = as_stored(&rng.normals(m * k, 1.0), act);
    let b = rng.normals(n, 1.0);
    let xt = upload(ctx, &x, &[m, k], act);
    let bt = upload(ctx, &b, &[n], DType::F32);
    let y = poisoned(ctx, &[m, n], act);
    let bias_t = bias.then_some(&bt);
    run(ctx, |rec| match kernel {
        LinearKernel::Matvec(s) => linear::matvec(rec, &xt, &w, bias_t, &y, s),
        LinearKernel::MatvecMulti(s, mx) => linear::matvec_multi(rec, &xt, &w, bias_t, &y, s, mx),
        LinearKernel::Matmul(t) => linear::matmul_with_tile(rec, &xt, &w, bias_t, &y, t),
        LinearKernel::Coop(shape) => linear::matmul_coop_with(rec, &xt, &w, bias_t, &y, shape),
        LinearKernel::Chosen => linear::linear(rec, &xt, &w, bias_t, &y),
    })
    .await;
    (read_guarded(ctx, &y).await, x, wv, b, w.parts.len())
}

/// One linear case against the f64 reference.
#[allow(clippy::too_many_arguments)]
pub async fn linear_case(ctx: &Context, act: DType, format: WeightFormat, kernel: LinearKernel, m: usize, n: usize, k: usize, bias: bool, limit: u64, seed: u64) {
    let (got, x, wv, b, parts) = linear_output(ctx, act, format, kernel, m, n, k, bias, limit, seed).await;
    let want = r::linear(&x, &wv, bias.then_some(&b[..]), m, n, k);
    let what = format!("{kernel:?} {format:?} {act:?} m={m} n={n} k={k} bias={bias} parts={parts}");
    assert_close(&what, &got, &want, tol(act, k > 512));
}

pub async fn matvec_suite(ctx: &Context, act: DType, format: WeightFormat) {
    let big = u64::MAX;
    for (i, &(m, n, k, bias)) in [(1, 1, 32, false), (1, 7, 96, true), (3, 37, 88, true), (1, 130, 516, false), (2, 257, 1028, true), (4, 61, 4304, false)]
        .iter()
        .enumerate()
    {
        for shape in [MatvecShape { wg: 64, rows: 4 }, MatvecShape { wg: 32, rows: 1 }, MatvecShape { wg: 128, rows: 2 }] {
            linear_case(ctx, act, format, LinearKernel::Matvec(shape), m, n, k, bias, big, 100 + i as u64).await;
        }
    }
    // A weight split over several buffers (as embed_tokens / lm_head on a 128 MiB-binding device).
    linear_case(ctx, act, format, LinearKernel::Matvec(linear::MATVEC_SHAPE), 1, 203, 160, true, 2048, 7).await;
    // One short row as the model's linear takes it (the SHORT path): several workgroups, bias, parts
    linear_case(ctx, act, format, LinearKernel::Chosen, 1, 600, 40, true, 4096, 11).await;
    // Short prompts (MULTI): rows of x that fill one, several and part of a group, a weight in parts
    let multi = LinearKernel::MatvecMulti(linear::MULTI_SHAPE, linear::MULTI_ROWS);
    for (i, &(m, n, k, bias)) in [(5, 3, 32, true), (8, 37, 96, false), (13, 61, 520, true), (64, 130, 260, false)].iter().enumerate() {
        linear_case(ctx, act, format, multi, m, n, k, bias, big, 150 + i as u64).await;
    }
    linear_case(ctx, act, format, multi, 11, 203, 160, true, 2048, 9).await;
}

pub async fn matmul_suite(ctx: &Context, act: DType, format: WeightFormat) {
    let big = u64::MAX;
    let tiles: &[u32] = if ctx.caps.max_workgroup_storage >= 32768 { &[64, 128] } else { &[64] };
    for (i, &(m, n, k, bias)) in [(2, 5, 32, false), (5, 33, 64, true), (67, 70, 100, true), (130, 129, 260, false), (9, 300, 588, true)].iter().enumerate() {
        for &t in tiles {
            linear_case(ctx, act, format, LinearKernel::Matmul(t), m, n, k, bias, big, 200 + i as u64).await;
        }
    }
    linear_case(ctx, act, format, LinearKernel::Matmul(64), 70, 203, 160, true, 2048, 8).await;
}

/// The decode step's fused matrix-vector kernel, every mode, with and without the folded RMSNorm, at
/// awkward sizes and in each of `shapes` (natively every shape it is built in, in the browser those the model
/// chooses): against the plain references composed (linear on the dequantized W, then the norm's scale,
/// bias, residual, SiLU·up, RoPE, the cache writes). FUSED_SHAPE (every matrix of the test models), and in
/// q4 its copies with exact and DOT4 products, take every case; the other shapes (WIDE_SHAPE for the 14B's
/// many-row matrices, the benchmark's comparison) one case a mode and a row longer than one step of their
/// workgroup.
/// The greedy choice's first pass in lm_head's epilogue (`Fused::PlainArgmax`: each workgroup's largest logit
/// as stored and its first row) finished by argmax.wgsl's FINAL pass (`sample::argmax_of_maxima`), against
/// the first index of the largest of the logits that same dispatch wrote (read back): rows of many
/// workgroups, a row count not a multiple of the shape's, weights in parts (slots numbered across them), q4
/// and q8, and ties — the winning row copied to the next row (the same workgroup) and to a row of a later
/// part, where the first must win. Then the FINAL pass alone over maxima drawn here, one slot to many sweeps.
pub async fn greedy_in_lm_head_suite(ctx: &Context, act: DType) {
    use linear::{FusedMath, FusedShape};
    let dot4 = FusedShape { math: FusedMath::Dot4, ..linear::FUSED_SHAPE };
    let cases = [(linear::WIDE_SHAPE, WeightFormat::Q8, 1003, 288, u64::MAX, false), (linear::WIDE_SHAPE, WeightFormat::Q8, 613, 320, 16384, true), (dot4, WeightFormat::Q4, 203, 320, 8192, true), (linear::FUSED_SHAPE, WeightFormat::Q4, 77, 288, u64::MAX, true)];
    for (ci, &(shape, format, n, k, limit, tie)) in cases.iter().enumerate() {
        let mut rng = Rng::new(1200 + ci as u64);
        let x = as_stored(&rng.normals(k, 1.0), act);
        let mut wf = rng.normals(n * k, 0.5);
        // the winner: a row along x, copied to the next row and to one near the end (a later part)
        let a = (rng.below(n as u64 / 3) as usize) | 1;
        if tie {
            for r in [a, a + 1, n - 2] {
                for j in 0..k {
                    wf[r * k + j] = 0.6 * x[j].signum();
                }
            }
        }
        let q = QMatrix::quantize(format.quant().unwrap(), &wf, n, k);
        let w = Weight::from_q_limited(ctx, &q, limit).expect("upload a quantized weight");
        assert!(!tie || limit == u64::MAX || w.parts.len() > 1, "case {ci}: one part");
        let slots = linear::argmax_slots(&w, shape);
        assert_eq!(slots, w.parts.iter().map(|p| p.rows.len().div_ceil(shape.rows as usize)).sum::<usize>());
        let xt = upload(ctx, &x, &[1, k], act);
        let y = poisoned(ctx, &[n], act);
        let maxima = poisoned(ctx, &[2 * slots], DType::U32);
        let out = poisoned(ctx, &[1], DType::U32);
        run(ctx, |rec| {
            linear::matvec_fused(rec, &xt, &w, None, Some(1e-6), linear::Fused::PlainArgmax { y: &y, maxima: &maxima }, shape)?;
            sample::argmax_of_maxima(rec, &maxima, slots, &out)
        })
        .await;
        let logits = read_guarded(ctx, &y).await;
        let want = r::sample(&logits, 0.0, 0, 1.0, 0.5).pick;
        let pick = out.to_u32(ctx).await.unwrap()[0] as usize;
        assert_eq!(pick, want, "greedy in lm_head {shape:?} {format:?} {act:?} n={n} k={k}: picked {pick} ({}), the logits' first largest is {want} ({})", logits[pick.min(n - 1)], logits[want]);
        if tie {
            assert!(logits[a] == logits[a + 1] && logits[a] == logits[n - 2], "case {ci}: the copied rows' logits differ");
            assert_eq!(pick, a, "case {ci}: a tie not taken by its first row");
        }
    }
    // the FINAL pass alone over more slots than one sweep of its workgroup takes (the 14B's lm_head writes
    // 18,960): maxima drawn here, the largest value in three slots — in different sweeps and lanes, the
    // smallest row in the last of them — and a prime count, so the last sweep is partial
    for (ci, slots) in [1usize, 7, 20_011].into_iter().enumerate() {
        let mut rng = Rng::new(1300 + ci as u64);
        let mut pairs: Vec<(f32, u32)> = (0..slots).map(|i| (rng.normals(1, 3.0)[0], (i * 8 + 5) as u32)).collect();
        if slots > 3 {
            let top = pairs.iter().fold(f32::MIN, |a, p| a.max(p.0)) + 1.0;
            for (slot, row) in [(slots / 7, 900_000), (slots / 2 + 1, 700_000), (slots - 1, 600_000)] {
                pairs[slot] = (top, row);
            }
        }
        let want = pairs.iter().fold((f32::MIN, u32::MAX), |b, p| if p.0 > b.0 || (p.0 == b.0 && p.1 < b.1) { *p } else { b }).1;
        let words: Vec<u32> = pairs.iter().flat_map(|p| [p.0.to_bits(), p.1]).collect();
        let maxima = varco_web::gpu::Tensor::from_u32(ctx, &words, &[2 * slots]).unwrap();
        let out = poisoned(ctx, &[1], DType::U32);
        run(ctx, |rec| sample::argmax_of_maxima(rec, &maxima, slots, &out)).await;
        let pick = out.to_u32(ctx).await.unwrap()[0];
        assert_eq!(pick, want, "argmax over {slots} maxima");
        if slots > 3 {
            assert_eq!(pick, 600_000, "the tie's smallest row");
        }
        if slots > 10_000 {
            // the largest in one slot at a time, every 500th: each load of the unrolled sweep, in every sweep,
            // whatever the workgroup's width
            for at in (3..slots).step_by(500) {
                let mut one = pairs.clone();
                let top = one.iter().fold(f32::MIN, |a, p| a.max(p.0)) + 1.0;
                one[at] = (top, 123_456);
                let words: Vec<u32> = one.iter().flat_map(|p| [p.0.to_bits(), p.1]).collect();
                let maxima = varco_web::gpu::Tensor::from_u32(ctx, &words, &[2 * slots]).unwrap();
                run(ctx, |rec| sample::argmax_of_maxima(rec, &maxima, slots, &out)).await;
                assert_eq!(out.to_u32(ctx).await.unwrap()[0], 123_456, "the largest of {slots} maxima in slot {at} not picked");
            }
        }
    }
}

pub async fn matvec_fused_suite(ctx: &Context, act: DType, format: WeightFormat, shapes: &[linear::FusedShape]) {
    use linear::Fused;
    let big = u64::MAX;
    let eps = 1e-6;
    for (si, &shape) in shapes.iter().enumerate() {
        // the products' math changes q4's kernel only: in q8 and f16 a shape differing from an earlier one in
        // its math alone is the same kernel
        let same = |o: &linear::FusedShape| (o.wg, o.rows, o.blocks) == (shape.wg, shape.rows, shape.blocks);
        if format != WeightFormat::Q4 && shapes[..si].iter().any(same) {
            continue;
        }
        let seed = 900 + 10 * si as u64;
        // FUSED_SHAPE, and in q4 (the 14B's layers) its exact-products and DOT4 copies, take every case
        let q4_copy = |math| format == WeightFormat::Q4 && shape == linear::FusedShape { math, ..linear::FUSED_SHAPE };
        let every = shape == linear::FUSED_SHAPE || q4_copy(linear::FusedMath::Exact) || q4_copy(linear::FusedMath::Dot4);
        // DOT4 (q4) computes with x rounded to 8 bits a block: the references take x as it does (the norm's
        // scale still comes from x itself), and its PLAIN result is also held to the exact product within 1 %
        let dot4 = format == WeightFormat::Q4 && shape.math == linear::FusedMath::Dot4;
        // (PLAIN and RESIDUAL rows of at most SHORT_MAX_K inputs take the SHORT path, exact products whatever
        // the shape)
        let seen = |x: &[f32], general: bool| if dot4 && general { r::quantize_x8(x) } else { x.to_vec() };
        // ... but the GPU's 1/amax may differ from the CPU's by an ulp (WGSL allows 2.5), which moves an x value
        // sitting on a rounding tie to the next code: one such code moves a row by about amax/127·|w|, 3e-4 of
        // the row at k = 4,192 (seen on lavapipe). DOT4 is held to 1e-3 (a wrong zero point errs by 3e-1).
        let tol = |act: DType, long: bool| if dot4 { tol(act, long).max(1e-3) } else { tol(act, long) };
        // PLAIN and RESIDUAL: rows that fill one and several workgroups; a weight split into parts; rows of
        // at most SHORT_MAX_K inputs (the first five cases) take the SHORT path whatever the shape. Cases 5
        // and the last run in every shape; the last has rows longer than one step of the workgroup (wg ·
        // blocks q4 blocks of 32 inputs and three more; more blocks still in q8 and f16), so that every one
        // of a step's blocks is live and the next step partial.
        let long = (32 * (shape.wg * shape.blocks + 3)) as usize;
        let cases = [(1, 32, false, big), (37, 96, true, big), (203, 160, false, 2048), (45, 88, true, big), (600, 40, true, 4096), (37, 296, true, big), (130, 544, true, big), (203, 320, false, 8192), (11, long, true, big)];
        assert!(cases[..5].iter().all(|c| c.1 <= linear::SHORT_MAX_K) && cases[5..].iter().all(|c| c.1 > linear::SHORT_MAX_K));
        for (ci, &(n, k, norm, limit)) in cases.iter().enumerate() {
            if !every && ci != 5 && ci != cases.len() - 1 {
                continue;
            }
            let mut rng = Rng::new(seed + ci as u64);
            let (w, wv) = random_weight(ctx, &mut rng, n, k, format, limit);
            let x = as_stored(&rng.normals(k, 1.0), act);
            let y0 = as_stored(&rng.normals(n, 1.0), act);
            let xt = upload(ctx, &x, &[1, k], act);
            let s = if norm { 1.0 / (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / k as f64 + eps).sqrt() } else { 1.0 };
            let general = k > linear::SHORT_MAX_K;
            let lin = r::linear(&seen(&x, general), &wv, None, 1, n, k);
            let e = norm.then_some(eps as f32);
            let y = poisoned(ctx, &[n], act);
            run(ctx, |rec| linear::matvec_fused(rec, &xt, &w, None, e, Fused::Plain { y: &y }, shape)).await;
            let want: Vec<f64> = lin.iter().map(|v| v * s).collect();
            let got = read_guarded(ctx, &y).await;
            assert_close(&format!("fused plain {shape:?} {format:?} {act:?} n={n} k={k} norm={norm}"), &got, &want, tol(act, k > 512));
            if dot4 && general {
                let exact: Vec<f64> = r::linear(&x, &wv, None, 1, n, k).iter().map(|v| v * s).collect();
                assert_close(&format!("fused plain {shape:?} against x unrounded, n={n} k={k}"), &got, &exact, 1e-2);
            }
            let yr = upload(ctx, &y0, &[n], act);
            run(ctx, |rec| linear::matvec_fused(rec, &xt, &w, None, e, Fused::Residual { y: &yr }, shape)).await;
            let want: Vec<f64> = lin.iter().zip(&y0).map(|(v, y)| v * s + *y as f64).collect();
            assert_close(&format!("fused residual {shape:?} {format:?} {act:?} n={n} k={k}"), &yr.to_f32(ctx).await.unwrap(), &want, tol(act, k > 512));
        }
        // GLU: gate and up stacked, y = silu(gate) · up
        for (ci, &(ffn, k)) in [(1, 32), (45, 128), (130, 96), (20, 88), (6, long)].iter().enumerate() {
            if !every && ci != 1 && ci != 4 {
                continue;
            }
            let mut rng = Rng::new(seed + 5 + ci as u64);
            let (w, wv) = random_weight(ctx, &mut rng, 2 * ffn, k, format, big);
            let x = as_stored(&rng.normals(k, 1.0), act);
            let xt = upload(ctx, &x, &[1, k], act);
            let s = 1.0 / (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / k as f64 + eps).sqrt();
            let lin = r::linear(&seen(&x, true), &wv, None, 1, 2 * ffn, k);
            let y = poisoned(ctx, &[ffn], act);
            run(ctx, |rec| linear::matvec_fused(rec, &xt, &w, None, Some(eps as f32), Fused::Glu { y: &y }, shape)).await;
            let want: Vec<f64> = (0..ffn).map(|j| r::silu(lin[j] * s) * lin[ffn + j] * s).collect();
            assert_close(&format!("fused glu {shape:?} {format:?} {act:?} ffn={ffn} k={k}"), &read_guarded(ctx, &y).await, &want, tol(act, false));
        }
        // ROPE_KV: q, k and v of one token (GQA), bias, RoPE at a late position, k and v into the caches
        for (ci, &(heads, kv_heads, d, k, pos, cap)) in [(2, 1, 16, 32, 0, 3), (6, 2, 32, 96, 30_000, 30_005), (4, 4, 64, 64, 7, 9), (2, 1, 16, long, 5, 7)].iter().enumerate() {
            if !every && ci != 1 && ci != 3 {
                continue;
            }
            let mut rng = Rng::new(seed + 8 + ci as u64);
            let rows = (heads + 2 * kv_heads) * d;
            let (w, wv) = random_weight(ctx, &mut rng, rows, k, format, big);
            let x = as_stored(&rng.normals(k, 1.0), act);
            let bias = rng.normals(rows, 1.0);
            let xt = upload(ctx, &x, &[1, k], act);
            let bt = upload(ctx, &bias, &[rows], DType::F32);
            let s = 1.0 / (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / k as f64 + eps).sqrt();
            let lin: Vec<f32> = r::linear(&seen(&x, true), &wv, None, 1, rows, k).iter().zip(&bias).map(|(v, b)| (v * s + *b as f64) as f32).collect();
            let rope = rope::Rope::new(ctx, d as u32, 1e6).unwrap();
            let rotated = r::rope(&lin, 1, heads + kv_heads, d, rows, 0, pos, &rope::inv_freq(d as u32, 1e6));
            let q = poisoned(ctx, &[heads * d], act);
            let kc = upload(ctx, &rng.normals(kv_heads * cap * d, 1.0), &[kv_heads, cap, d], act);
            let vc = upload(ctx, &rng.normals(kv_heads * cap * d, 1.0), &[kv_heads, cap, d], act);
            let kbefore = kc.to_f32(ctx).await.unwrap();
            let vbefore = vc.to_f32(ctx).await.unwrap();
            let mode = Fused::RopeKv { q: &q, k: &kc, v: &vc, inv_freq: rope.inv_freq(), heads: heads as u32, kv_heads: kv_heads as u32, head_dim: d as u32, pos: pos as u32 };
            run(ctx, |rec| linear::matvec_fused(rec, &xt, &w, Some(&bt), Some(eps as f32), mode, shape)).await;
            let what = format!("fused qkv+rope {shape:?} {format:?} {act:?} heads={heads}/{kv_heads} d={d} pos={pos}");
            assert_close(&format!("{what}: q"), &read_guarded(ctx, &q).await, &rotated[..heads * d], tol(act, false));
            let (kg, vg) = (kc.to_f32(ctx).await.unwrap(), vc.to_f32(ctx).await.unwrap());
            for g in 0..kv_heads {
                for p in 0..cap {
                    let at = (g * cap + p) * d;
                    if p == pos {
                        let kw = &rotated[(heads + g) * d..(heads + g + 1) * d];
                        let vw: Vec<f64> = lin[(heads + kv_heads + g) * d..(heads + kv_heads + g + 1) * d].iter().map(|&v| v as f64).collect();
                        assert_close(&format!("{what}: k head {g}"), &kg[at..at + d], kw, tol(act, false));
                        assert_close(&format!("{what}: v head {g}"), &vg[at..at + d], &vw, tol(act, false));
                    } else {
                        assert_eq!(&kg[at..at + d], &kbefore[at..at + d], "{what}: k written at position {p}");
                        assert_eq!(&vg[at..at + d], &vbefore[at..at + d], "{what}: v written at position {p}");
                    }
                }
            }
        }
    }
}

/// x prepared once (matvec_fused.wgsl XP_OUT and XQ8), a layer's chain as the decode step runs it in the
/// model's DOT4 shapes: o + residual preparing the stream (from a row of x itself), norm + gate/up + SiLU·up
/// reading it and preparing its output, down + residual reading that and preparing the stream again, and the
/// next layer's norm + matrix reading it. Each output against the references composed on the GPU's previous
/// output as stored (which the prepared codes stand for), each prepared row against its own quantization on
/// the CPU; rows of 67 blocks (more than one step of a 32-wide slice), a W in parts of 64 rows, down also in
/// the wide shape (4 slices of 8 rows). Then the layouts it refuses. lavapipe's subgroups (narrower than a
/// slice) reach the partial sums of several subgroups a slice, and the context without subgroups the
/// workgroup-memory tree; a GPU's subgroups of exactly 32 (one a slice) run in the device checks.
pub async fn prepared_suite(ctx: &Context, act: DType) {
    use linear::{Fused, FusedMath, FusedShape, Prep, PreparedX};
    let big = u64::MAX;
    let eps = 1e-6;
    let dot4 = |s: FusedShape| FusedShape { math: FusedMath::Dot4, ..s };
    let (fs, wide) = (dot4(linear::FUSED_SHAPE), dot4(linear::WIDE_SHAPE));
    let (h, ffn, k0, nq) = (2144usize, 64usize, 96usize, 37usize);
    let mut rng = Rng::new(1200);
    let (wo, wov) = random_weight(ctx, &mut rng, h, k0, WeightFormat::Q4, big);
    let (wgu, wguv) = random_weight(ctx, &mut rng, 2 * ffn, h, WeightFormat::Q4, big);
    let (wd, wdv) = random_weight(ctx, &mut rng, h, ffn, WeightFormat::Q4, big);
    let (wq, wqv) = random_weight(ctx, &mut rng, nq, h, WeightFormat::Q4, big);
    let att = as_stored(&rng.normals(k0, 1.0), act);
    let r0 = as_stored(&rng.normals(h, 1.0), act);
    let (xp, mp) = (PreparedX::new(ctx, h).unwrap(), PreparedX::new(ctx, ffn).unwrap());
    for t in [&xp.codes, &xp.scales, &mp.codes, &mp.scales] {
        t.fill_bytes(ctx, 0xFF);
    }
    let (att_t, resid, mid, q) = (upload(ctx, &att, &[1, k0], act), upload(ctx, &r0, &[h], act), poisoned(ctx, &[ffn], act), poisoned(ctx, &[nq], act));
    let tol = |long: bool| tol(act, long).max(1e-3);
    let scale = |v: &[f32]| 1.0 / (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64 + eps).sqrt();
    let what = |step: &str| format!("x prepared {act:?}: {step}");
    // o + residual from a longer att (DOT4 quantizing it, as the 14B's o), preparing the stream; W in parts
    // of 64 rows (of 11 blocks, 176 bytes), each part's blocks from its own first row's
    let k1 = 352;
    let (wo1, wo1v) = random_weight(ctx, &mut rng, h, k1, WeightFormat::Q4, 64 * 176);
    assert_eq!(wo1.parts.len(), h.div_ceil(64));
    let att1 = as_stored(&rng.normals(k1, 1.0), act);
    let resid1 = upload(ctx, &r0, &[h], act);
    run(ctx, |rec| linear::matvec_fused_prep(rec, &upload(ctx, &att1, &[1, k1], act), Prep { input: None, output: Some(&xp) }, &wo1, None, None, Fused::Residual { y: &resid1 }, fs)).await;
    let r = resid1.to_f32(ctx).await.unwrap();
    let want: Vec<f64> = r::linear(&r::quantize_x8(&att1), &wo1v, None, 1, h, k1).iter().zip(&r0).map(|(v, y)| v + *y as f64).collect();
    assert_close(&what("o + residual, DOT4"), &r, &want, tol(false));
    check_prepared(ctx, &what("o's prepared output, DOT4"), &xp, &r).await;
    // o + residual, from att itself, preparing the stream (att's 96 values are a row SHORT would take: exact
    // products, as there)
    run(ctx, |rec| linear::matvec_fused_prep(rec, &att_t, Prep { input: None, output: Some(&xp) }, &wo, None, None, Fused::Residual { y: &resid }, fs)).await;
    let r1 = resid.to_f32(ctx).await.unwrap();
    let want: Vec<f64> = r::linear(&att, &wov, None, 1, h, k0).iter().zip(&r0).map(|(v, y)| v + *y as f64).collect();
    assert_close(&what("o + residual"), &r1, &want, tol(false));
    check_prepared(ctx, &what("o's prepared output"), &xp, &r1).await;
    // norm + gate/up + SiLU·up from the prepared stream, preparing its output
    run(ctx, |rec| linear::matvec_fused_prep(rec, &resid, Prep { input: Some(&xp), output: Some(&mp) }, &wgu, None, Some(eps as f32), Fused::Glu { y: &mid }, wide)).await;
    let m1 = read_guarded(ctx, &mid).await;
    let (lin, s) = (r::linear(&r::quantize_x8(&r1), &wguv, None, 1, 2 * ffn, h), scale(&r1));
    let want: Vec<f64> = (0..ffn).map(|j| r::silu(lin[j] * s) * lin[ffn + j] * s).collect();
    assert_close(&what("norm + gate/up + SiLU·up"), &m1, &want, tol(true));
    check_prepared(ctx, &what("gate/up's prepared output"), &mp, &m1).await;
    // down + residual from the prepared SiLU·up, preparing the stream again
    run(ctx, |rec| linear::matvec_fused_prep(rec, &mid, Prep { input: Some(&mp), output: Some(&xp) }, &wd, None, None, Fused::Residual { y: &resid }, fs)).await;
    let r2 = resid.to_f32(ctx).await.unwrap();
    let want: Vec<f64> = r::linear(&r::quantize_x8(&m1), &wdv, None, 1, h, ffn).iter().zip(&r1).map(|(v, y)| v + *y as f64).collect();
    assert_close(&what("down + residual"), &r2, &want, tol(false));
    check_prepared(ctx, &what("down's prepared output"), &xp, &r2).await;
    // the same in the wide shape: 4 slices of 8 rows (128 invocations) a block
    let (resid_w, xp_w) = (upload(ctx, &r1, &[h], act), PreparedX::new(ctx, h).unwrap());
    run(ctx, |rec| linear::matvec_fused_prep(rec, &mid, Prep { input: Some(&mp), output: Some(&xp_w) }, &wd, None, None, Fused::Residual { y: &resid_w }, wide)).await;
    let rw = resid_w.to_f32(ctx).await.unwrap();
    assert_close(&what("down + residual, wide"), &rw, &want, tol(false));
    check_prepared(ctx, &what("down's prepared output, wide"), &xp_w, &rw).await;
    // the next layer's norm + matrix from the prepared stream
    run(ctx, |rec| linear::matvec_fused_prep(rec, &resid, Prep { input: Some(&xp), output: None }, &wq, None, Some(eps as f32), Fused::Plain { y: &q }, fs)).await;
    let s = scale(&r2);
    let want: Vec<f64> = r::linear(&r::quantize_x8(&r2), &wqv, None, 1, nq, h).iter().map(|v| v * s).collect();
    assert_close(&what("norm + matrix"), &read_guarded(ctx, &q).await, &want, tol(true));
    // refused: GLU in four-row workgroups (16 slices of 32: 512 invocations), a prepared PLAIN output, x
    // prepared for the float products, a prepared row of the wrong size
    let refused = |f: &dyn Fn(&mut varco_web::gpu::Recorder) -> varco_web::Result<()>| {
        let mut rec = varco_web::gpu::Recorder::new(ctx);
        f(&mut rec).expect_err("refused").to_string()
    };
    let e = refused(&|rec| linear::matvec_fused_prep(rec, &resid, Prep { input: Some(&xp), output: Some(&mp) }, &wgu, None, Some(1e-6), Fused::Glu { y: &mid }, fs));
    assert!(e.contains("cannot prepare its output"), "{e}");
    let e = refused(&|rec| linear::matvec_fused_prep(rec, &resid, Prep { input: Some(&xp), output: Some(&mp) }, &wq, None, None, Fused::Plain { y: &q }, fs));
    assert!(e.contains("only RESIDUAL and GLU"), "{e}");
    let e = refused(&|rec| linear::matvec_fused_prep(rec, &resid, Prep { input: Some(&xp), output: None }, &wq, None, None, Fused::Plain { y: &q }, linear::FUSED_SHAPE));
    assert!(e.contains("DOT4"), "{e}");
    let (wo50, _) = random_weight(ctx, &mut rng, h, k1, WeightFormat::Q4, 50 * 176);
    let e = refused(&|rec| linear::matvec_fused_prep(rec, &upload(ctx, &att1, &[1, k1], act), Prep { input: None, output: Some(&xp) }, &wo50, None, None, Fused::Residual { y: &resid }, fs));
    assert!(e.contains("whole blocks of 32 rows"), "{e}");
    let bias = upload(ctx, &vec![0.0; h], &[h], DType::F32);
    let e = refused(&|rec| linear::matvec_fused_prep(rec, &att_t, Prep { input: None, output: Some(&xp) }, &wo, Some(&bias), None, Fused::Residual { y: &resid }, fs));
    assert!(e.contains("no bias"), "{e}");
    let e = refused(&|rec| linear::matvec_fused_prep(rec, &resid, Prep { input: Some(&mp), output: None }, &wq, None, None, Fused::Plain { y: &q }, fs));
    assert!(e.contains("blocks"), "{e}");
}

/// A prepared row against `v` (the row as stored): each block's codes floor(0.5 + 127·v/amax) in the order
/// DOT4 reads them (lo: values 0, 2, 4, 6 of each 8; hi: 1, 3, 5, 7), its scale amax/127, Σ codes (of the
/// codes written) and Σ v². A code may sit one off where the GPU's 1/amax differs from the CPU's by an ulp
/// and moves a value on a rounding tie; at most one code in 50.
async fn check_prepared(ctx: &Context, what: &str, xp: &linear::PreparedX, v: &[f32]) {
    let codes: Vec<u32> = bytemuck::pod_collect_to_vec(&ctx.read_bytes(&xp.codes.buffer, 0, (xp.codes.len() * 4) as u64).await.unwrap());
    let sc = xp.scales.to_f32(ctx).await.unwrap();
    assert_eq!(xp.blocks() * 32, v.len(), "{what}: blocks");
    let mut off = 0;
    for (b, blk) in v.chunks(32).enumerate() {
        let amax = blk.iter().fold(0f32, |m, x| m.max(x.abs()));
        let inv = if amax > 0.0 { 1.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (half, i, j) in (0..2).flat_map(|h| (0..4).flat_map(move |i| (0..4).map(move |j| (h, i, j)))) {
            let got = (codes[b * 8 + half * 4 + i] >> (8 * j)) as u8 as i8 as i32;
            let want = (0.5 + 127.0 * (blk[8 * i + half + 2 * j] * inv).clamp(-1.0, 1.0)).floor() as i32;
            assert!((got - want).abs() <= 1, "{what}: block {b} value {}: code {got}, want {want}", 8 * i + half + 2 * j);
            off += (got != want) as usize;
            sum += got;
        }
        let ss: f64 = blk.iter().map(|x| (*x as f64).powi(2)).sum();
        let s = &sc[4 * b..4 * b + 4];
        assert!(((s[0] as f64) - amax as f64 / 127.0).abs() <= 1e-6 * amax as f64, "{what}: block {b} scale {} for amax {amax}", s[0]);
        assert_eq!(s[1], sum as f32, "{what}: block {b}: Σ codes");
        assert!((s[2] as f64 - ss).abs() <= 1e-5 * ss.max(1e-30), "{what}: block {b}: Σ x² {} against {ss}", s[2]);
        assert_eq!(s[3], 0.0, "{what}: block {b}: the fourth word");
    }
    assert!(off * 50 <= v.len(), "{what}: {off} of {} codes one off", v.len());
}

/// The fused kernel's output (PLAIN, the folded norm) for one seeded q4 case in the model's shape with
/// `math` products: the test that TOP reaches the shader compares two of these.
pub async fn fused_output(ctx: &Context, act: DType, math: linear::FusedMath) -> Vec<f32> {
    let (n, k) = (37, 296);
    let mut rng = Rng::new(990);
    let (w, _) = random_weight(ctx, &mut rng, n, k, WeightFormat::Q4, u64::MAX);
    let x = as_stored(&rng.normals(k, 1.0), act);
    let xt = upload(ctx, &x, &[1, k], act);
    let y = poisoned(ctx, &[n], act);
    let shape = linear::FusedShape { math, ..linear::FUSED_SHAPE };
    run(ctx, |rec| linear::matvec_fused(rec, &xt, &w, None, Some(1e-6), linear::Fused::Plain { y: &y }, shape)).await;
    read_guarded(ctx, &y).await
}

/// The prefill attention suite's cases: (n_q, n_kv, heads, kv_heads, d, causal, pos_offset).
pub const ATTENTION_CASES: [(usize, usize, usize, usize, usize, bool, usize); 8] = [
    (1, 1, 2, 1, 16, true, 0),
    (37, 37, 4, 2, 16, true, 0),
    (45, 45, 10, 2, 128, true, 0),
    (13, 33, 10, 2, 128, true, 20),
    (130, 150, 4, 2, 128, true, 20),
    (70, 70, 2, 1, 128, false, 0),
    (50, 50, 2, 2, 72, false, 0),
    (3, 29, 3, 3, 72, false, 0),
];

/// A suite case's arguments: Q token-major, K and V in a head-major cache of capacity n_kv + 3 (as the KV
/// cache is laid out), scale 1/√d.
pub fn attention_case_args((n_q, n_kv, heads, kv_heads, d, causal, pos): (usize, usize, usize, usize, usize, bool, usize)) -> AttnArgs {
    AttnArgs::over_cache(heads as u32, kv_heads as u32, d as u32, (n_kv + 3) as u32, n_q as u32, pos as u32)
        .with_causal(causal)
        .with_n_kv(n_kv as u32)
        .with_scale((1.0 / (d as f64).sqrt()) as f32)
}

/// The fused-qkv case's arguments (SigLIP's layout: Q, K and V side by side in one row).
pub fn attention_fused_args() -> AttnArgs {
    let (n, heads, d) = (29, 2, 72);
    AttnArgs::fused(n, heads, d, 3 * heads * d, 0).with_scale(0.1)
}

/// Prefill attention: causal GQA (with a position offset, as a later prefill chunk against the cache) and
/// SigLIP's bidirectional case with head size 72.
pub async fn attention_suite(ctx: &Context, act: DType) {
    for (ci, &case) in ATTENTION_CASES.iter().enumerate() {
        let (n_q, n_kv, heads, kv_heads, d, causal, pos) = case;
        let mut rng = Rng::new(300 + ci as u64);
        // Q token-major; K and V in a head-major cache of capacity n_kv + 3 (as the KV cache is laid out).
        let cap = n_kv + 3;
        let q = as_stored(&rng.normals(n_q * heads * d, 1.0), act);
        let k = as_stored(&rng.normals(kv_heads * cap * d, 1.0), act);
        let v = as_stored(&rng.normals(kv_heads * cap * d, 1.0), act);
        let qt = upload(ctx, &q, &[n_q, heads * d], act);
        let kt = upload(ctx, &k, &[kv_heads, cap, d], act);
        let vt = upload(ctx, &v, &[kv_heads, cap, d], act);
        let o = poisoned(ctx, &[n_q, heads * d], act);
        let args = attention_case_args(case);
        let scale = args.scale as f64;
        let want = r::attention(&q, n_q, heads, kv_heads, d, n_kv, |g, s, i| (k[(g * cap + s) * d + i], v[(g * cap + s) * d + i]), causal, pos, scale);
        run(ctx, |rec| attention::attention(rec, &qt, &kt, &vt, &o, &args)).await;
        assert_close(&format!("attention {act:?} case {ci}"), &read_guarded(ctx, &o).await, &want, tol(act, true));
        if d == 128 {
            // attention() took the tiled kernel where the device allows; the generic one must agree too
            let o = poisoned(ctx, &[n_q, heads * d], act);
            run(ctx, |rec| attention::attention_generic(rec, &qt, &kt, &vt, &o, &args, act)).await;
            assert_close(&format!("attention generic {act:?} case {ci}"), &read_guarded(ctx, &o).await, &want, tol(act, true));
        }
    }
}

/// Scores that rise along the keys by far more than e^8 a step (each key's row scaled by 1 + s/8): the
/// cooperative-matrix kernel keeps a row's running maximum until new scores exceed it by 8, and must then
/// scale its partial output, which this makes happen many times a row; causal after a context and
/// bidirectional, head sizes 128 and 72.
pub async fn attention_rising_scores(ctx: &Context, act: DType) {
    for (ci, &(n_q, n_kv, d, causal, pos)) in [(70usize, 200usize, 128usize, true, 130usize), (50, 150, 72, false, 0)].iter().enumerate() {
        let (heads, kv_heads) = (4, 2);
        let mut rng = Rng::new(360 + ci as u64);
        let cap = n_kv + 3;
        let q = as_stored(&rng.normals(n_q * heads * d, 1.0), act);
        let k: Vec<f32> = rng.normals(kv_heads * cap * d, 1.0).iter().enumerate().map(|(i, v)| v * (1.0 + ((i / d) % cap) as f32 / 8.0)).collect();
        let k = as_stored(&k, act);
        let v = as_stored(&rng.normals(kv_heads * cap * d, 1.0), act);
        let qt = upload(ctx, &q, &[n_q, heads * d], act);
        let kt = upload(ctx, &k, &[kv_heads, cap, d], act);
        let vt = upload(ctx, &v, &[kv_heads, cap, d], act);
        let o = poisoned(ctx, &[n_q, heads * d], act);
        let args = attention_case_args((n_q, n_kv, heads, kv_heads, d, causal, pos));
        let want = r::attention(&q, n_q, heads, kv_heads, d, n_kv, |g, s, i| (k[(g * cap + s) * d + i], v[(g * cap + s) * d + i]), causal, pos, args.scale as f64);
        run(ctx, |rec| attention::attention(rec, &qt, &kt, &vt, &o, &args)).await;
        assert_close(&format!("attention, rising scores, {act:?} case {ci}"), &read_guarded(ctx, &o).await, &want, tol(act, true));
    }
}

/// Token-major K/V (SigLIP's projections side by side in one qkv row) through the strides.
pub async fn attention_fused_qkv(ctx: &Context, act: DType) {
    let args = attention_fused_args();
    let (n, heads, d) = (args.n_q as usize, args.n_heads as usize, args.head_dim as usize);
    let width = 3 * heads * d;
    let mut rng = Rng::new(350);
    let qkv = as_stored(&rng.normals(n * width, 1.0), act);
    let t = upload(ctx, &qkv, &[n, width], act);
    let o = poisoned(ctx, &[n, heads * d], act);
    run(ctx, |rec| attention::attention(rec, &t, &t, &t, &o, &args)).await;
    let got = read_guarded(ctx, &o).await;
    let q: Vec<f32> = (0..n).flat_map(|s| qkv[s * width..s * width + heads * d].to_vec()).collect();
    let want = r::attention(&q, n, heads, heads, d, n, |g, s, i| (qkv[s * width + heads * d + g * d + i], qkv[s * width + 2 * heads * d + g * d + i]), false, 0, 0.1);
    assert_close(&format!("attention fused qkv {act:?}"), &got, &want, tol(act, true));
}

/// Decode attention over a head-major KV cache, several split counts, Q inside a fused qkv row: one query
/// seeing every key, and a few causal queries at the end of a long cache (a short prompt after a context).
pub async fn decode_suite(ctx: &Context, act: DType) {
    // (n_kv, heads, kv_heads, d, queries): one query sees all n_kv keys; several are causal, the last at n_kv − 1
    let cases = [(1, 2, 1, 16, 1), (130, 10, 2, 128, 1), (1000, 10, 2, 128, 1), (257, 4, 4, 64, 1), (5000, 2, 1, 16, 1), (4100, 16, 8, 64, 1), (1000, 10, 2, 128, 5), (257, 4, 4, 64, 3), (4100, 16, 8, 64, 7)];
    for (ci, &(n_kv, heads, kv_heads, d, n_q)) in cases.iter().enumerate() {
        let mut rng = Rng::new(400 + ci as u64);
        let cap = n_kv + 5;
        let q_off = 8;
        let row = q_off + heads * d + 2 * kv_heads * d;
        let q = as_stored(&rng.normals(n_q * row, 1.0), act);
        let k = as_stored(&rng.normals(kv_heads * cap * d, 1.0), act);
        let v = as_stored(&rng.normals(kv_heads * cap * d, 1.0), act);
        let qt = upload(ctx, &q, &[n_q, row], act);
        let kt = upload(ctx, &k, &[kv_heads, cap, d], act);
        let vt = upload(ctx, &v, &[kv_heads, cap, d], act);
        let scratch = Tensor::empty(ctx, &[attention::decode_scratch_len(n_q as u32, heads as u32, kv_heads as u32, d as u32, n_kv as u32)], DType::F32).unwrap();
        let scale = 1.0 / (d as f64).sqrt();
        let causal = n_q > 1;
        let pos = n_kv - n_q;
        let args = AttnArgs::over_cache(heads as u32, kv_heads as u32, d as u32, cap as u32, n_q as u32, pos as u32)
            .with_q(row as u32, q_off as u32)
            .with_causal(causal)
            .with_scale(scale as f32);
        let qs: Vec<f32> = (0..n_q).flat_map(|i| q[i * row + q_off..i * row + q_off + heads * d].to_vec()).collect();
        let want = r::attention(&qs, n_q, heads, kv_heads, d, n_kv, |g, s, i| (k[(g * cap + s) * d + i], v[(g * cap + s) * d + i]), causal, pos, scale);
        // the model's split, then (case 5) the smaller blocks and the other workgroup counts that
        // `--decode-block` and `--decode-workgroups` measure, on the same scratch: 22 to 65 splits, several
        // blocks a split or one
        let lanes = attention::decode_lanes(act, d as u32);
        let own = attention::decode_block(lanes, None).unwrap();
        let mut tunings = vec![DecodeTuning::default()];
        if ci == 5 {
            tunings.extend(attention::DECODE_BLOCKS.into_iter().filter(|b| *b != own && b % lanes == 0).map(|b| DecodeTuning { block: Some(b), workgroups: None }));
            tunings.extend(attention::DECODE_WORKGROUPS[1..].iter().map(|&w| DecodeTuning { block: Some(64), workgroups: Some(w) }));
        }
        for tuning in tunings {
            let o = poisoned(ctx, &[n_q, heads * d], act);
            run(ctx, |rec| attention::attention_decode_tuned(rec, &qt, &kt, &vt, &o, &scratch, &args, tuning, None, None)).await;
            let got = read_guarded(ctx, &o).await;
            assert_close(&format!("decode attention {act:?} n_kv={n_kv} heads={heads}/{kv_heads} d={d} queries={n_q} {tuning:?}"), &got, &want, tol(act, true));
        }
        // the merge preparing o's input (x prepared once): the same output, and its blocks as the fused
        // matvec would quantize them; refused for several queries
        if d % 32 == 0 {
            let xp = linear::PreparedX::new(ctx, heads * d).unwrap();
            let what = format!("decode attention prepared {act:?} n_kv={n_kv} heads={heads}/{kv_heads} d={d} queries={n_q}");
            let o = poisoned(ctx, &[n_q, heads * d], act);
            if n_q == 1 {
                run(ctx, |rec| attention::attention_decode_prep(rec, &qt, &kt, &vt, &o, &scratch, &args, &xp)).await;
                let got = read_guarded(ctx, &o).await;
                assert_close(&what, &got, &want, tol(act, true));
                check_prepared(ctx, &what, &xp, &got).await;
            } else {
                let mut rec = varco_web::gpu::Recorder::new(ctx);
                let e = attention::attention_decode_prep(&mut rec, &qt, &kt, &vt, &o, &scratch, &args, &xp).expect_err("several queries prepared").to_string();
                assert!(e.contains("one query"), "{what}: {e}");
            }
        }
    }
}

pub async fn rope_suite(ctx: &Context, act: DType) {
    // (tokens, heads, d, pos_offset, columns before the heads, row width)
    for (ci, &(t, heads, d, pos, off, extra)) in [(1, 1, 16, 0, 0, 0), (5, 3, 128, 0, 0, 0), (7, 2, 128, 32000, 128, 64), (3, 5, 16, 777, 16, 48)].iter().enumerate() {
        let mut rng = Rng::new(500 + ci as u64);
        let stride = off + heads * d + extra;
        let x = as_stored(&rng.normals(t * stride, 1.0), act);
        let xt = upload(ctx, &x, &[t, stride], act);
        let rope = rope::Rope::new(ctx, d as u32, 1e6).unwrap();
        run(ctx, |rec| rope.apply(rec, &xt, t as u32, heads as u32, off as u32, pos as u32)).await;
        let got = xt.to_f32(ctx).await.unwrap();
        let want = r::rope(&x, t, heads, d, stride, off, pos, &rope::inv_freq(d as u32, 1e6));
        assert_close(&format!("rope {act:?} case {ci}"), &got, &want, tol(act, false));
    }
}

pub async fn norm_suite(ctx: &Context, act: DType) {
    for (ci, &(rows, n)) in [(1, 1), (3, 17), (2, 1000), (5, 1152), (1, 5120)].iter().enumerate() {
        let mut rng = Rng::new(600 + ci as u64);
        let x: Vec<f32> = as_stored(&rng.normals(rows * n, 2.0).iter().map(|v| v + 0.5).collect::<Vec<_>>(), act);
        let w = rng.normals(n, 1.0);
        let b = rng.normals(n, 1.0);
        let xt = upload(ctx, &x, &[rows, n], act);
        let wt = upload(ctx, &w, &[n], DType::F32);
        let bt = upload(ctx, &b, &[n], DType::F32);
        let y = poisoned(ctx, &[rows, n], act);
        run(ctx, |rec| norm::rms_norm(rec, &xt, &wt, &y, 1e-6)).await;
        assert_close(&format!("rms_norm {act:?} {rows}x{n}"), &read_guarded(ctx, &y).await, &r::rms_norm(&x, &w, n, 1e-6), tol(act, n > 512));
        let y = poisoned(ctx, &[rows, n], act);
        run(ctx, |rec| norm::layer_norm(rec, &xt, &wt, &bt, &y, 1e-6)).await;
        assert_close(&format!("layer_norm {act:?} {rows}x{n}"), &read_guarded(ctx, &y).await, &r::layer_norm(&x, &w, &b, n, 1e-6), tol(act, n > 512));
    }
}

pub async fn elementwise_suite(ctx: &Context, act: DType) {
    for (ci, &(rows, width)) in [(1, 1), (3, 333), (7, 1153)].iter().enumerate() {
        let n = rows * width;
        let mut rng = Rng::new(700 + ci as u64);
        let a = as_stored(&rng.normals(n, 3.0), act);
        let b = as_stored(&rng.normals(n, 1.0), act);
        let bias = rng.normals(width, 1.0);
        let check = |what: &str, got: Vec<f32>, want: Vec<f64>| assert_close(&format!("{what} {act:?} {rows}x{width}"), &got, &want, tol(act, false));

        let t = upload(ctx, &a, &[rows, width], act);
        let bt = upload(ctx, &b, &[rows, width], act);
        run(ctx, |rec| elementwise::add(rec, &t, &bt)).await;
        check("add", t.to_f32(ctx).await.unwrap(), a.iter().zip(&b).map(|(x, y)| *x as f64 + *y as f64).collect());

        let t = upload(ctx, &a, &[rows, width], act);
        let biast = upload(ctx, &bias, &[width], DType::F32);
        run(ctx, |rec| elementwise::bias_add(rec, &t, &biast)).await;
        check("bias", t.to_f32(ctx).await.unwrap(), a.iter().enumerate().map(|(i, x)| *x as f64 + bias[i % width] as f64).collect());

        let t = upload(ctx, &a, &[rows, width], act);
        run(ctx, |rec| elementwise::gelu_tanh(rec, &t)).await;
        check("gelu_tanh", t.to_f32(ctx).await.unwrap(), a.iter().map(|&x| r::gelu_tanh(x as f64)).collect());

        let t = upload(ctx, &a, &[rows, width], act);
        run(ctx, |rec| elementwise::gelu_erf(rec, &t)).await;
        check("gelu_erf", t.to_f32(ctx).await.unwrap(), a.iter().map(|&x| r::gelu_erf(x as f64)).collect());

        let gu = as_stored(&rng.normals(2 * n, 2.0), act);
        let gut = upload(ctx, &gu, &[rows, 2 * width], act);
        let y = poisoned(ctx, &[rows, width], act);
        run(ctx, |rec| elementwise::silu_mul(rec, &gut, &y)).await;
        let want = (0..n).map(|i| {
            let (t, c) = (i / width, i % width);
            r::silu(gu[t * 2 * width + c] as f64) * gu[t * 2 * width + width + c] as f64
        });
        check("silu_mul", read_guarded(ctx, &y).await, want.collect());
    }
}

pub async fn embed_suite(ctx: &Context, act: DType, format: WeightFormat) {
    for (ci, &(vocab, k, limit)) in [(50, 32, u64::MAX), (301, 88, 4096), (1000, 144, 16384)].iter().enumerate() {
        let mut rng = Rng::new(800 + ci as u64);
        let (w, wv) = random_weight(ctx, &mut rng, vocab, k, format, limit);
        let ids: Vec<u32> = (0..13).map(|i| if i == 0 { vocab as u32 - 1 } else { rng.below(vocab as u64) as u32 }).collect();
        let idt = Tensor::from_u32(ctx, &ids, &[ids.len()]).unwrap();
        let out = poisoned(ctx, &[ids.len(), k], act);
        run(ctx, |rec| embed::embed(rec, &idt, &w, &out)).await;
        let want: Vec<f64> = ids.iter().flat_map(|&id| wv[id as usize * k..(id as usize + 1) * k].iter().map(|&v| as_stored(&[v], act)[0] as f64)).collect();
        assert_close(&format!("embed {format:?} {act:?} vocab={vocab} parts={}", w.parts.len()), &read_guarded(ctx, &out).await, &want, 1e-6);
    }
}

pub async fn patch_embed_suite(ctx: &Context, act: DType) {
    let g = patch_embed::PatchGeometry { size: 384, patch: 14, channels: 3 };
    let (tiles, hidden) = (2, 16);
    let mut rng = Rng::new(900);
    let pixels: Vec<f32> = (0..tiles * 3 * 384 * 384).map(|_| (rng.uniform() * 2.0 - 1.0) as f32).collect();
    let (w, wv) = random_weight(ctx, &mut rng, hidden, g.cols() as usize, WeightFormat::F16, u64::MAX);
    let bias = rng.normals(hidden, 1.0);
    let pt = upload(ctx, &pixels, &[tiles, 3, 384, 384], DType::F32);
    let bt = upload(ctx, &bias, &[hidden], DType::F32);
    let rows = tiles * 729;
    let cols = Tensor::empty(ctx, &[rows, g.cols() as usize], act).unwrap();
    let out = poisoned(ctx, &[rows, hidden], act);
    run(ctx, |rec| patch_embed::patch_embed(rec, &pt, &w, &bt, &cols, &out, g)).await;
    let px = as_stored(&pixels, act);
    let want = r::patch_conv(&px, &wv, &bias, tiles, 3, 384, 14, hidden);
    assert_close(&format!("patch_embed {act:?}"), &read_guarded(ctx, &out).await, &want, tol(act, true));
}

pub async fn resize_suite(ctx: &Context, act: DType) {
    for (ci, &(h, w, c, oh, ow)) in [(1, 1, 1, 1, 1), (5, 7, 3, 3, 4), (54, 81, 8, 40, 61), (3, 2, 5, 7, 9)].iter().enumerate() {
        let mut rng = Rng::new(1000 + ci as u64);
        let x = as_stored(&rng.normals(h * w * c, 1.0), act);
        let xt = upload(ctx, &x, &[h, w, c], act);
        let y = poisoned(ctx, &[oh, ow, c], act);
        run(ctx, |rec| resize::bilinear(rec, &xt, &y, (h as u32, w as u32), (oh as u32, ow as u32), c as u32)).await;
        assert_close(&format!("bilinear {act:?} {h}x{w}->{oh}x{ow}"), &read_guarded(ctx, &y).await, &r::bilinear(&x, h, w, c, oh, ow), tol(act, false));
    }
}

pub async fn sample_suite(ctx: &Context, act: DType) {
    let settings = [
        sample::SampleArgs::ARGMAX,
        sample::SampleArgs { temperature: 0.7, top_k: 0, top_p: 1.0 },
        sample::SampleArgs { temperature: 1.0, top_k: 40, top_p: 1.0 },
        sample::SampleArgs { temperature: 0.8, top_k: 0, top_p: 0.9 },
        sample::SampleArgs { temperature: 1.3, top_k: 50, top_p: 0.8 },
        sample::SampleArgs { temperature: 1.0, top_k: 5, top_p: 0.0 },
    ];
    for (ci, &n) in [1usize, 7, 1000, 151_680].iter().enumerate() {
        let mut rng = Rng::new(1100 + ci as u64);
        let mut logits = as_stored(&rng.normals(n, 3.0), act);
        if n > 7 {
            // a tie for the maximum: greedy must return the first
            let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let i = rng.below(n as u64 / 2) as usize;
            logits[i] = m + 1.0;
            logits[n - 1 - i / 3] = m + 1.0;
        }
        let lt = upload(ctx, &logits, &[n], act);
        let scratch = Tensor::empty(ctx, &[sample::SCRATCH_LEN], DType::U32).unwrap();
        // the one-workgroup sampler's greedy choice, as the two-pass one's below
        let out = poisoned(ctx, &[1], DType::U32);
        run(ctx, |rec| sample::sample_one_workgroup(rec, &lt, &out, sample::SampleArgs::ARGMAX, 0.5)).await;
        assert_eq!(out.to_u32(ctx).await.unwrap()[0] as usize, r::sample(&logits, 0.0, 0, 1.0, 0.5).pick, "one-workgroup argmax {act:?} n={n}");
        for s in settings {
            for draw in 0..3 {
                let u = rng.uniform() as f32;
                let out = poisoned(ctx, &[1], DType::U32);
                run(ctx, |rec| sample::sample(rec, &lt, &out, &scratch, s, u)).await;
                let pick = out.to_u32(ctx).await.unwrap()[0] as usize;
                let want = r::sample(&logits, s.temperature as f64, s.top_k as usize, s.top_p as f64, u as f64);
                assert!(pick < n && want.kept[pick], "sample {act:?} n={n} {s:?} u={u}: picked {pick}, outside the kept set");
                assert!(
                    pick == want.pick || want.margin < 1e-4,
                    "sample {act:?} n={n} {s:?} draw {draw} u={u}: picked {pick}, reference {} (margin {:.2e})",
                    want.pick,
                    want.margin
                );
            }
        }
    }
}
