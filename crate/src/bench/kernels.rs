//! `varco bench kernels`: every kernel at VARCO-VISION-14B's real shapes (Qwen2.5-14B: hidden 5120, FFN
//! 13824, 40 query / 8 KV heads of 128, vocab 151,680; SigLIP: 1152 wide, MLP 4304, 16 heads of 72, 729
//! tokens a tile), timed on the GPU with timestamp queries (wall clock where the device has none; median of
//! five batches, after a one-second warm-up that lifts the GPU out of its idle clocks), with
//! bytes moved, FLOPs and the fraction of a bandwidth or compute roofline. A benchmark, never a test.
//!
//! Weights are random codes (speed does not depend on values). Where one weight would fit in the GPU's
//! last-level cache, several copies are made and the iterations rotate through them, so the figures are
//! memory figures, not cache figures.

use std::time::Instant;

use half::f16;

use crate::gpu::tensor::Weight;
use crate::gpu::{Context, DType, Recorder, Tensor};
use crate::kernels::attention::{self, AttnArgs};
use crate::kernels::linear::{self, MatvecShape};
use crate::kernels::{bandwidth, elementwise, embed, norm, patch_embed, resize, rope, sample};
use crate::quant::{self, QFormat, QMatrix, GROUP};
use crate::Result;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Dispatches timed per kernel (in one command buffer).
    pub iters: u32,
    /// Only kernels whose name contains this.
    pub filter: Option<String>,
    /// Activation type (F16 where the device has shader-f16, by default).
    pub act: DType,
    /// Bandwidth roofline, GB/s (H200: 4350, what PyTorch reads there).
    pub peak_gbs: f64,
    /// Compute roofline, TFLOP/s of f32 without tensor cores (H200 SXM: 67).
    pub peak_tflops: f64,
    /// Compute roofline of the tensor-core kernels, dense f16 with f32 accumulation (H100/H200 SXM: 989).
    pub peak_tensor_tflops: f64,
    /// Bytes of weight copies to rotate through, to defeat caches.
    pub rotate_bytes: u64,
    /// Matrix-vector shapes to compare (workgroup size, rows per workgroup); empty: the shape the model
    /// picks for each matrix.
    pub matvec_shapes: Vec<MatvecShape>,
    /// Shapes of the decode step's fused kernel to compare; empty: the model's pick for each matrix.
    pub fused_shapes: Vec<linear::FusedShape>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32s(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale).collect()
    }
}

/// A q4 weight of random codes with small scales, built without quantizing.
fn random_q4(ctx: &Context, rng: &mut Rng, n: usize, k: usize) -> Result<Weight> {
    let g = k.div_ceil(GROUP);
    let qs: Vec<u32> = (0..n * g * 4).map(|_| rng.next() as u32).collect();
    let scales: Vec<f16> = (0..(n * g).next_multiple_of(2)).map(|i| f16::from_f32(0.002 + (i % 7) as f32 * 1e-4)).collect();
    Weight::from_q(ctx, &QMatrix { format: QFormat::Q4, n, k, qs, scales })
}

/// A q8 weight of random codes with small scales.
fn random_q8(ctx: &Context, rng: &mut Rng, n: usize, k: usize) -> Result<Weight> {
    let g = k.div_ceil(GROUP);
    let qs: Vec<u32> = (0..n * g * 8).map(|_| rng.next() as u32).collect();
    let scales: Vec<f16> = (0..(n * g).next_multiple_of(2)).map(|i| f16::from_f32(0.0002 + (i % 7) as f32 * 1e-5)).collect();
    Weight::from_q(ctx, &QMatrix { format: QFormat::Q8, n, k, qs, scales })
}

/// `copies` weights (at least one, enough to defeat the caches within `rotate` bytes) made by `make`.
fn rotation(rotate: u64, mut make: impl FnMut() -> Result<Weight>) -> Result<Vec<Weight>> {
    let one = make()?;
    let copies = (rotate / one.gpu_bytes()).clamp(1, 64) as usize;
    let mut ws = vec![one];
    for _ in 1..copies {
        ws.push(make()?);
    }
    Ok(ws)
}

fn random_f16(ctx: &Context, rng: &mut Rng, n: usize, k: usize) -> Result<Weight> {
    let v: Vec<f16> = rng.f32s(n * k, 0.05).into_iter().map(f16::from_f32).collect();
    Weight::from_f16(ctx, &v, n, k)
}

fn act_tensor(ctx: &Context, rng: &mut Rng, shape: &[usize], act: DType) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_f32(ctx, &rng.f32s(n, 1.0), shape, act)
}

struct Row {
    name: String,
    shape: String,
    secs: f64,
    bytes: f64,
    flops: f64,
    bound: &'static str,
}

/// Times `iters` recordings of `f` (iteration index given) in one command buffer; the median over five
/// such batches, after one warm-up batch.
fn time(ctx: &Context, iters: u32, mut f: impl FnMut(&mut Recorder, u32) -> Result<()>) -> Result<f64> {
    let mut warm = Recorder::new(ctx);
    f(&mut warm, 0)?;
    warm.submit()?;
    pollster::block_on(ctx.sync())?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let mut rec = Recorder::new(ctx);
        for i in 0..iters {
            f(&mut rec, i)?;
        }
        let t0 = Instant::now();
        let gpu = pollster::block_on(rec.submit_timed())?;
        times.push(gpu.unwrap_or(t0.elapsed().as_secs_f64()) / iters as f64);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(times[2])
}

/// About a second of heavy work, so that the GPU leaves its idle clocks before anything is timed.
fn warm_up(ctx: &Context, rng: &mut Rng, act: DType) -> Result<()> {
    let w = random_f16(ctx, rng, 4096, 4096)?;
    let x = act_tensor(ctx, rng, &[2048, 4096], act)?;
    let y = Tensor::empty(ctx, &[2048, 4096], act)?;
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < 1.0 {
        let mut rec = Recorder::new(ctx);
        for _ in 0..4 {
            linear::matmul(&mut rec, &x, &w, None, &y)?;
        }
        rec.submit()?;
        pollster::block_on(ctx.sync())?;
    }
    Ok(())
}

pub fn run_kernels(ctx: &Context, o: &BenchOptions) -> Result<String> {
    let mut rows: Vec<Row> = Vec::new();
    let mut rng = Rng(0x2545F4914F6CDD1D);
    let act = o.act;
    // a section runs when its name contains the filter or the filter names a part of it ("attention decode"
    // runs that row of the attention section and no other)
    let want = |name: &str| o.filter.as_deref().is_none_or(|f| name.contains(f) || f.starts_with(name));
    let asz = act.size() as f64;
    warm_up(ctx, &mut rng, act)?;

    // --- q4 matrix × vector (decode), fused shapes as the model uses them ---
    let mv_shapes: [(&str, usize, usize); 6] = [
        ("q/o proj", 5120, 5120),
        ("k/v proj", 1024, 5120),
        ("qkv fused", 7168, 5120),
        ("gate/up fused", 27648, 5120),
        ("down", 5120, 13824),
        ("lm_head", 151_680, 5120),
    ];
    for (label, n, k) in mv_shapes {
        if !want("matvec") {
            break;
        }
        let one = random_q4(ctx, &mut rng, n, k)?;
        let wbytes = one.gpu_bytes();
        let copies = (o.rotate_bytes / wbytes).clamp(1, 64) as usize;
        let mut ws = vec![one];
        for _ in 1..copies {
            ws.push(random_q4(ctx, &mut rng, n, k)?);
        }
        let x = act_tensor(ctx, &mut rng, &[1, k], act)?;
        let y = Tensor::empty(ctx, &[1, n], act)?;
        let shapes = if o.matvec_shapes.is_empty() { vec![linear::matvec_shape(n, k)] } else { o.matvec_shapes.clone() };
        for &shape in &shapes {
            let secs = time(ctx, o.iters, |rec, i| linear::matvec(rec, &x, &ws[i as usize % ws.len()], None, &y, shape))?;
            rows.push(Row {
                name: format!("matvec q4 wg{} r{}", shape.wg, shape.rows),
                shape: format!("{label} {n}×{k}"),
                secs,
                bytes: wbytes as f64 + (k + n) as f64 * asz,
                flops: 2.0 * (n * k) as f64,
                bound: "bw",
            });
        }
    }

    // --- the decode step's fused matrix × vector products (matvec_fused.wgsl), as the model runs them ---
    if want("fused") {
        let (h, ffn, heads, kvh, d, vocab) = (5120usize, 13824usize, 40u32, 8u32, 128u32, 151_680usize);
        let x = act_tensor(ctx, &mut rng, &[1, h], act)?;
        let xf = act_tensor(ctx, &mut rng, &[1, ffn], act)?;
        let resid = act_tensor(ctx, &mut rng, &[1, h], act)?;
        let q = Tensor::empty(ctx, &[1, (heads + 2 * kvh) as usize * d as usize], act)?;
        let kc = Tensor::empty(ctx, &[kvh as usize, 1024, d as usize], act)?;
        let vc = Tensor::empty(ctx, &[kvh as usize, 1024, d as usize], act)?;
        let mid = Tensor::empty(ctx, &[1, ffn], act)?;
        let logits = Tensor::empty(ctx, &[1, vocab], act)?;
        let qkv_rows = ((heads + 2 * kvh) * d) as usize;
        let bias = Tensor::from_f32(ctx, &rng.f32s(qkv_rows, 0.1), &[qkv_rows], DType::F32)?;
        let rope = rope::Rope::new(ctx, d, 1e6)?;
        let qkv = rotation(o.rotate_bytes, || random_q4(ctx, &mut rng, qkv_rows, h))?;
        let ow = rotation(o.rotate_bytes, || random_q4(ctx, &mut rng, h, h))?;
        let gu = rotation(o.rotate_bytes, || random_q4(ctx, &mut rng, 2 * ffn, h))?;
        let down = rotation(o.rotate_bytes, || random_q4(ctx, &mut rng, h, ffn))?;
        let head = rotation(o.rotate_bytes, || random_q8(ctx, &mut rng, vocab, h))?;
        let eps = Some(1e-6);
        // x already quantized for the :xq8 bound (its contents do not matter to the time): codes and scales of
        // the 5,120- and 13,824-wide inputs
        let (xq_h, xq_f) = (linear::PreparedX::new(ctx, h)?, linear::PreparedX::new(ctx, ffn)?);
        let fused = |rec: &mut Recorder, x: &Tensor, xq: &linear::PreparedX, w: &Weight, bias: Option<&Tensor>, eps: Option<f32>, mode: linear::Fused, shape: linear::FusedShape| {
            if shape.math == linear::FusedMath::Xq8 && w.format == crate::gpu::tensor::WeightFormat::Q4 {
                linear::matvec_fused_prep(rec, x, linear::Prep { input: Some(xq), output: None }, w, bias, eps, mode, shape)
            } else {
                let shape = if shape.math == linear::FusedMath::Xq8 { linear::FusedShape { math: linear::FusedMath::Dot4, ..shape } } else { shape };
                linear::matvec_fused(rec, x, w, bias, eps, mode, shape)
            }
        };
        // making the copies above keeps the CPU busy for seconds and lets the GPU fall back to its idle
        // clocks: the first shape timed after them ran 3–5× slower than the same shape timed again
        warm_up(ctx, &mut rng, act)?;
        // by default the shape the model picks for each matrix; one asked-for shape once; two or more twice,
        // the second time in reverse order (to show any drift between the first and the second measurement)
        let asked: Vec<Option<linear::FusedShape>> = match o.fused_shapes.len() {
            0 => vec![None],
            1 => vec![Some(o.fused_shapes[0])],
            _ => o.fused_shapes.iter().chain(o.fused_shapes.iter().rev()).map(|&s| Some(s)).collect(),
        };
        for (pass, &asked) in asked.iter().enumerate() {
            let again = if pass >= o.fused_shapes.len().max(1) { " (again)" } else { "" };
            let pick = |w: &Weight| asked.unwrap_or_else(|| linear::fused_shape(ctx, w));
            let mut row = |label: &str, ws: &[Weight], k: usize, n: usize, secs: f64| {
                let s = pick(&ws[0]);
                let name = format!("fused {s}{again}");
                rows.push(Row { name, shape: label.into(), secs, bytes: ws[0].gpu_bytes() as f64 + (k + n) as f64 * asz, flops: 2.0 * (n * k) as f64, bound: "bw" });
            };
            let shape = pick(&qkv[0]);
            let secs = time(ctx, o.iters, |rec, i| {
                let mode = linear::Fused::RopeKv { q: &q, k: &kc, v: &vc, inv_freq: rope.inv_freq(), heads, kv_heads: kvh, head_dim: d, pos: 1000 };
                fused(rec, &x, &xq_h, &qkv[i as usize % qkv.len()], Some(&bias), eps, mode, shape)
            })?;
            row("norm+qkv+bias+rope+kv 7168×5120 q4", &qkv, h, qkv_rows, secs);
            let shape = pick(&ow[0]);
            let secs = time(ctx, o.iters, |rec, i| fused(rec, &x, &xq_h, &ow[i as usize % ow.len()], None, None, linear::Fused::Residual { y: &resid }, shape))?;
            row("o_proj+residual 5120×5120 q4", &ow, h, h, secs);
            let shape = pick(&gu[0]);
            let secs = time(ctx, o.iters, |rec, i| fused(rec, &x, &xq_h, &gu[i as usize % gu.len()], None, eps, linear::Fused::Glu { y: &mid }, shape))?;
            row("norm+gate/up+silu·up 27648×5120 q4", &gu, h, 2 * ffn, secs);
            let shape = pick(&down[0]);
            let secs = time(ctx, o.iters, |rec, i| fused(rec, &xf, &xq_f, &down[i as usize % down.len()], None, None, linear::Fused::Residual { y: &resid }, shape))?;
            row("down+residual 5120×13824 q4", &down, ffn, h, secs);
            let shape = pick(&head[0]);
            let secs = time(ctx, o.iters.div_ceil(4), |rec, i| fused(rec, &x, &xq_h, &head[i as usize % head.len()], None, eps, linear::Fused::Plain { y: &logits }, shape))?;
            row("norm+lm_head 151680×5120 q8", &head, h, vocab, secs);
            // with greedy's first pass in its epilogue (Fused::PlainArgmax), as the model runs it
            let maxima = Tensor::empty(ctx, &[2 * linear::argmax_slots(&head[0], shape)], DType::U32)?;
            let secs = time(ctx, o.iters.div_ceil(4), |rec, i| linear::matvec_fused(rec, &x, &head[i as usize % head.len()], None, eps, linear::Fused::PlainArgmax { y: &logits, maxima: &maxima }, shape))?;
            row("norm+lm_head+greedy's first pass 151680×5120 q8", &head, h, vocab, secs);
        }
        // x prepared once, as the model runs it where its shapes take DOT4's products (DecodeShapes::prepare):
        // q/k/v, gate/up and down read the row the matrix before prepared; o, gate/up and down prepare theirs
        let pick = |w: &Weight| linear::fused_shape(ctx, w);
        if o.fused_shapes.is_empty() && [&qkv[0], &ow[0], &gu[0], &down[0]].iter().all(|w| pick(w).math == linear::FusedMath::Dot4) {
            let prep = |input, output| linear::Prep { input, output };
            let mut row = |label: &str, ws: &[Weight], k: usize, n: usize, secs: f64| {
                let name = format!("fused {} x prepared", pick(&ws[0]));
                rows.push(Row { name, shape: label.into(), secs, bytes: ws[0].gpu_bytes() as f64 + (k + n) as f64 * asz, flops: 2.0 * (n * k) as f64, bound: "bw" });
            };
            let secs = time(ctx, o.iters, |rec, i| {
                let mode = linear::Fused::RopeKv { q: &q, k: &kc, v: &vc, inv_freq: rope.inv_freq(), heads, kv_heads: kvh, head_dim: d, pos: 1000 };
                linear::matvec_fused_prep(rec, &x, prep(Some(&xq_h), None), &qkv[i as usize % qkv.len()], Some(&bias), eps, mode, pick(&qkv[0]))
            })?;
            row("norm+qkv+bias+rope+kv 7168×5120 q4", &qkv, h, qkv_rows, secs);
            let secs = time(ctx, o.iters, |rec, i| linear::matvec_fused_prep(rec, &x, prep(None, Some(&xq_h)), &ow[i as usize % ow.len()], None, None, linear::Fused::Residual { y: &resid }, pick(&ow[0])))?;
            row("o_proj+residual 5120×5120 q4", &ow, h, h, secs);
            let secs = time(ctx, o.iters, |rec, i| linear::matvec_fused_prep(rec, &x, prep(Some(&xq_h), Some(&xq_f)), &gu[i as usize % gu.len()], None, eps, linear::Fused::Glu { y: &mid }, pick(&gu[0])))?;
            row("norm+gate/up+silu·up 27648×5120 q4", &gu, h, 2 * ffn, secs);
            let secs = time(ctx, o.iters, |rec, i| linear::matvec_fused_prep(rec, &xf, prep(Some(&xq_f), Some(&xq_h)), &down[i as usize % down.len()], None, None, linear::Fused::Residual { y: &resid }, pick(&down[0])))?;
            row("down+residual 5120×13824 q4", &down, ffn, h, secs);
        }
    }

    // --- q4 matrix × matrix (prefill) ---
    for (label, m, n, k) in [("qkv fused", 4096usize, 7168usize, 5120usize), ("gate/up fused", 4096, 27648, 5120), ("down", 4096, 5120, 13824)] {
        if !want("matmul q4") {
            break;
        }
        let w = random_q4(ctx, &mut rng, n, k)?;
        let x = act_tensor(ctx, &mut rng, &[m, k], act)?;
        let y = Tensor::empty(ctx, &[m, n], act)?;
        for tile in [64, linear::matmul_tile(ctx)] {
            let secs = time(ctx, o.iters.div_ceil(20).max(2), |rec, _| linear::matmul_with_tile(rec, &x, &w, None, &y, tile))?;
            rows.push(Row {
                name: format!("matmul q4 tile{tile}{} {}", if linear::matmul_packed(ctx, act) { " packed-f16" } else { "" }, ctx.tiled_matmul.label()),
                shape: format!("{label} {m}×{n}×{k}"),
                secs,
                bytes: w.gpu_bytes() as f64 + (m * (k + n)) as f64 * asz,
                flops: 2.0 * (m * n * k) as f64,
                bound: "flop",
            });
            if tile == linear::matmul_tile(ctx) {
                break;
            }
        }
        if linear::matmul_coop(ctx, act) {
            // the tensor-core tier, checked against the tiled kernel's output on the same inputs first
            let tiled = pollster::block_on(y.to_f32(ctx))?;
            for shape in linear::COOP_SHAPES {
                let (kt, ri, db) = (shape.kt, shape.ri, if shape.bufs == 2 { " db" } else { "" });
                y.fill_bytes(ctx, 0xff);
                let mut rec = Recorder::new(ctx);
                linear::matmul_coop_with(&mut rec, &x, &w, None, &y, shape)?;
                rec.submit()?;
                let coop = pollster::block_on(y.to_f32(ctx))?;
                let scale = tiled.iter().fold(0f32, |a, v| a.max(v.abs()));
                let worst = tiled.iter().zip(&coop).fold(0f32, |a, (t, c)| if c.is_finite() { a.max((t - c).abs()) } else { f32::INFINITY });
                eprintln!("coop kt{kt} ri{ri}{db} {label} {m}×{n}×{k}: max |coop − tiled| = {worst:.4} (max |y| {scale:.2}, {:.2e} of it)", worst / scale);
                let secs = time(ctx, o.iters.div_ceil(20).max(2), |rec, _| linear::matmul_coop_with(rec, &x, &w, None, &y, shape))?;
                rows.push(Row {
                    name: format!("matmul q4 coop kt{kt} ri{ri}{db}"),
                    shape: format!("{label} {m}×{n}×{k}"),
                    secs,
                    bytes: w.gpu_bytes() as f64 + (m * (k + n)) as f64 * asz,
                    flops: 2.0 * (m * n * k) as f64,
                    bound: "tensor",
                });
            }
        }
    }

    // --- f16-weight matrix × matrix (vision tower, projector), 7 tiles ---
    let vt = 7 * 729;
    for (label, m, n, k) in [("siglip qkv", vt, 3456usize, 1152usize), ("siglip fc1", vt, 4304, 1152), ("siglip fc2", vt, 1152, 4304), ("projector 1", vt, 5120, 1152), ("projector 2", vt, 5120, 5120)] {
        if !want("matmul f16") {
            break;
        }
        let w = random_f16(ctx, &mut rng, n, k)?;
        let x = act_tensor(ctx, &mut rng, &[m, k], act)?;
        let y = Tensor::empty(ctx, &[m, n], act)?;
        let secs = time(ctx, o.iters.div_ceil(20).max(2), |rec, _| linear::matmul(rec, &x, &w, None, &y))?;
        rows.push(Row {
            name: format!("matmul f16w{}", if linear::matmul_coop(ctx, act) { " coop" } else if linear::matmul_packed(ctx, act) { " packed-f16" } else { "" }),
            shape: format!("{label} {m}×{n}×{k}"),
            secs,
            bytes: w.gpu_bytes() as f64 + (m * (k + n)) as f64 * asz,
            flops: 2.0 * (m * n * k) as f64,
            bound: if linear::matmul_coop(ctx, act) { "tensor" } else { "flop" },
        });
    }

    // --- attention ---
    if want("attention") {
        // Prefill, causal, GQA 40/8, D 128, from a head-major cache.
        for t in if want("attention prefill") { &[1024usize, 8192][..] } else { &[] } {
            let t = *t;
            let (h, kvh, d) = (40usize, 8usize, 128usize);
            let q = act_tensor(ctx, &mut rng, &[t, h * d], act)?;
            let k = act_tensor(ctx, &mut rng, &[kvh, t, d], act)?;
            let v = act_tensor(ctx, &mut rng, &[kvh, t, d], act)?;
            let out = Tensor::empty(ctx, &[t, h * d], act)?;
            let args = AttnArgs::over_cache(h as u32, kvh as u32, d as u32, t as u32, t as u32, 0);
            use attention::PrefillKernel;
            let coop = attention::attention_coop_fits(ctx, act, d as u32);
            // the kernel the model takes here (None: the tensor cores'), then the register-tiled ones it does not
            let model = (!coop).then(|| attention::prefill_kernel(ctx, d as u32));
            let others = [PrefillKernel::Tiled, PrefillKernel::Q32].into_iter().filter(|&k| Some(k) != model && k.fits(ctx, d as u32));
            for kind in std::iter::once(model).chain(others.map(Some)) {
                let secs = match kind {
                    None => time(ctx, 2, |rec, _| attention::attention(rec, &q, &k, &v, &out, &args))?,
                    Some(PrefillKernel::Q32) => time(ctx, 2, |rec, _| attention::attention_q32(rec, &q, &k, &v, &out, &args, act))?,
                    Some(PrefillKernel::Tiled) => time(ctx, 2, |rec, _| attention::attention_tiled(rec, &q, &k, &v, &out, &args, act))?,
                    Some(PrefillKernel::Generic) => time(ctx, 2, |rec, _| attention::attention_generic(rec, &q, &k, &v, &out, &args, act))?,
                };
                rows.push(Row {
                    name: format!("attention prefill causal {}", kind.map_or("coop", PrefillKernel::label)),
                    shape: format!("{t} tok, 40/8 heads ×128"),
                    secs,
                    bytes: ((2 * t * h * d) + 2 * t * kvh * d) as f64 * asz,
                    flops: 4.0 * (h * d) as f64 * (t * t) as f64 / 2.0,
                    bound: if kind.is_none() { "tensor" } else { "flop" },
                });
            }
        }
        // SigLIP: 729 tokens, 16 heads × 72, bidirectional, fused qkv rows.
        if want("attention siglip") {
            let (t, h, d) = (729usize, 16usize, 72usize);
            let width = 3 * h * d;
            let qkv = act_tensor(ctx, &mut rng, &[t, width], act)?;
            let out = Tensor::empty(ctx, &[t, h * d], act)?;
            let args = AttnArgs::fused(t as u32, h as u32, d as u32, width as u32, 0);
            let coop = attention::attention_coop_fits(ctx, act, d as u32);
            for generic in if coop { &[false, true][..] } else { &[false][..] } {
                let secs = if *generic {
                    time(ctx, o.iters.div_ceil(10).max(2), |rec, _| attention::attention_generic(rec, &qkv, &qkv, &qkv, &out, &args, act))?
                } else {
                    time(ctx, o.iters.div_ceil(10).max(2), |rec, _| attention::attention(rec, &qkv, &qkv, &qkv, &out, &args))?
                };
                rows.push(Row {
                    name: format!("attention siglip{}", if coop && !*generic { " coop" } else { "" }),
                    shape: "729 tok, 16 heads ×72 (one tile)".into(),
                    secs,
                    bytes: (t * (width + h * d)) as f64 * asz,
                    flops: 4.0 * (h * d) as f64 * (t * t) as f64,
                    bound: if coop && !*generic { "tensor" } else { "flop" },
                });
            }
        }
        // Decode over an f16 (or f32) KV cache.
        for ctx_len in if want("attention decode") { &[1024usize, 4096, 8192][..] } else { &[] } {
            let ctx_len = *ctx_len;
            let (h, kvh, d) = (40usize, 8usize, 128usize);
            let copies = (o.rotate_bytes / (2 * kvh * ctx_len * d) as u64 / asz as u64).clamp(1, 32) as usize;
            let caches: Vec<(Tensor, Tensor)> = (0..copies)
                .map(|_| Ok((act_tensor(ctx, &mut rng, &[kvh, ctx_len, d], act)?, act_tensor(ctx, &mut rng, &[kvh, ctx_len, d], act)?)))
                .collect::<Result<_>>()?;
            // making the copies keeps the CPU busy for seconds, long enough for the GPU to fall to its idle clock
            warm_up(ctx, &mut rng, act)?;
            let q = act_tensor(ctx, &mut rng, &[1, h * d], act)?;
            let out = Tensor::empty(ctx, &[1, h * d], act)?;
            let scratch = Tensor::empty(ctx, &[attention::decode_scratch_len(1, h as u32, kvh as u32, d as u32, ctx_len as u32)], DType::F32)?;
            // the step's query at the last position of the cache
            let args = AttnArgs::over_cache(h as u32, kvh as u32, d as u32, ctx_len as u32, 1, ctx_len as u32 - 1);
            // every block size and workgroup count, the model's marked
            let lanes = attention::decode_lanes(act, d as u32);
            let model = attention::decode_tuning(ctx, act, d as u32, crate::gpu::DecodeTuning::default())?;
            let blocks = attention::DECODE_BLOCKS.into_iter().filter(|b| b % lanes == 0);
            for (block, wgs) in blocks.flat_map(|b| attention::DECODE_WORKGROUPS.into_iter().map(move |w| (b, w))) {
                let tuning = crate::gpu::DecodeTuning { block: Some(block), workgroups: Some(wgs) };
                let secs = time(ctx, o.iters, |rec, i| {
                    let (k, v) = &caches[i as usize % caches.len()];
                    attention::attention_decode_tuned(rec, &q, k, v, &out, &scratch, &args, tuning, None, None)
                })?;
                let splits = attention::decode_split(ctx_len as u32, kvh as u32, block, wgs).1;
                rows.push(Row {
                    name: "attention decode".into(),
                    shape: format!("{ctx_len} ctx, 40/8 heads ×128, {block}-key blocks, {splits} splits{}", if (block, wgs) == model { " (the model's)" } else { "" }),
                    secs,
                    bytes: (2 * kvh * ctx_len * d) as f64 * asz,
                    flops: 4.0 * (h * d * ctx_len) as f64,
                    bound: "bw",
                });
            }
        }
    }

    // --- the small ops ---
    if want("small") {
        let hidden = 5120usize;
        let prefill = 4096usize;
        let x = act_tensor(ctx, &mut rng, &[prefill, hidden], act)?;
        let y = Tensor::empty(ctx, &[prefill, hidden], act)?;
        let w = Tensor::from_f32(ctx, &rng.f32s(hidden, 1.0), &[hidden], DType::F32)?;
        let b = Tensor::from_f32(ctx, &rng.f32s(hidden, 1.0), &[hidden], DType::F32)?;
        let el = (prefill * hidden) as f64;
        let mut add_row = |name: &str, shape: String, secs: f64, bytes: f64| {
            rows.push(Row { name: name.into(), shape, secs, bytes, flops: 0.0, bound: "bw" });
        };
        let secs = time(ctx, o.iters.div_ceil(10), |rec, _| norm::rms_norm(rec, &x, &w, &y, 1e-6))?;
        add_row("rms_norm", format!("{prefill}×{hidden}"), secs, 2.0 * el * asz);
        let x1 = act_tensor(ctx, &mut rng, &[1, hidden], act)?;
        let y1 = Tensor::empty(ctx, &[1, hidden], act)?;
        let secs = time(ctx, o.iters, |rec, _| norm::rms_norm(rec, &x1, &w, &y1, 1e-6))?;
        add_row("rms_norm", format!("1×{hidden} (decode)"), secs, 2.0 * hidden as f64 * asz);
        let secs = time(ctx, o.iters.div_ceil(10), |rec, _| norm::layer_norm(rec, &x, &w, &b, &y, 1e-6))?;
        add_row("layer_norm", format!("{prefill}×{hidden}"), secs, 2.0 * el * asz);
        let secs = time(ctx, o.iters.div_ceil(10), |rec, _| elementwise::add(rec, &y, &x))?;
        add_row("add (residual)", format!("{prefill}×{hidden}"), secs, 3.0 * el * asz);
        let secs = time(ctx, o.iters.div_ceil(10), |rec, _| elementwise::gelu_tanh(rec, &y))?;
        add_row("gelu_tanh", format!("{prefill}×{hidden}"), secs, 2.0 * el * asz);
        let secs = time(ctx, o.iters.div_ceil(10), |rec, _| elementwise::gelu_erf(rec, &y))?;
        add_row("gelu_erf", format!("{prefill}×{hidden}"), secs, 2.0 * el * asz);
        let ffn = 13824usize;
        let gu = act_tensor(ctx, &mut rng, &[1024, 2 * ffn], act)?;
        let h = Tensor::empty(ctx, &[1024, ffn], act)?;
        let secs = time(ctx, o.iters.div_ceil(10), |rec, _| elementwise::silu_mul(rec, &gu, &h))?;
        add_row("silu_mul", format!("1024×{ffn}"), secs, 3.0 * (1024 * ffn) as f64 * asz);
        let rope = rope::Rope::new(ctx, 128, 1e6)?;
        let qkv = act_tensor(ctx, &mut rng, &[prefill, 7168], act)?;
        let secs = time(ctx, o.iters.div_ceil(10), |rec, _| rope.apply(rec, &qkv, prefill as u32, 48, 0, 0))?;
        add_row("rope (q and k heads)", format!("{prefill} tok × 48 heads ×128"), secs, 2.0 * (prefill * 48 * 128) as f64 * asz);
        // embedding gather of a prefill's worth of tokens from the q4 table
        let table = random_q4(ctx, &mut rng, 151_680, hidden)?;
        let ids: Vec<u32> = (0..prefill).map(|_| (rng.next() % 151_680) as u32).collect();
        let idt = Tensor::from_u32(ctx, &ids, &[prefill])?;
        let secs = time(ctx, o.iters.div_ceil(10), |rec, _| embed::embed(rec, &idt, &table, &x))?;
        add_row("embed q4", format!("{prefill} tok of 151680×{hidden}"), secs, el * (asz + 0.5625));
        // patch embedding of 7 tiles: im2col only (the matmul is the f16w row above)
        let g = patch_embed::PatchGeometry { size: 384, patch: 14, channels: 3 };
        let px = Tensor::from_f32(ctx, &rng.f32s(7 * 3 * 384 * 384, 1.0), &[7, 3, 384, 384], DType::F32)?;
        let cols = Tensor::empty(ctx, &[7 * 729, 588], act)?;
        let secs = time(ctx, o.iters.div_ceil(10), |rec, _| patch_embed::im2col(rec, &px, &cols, g))?;
        add_row("patch im2col", "7 tiles".into(), secs, (7 * 729 * 588) as f64 * (4.0 + asz));
        // anyres shrink: a 4×4-tile grid (108×108) of 5120-wide features to 81×81
        let fm = act_tensor(ctx, &mut rng, &[108, 108, hidden], act)?;
        let fo = Tensor::empty(ctx, &[81, 81, hidden], act)?;
        let secs = time(ctx, o.iters.div_ceil(10), |rec, _| resize::bilinear(rec, &fm, &fo, (108, 108), (81, 81), hidden as u32))?;
        add_row("bilinear", format!("108²→81² ×{hidden}"), secs, ((108 * 108 + 81 * 81) * hidden) as f64 * asz);
        // token choice over the vocabulary
        let logits = act_tensor(ctx, &mut rng, &[151_680], act)?;
        let tok = Tensor::empty(ctx, &[1], DType::U32)?;
        let scratch = Tensor::empty(ctx, &[sample::SCRATCH_LEN], DType::U32)?;
        let secs = time(ctx, o.iters, |rec, _| sample::sample(rec, &logits, &tok, &scratch, sample::SampleArgs::ARGMAX, 0.5))?;
        add_row("sample greedy (two passes)", "151680".into(), secs, 151_680.0 * asz);
        let secs = time(ctx, o.iters, |rec, _| sample::sample_one_workgroup(rec, &logits, &tok, sample::SampleArgs::ARGMAX, 0.5))?;
        add_row("sample greedy (one workgroup)", "151680".into(), secs, 151_680.0 * asz);
        // the model's greedy choice where lm_head wrote its first pass (one slot a workgroup of 8 rows)
        let slots = 151_680usize.div_ceil(8);
        let maxima = Tensor::from_u32(ctx, &(0..2 * slots).map(|i| if i % 2 == 0 { (rng.next() as u32) & 0x3fff_ffff } else { (i / 2 * 8) as u32 }).collect::<Vec<_>>(), &[2 * slots])?;
        let secs = time(ctx, o.iters, |rec, _| sample::argmax_of_maxima(rec, &maxima, slots, &tok))?;
        add_row("sample greedy (final pass over lm_head's maxima)", format!("{slots} slots"), secs, (slots * 8) as f64);
        let s = sample::SampleArgs { temperature: 0.8, top_k: 50, top_p: 0.9 };
        let secs = time(ctx, o.iters.div_ceil(10), |rec, _| sample::sample(rec, &logits, &tok, &scratch, s, 0.5))?;
        add_row("sample top-k 50, top-p 0.9", "151680".into(), secs, 151_680.0 * asz);
    }

    // --- the arithmetic a WGSL kernel reaches at all (8 independent vec4 FMA chains an invocation), against
    // which the portable matmul tiers' fractions of their peaks are read (issue 14) ---
    if want("peak") {
        let wgs = 8192u32;
        let out_t = Tensor::empty(ctx, &[wgs as usize * 256], DType::U32)?;
        let flops = wgs as f64 * 256.0 * bandwidth::FMA_STEPS as f64 * 64.0;
        let acts: &[DType] = if ctx.caps.f16 { &[DType::F32, DType::F16] } else { &[DType::F32] };
        for &a in acts {
            for form in bandwidth::FmaForm::ALL {
                let secs = time(ctx, 10, |rec, _| bandwidth::fma(rec, a, form, &out_t, wgs))?;
                let ty = if a == DType::F16 { "f16" } else { "f32" };
                rows.push(Row { name: format!("FMA probe {ty} ({})", form.label()), shape: format!("{wgs}×256 invocations"), secs, bytes: 0.0, flops, bound: "flop" });
            }
        }
    }

    // --- what a dispatch costs on its own: each adds into the tensor the one before wrote, so wgpu puts a
    // barrier between them, as between the decode step's kernels (issue 13: the step's floor from its count) ---
    if want("dispatch") {
        let x1 = act_tensor(ctx, &mut rng, &[1, 5120], act)?;
        let y1 = act_tensor(ctx, &mut rng, &[1, 5120], act)?;
        let secs = time(ctx, 300, |rec, _| elementwise::add(rec, &y1, &x1))?;
        rows.push(Row { name: "dependent dispatch (add)".into(), shape: "1×5120, 300 in a row".into(), secs, bytes: 3.0 * 5120.0 * asz, flops: 0.0, bound: "bw" });
    }

    // --- a perfect stream of each decode matrix's bytes in one dispatch (the bandwidth probe's kernel, copies
    // rotating through 512 MiB so that nothing comes from L2, each dispatch behind a barrier as in the step):
    // what one dispatch of that size can reach at all, against which the matrix-vector kernels are measured ---
    if want("stream") {
        let sizes: [(&str, u64); 6] = [
            ("KV @1k", 2 * 8 * 1024 * 128 * 2),
            ("o", 5120 * 5120 * 9 / 16),
            ("q/k/v", 7168 * 5120 * 9 / 16),
            ("KV @8k", 2 * 8 * 8192 * 128 * 2),
            ("down", 5120 * 13824 * 9 / 16),
            ("gate/up", 27648 * 5120 * 9 / 16),
        ];
        for (what, bytes) in sizes {
            let bytes = bytes / 16 * 16;
            let copies = (o.rotate_bytes / bytes).clamp(2, 64) as usize;
            let bufs: Vec<_> = (0..copies)
                .map(|_| ctx.create_buffer(&wgpu::BufferDescriptor { label: Some("stream"), size: bytes, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false }))
                .collect();
            warm_up(ctx, &mut rng, act)?;
            // one load an invocation, or four in flight each
            for per in [1u64, 4] {
                let wgs = (bytes / 16 / 256 / per).max(1) as u32;
                let out_t = Tensor::empty(ctx, &[wgs as usize * 256], DType::U32)?;
                let secs = time(ctx, o.iters, |rec, i| bandwidth::read(rec, &bufs[i as usize % copies], &out_t, wgs))?;
                rows.push(Row { name: format!("stream, {per} load(s) an invocation"), shape: format!("{:.1} MB ({what})", bytes as f64 / 1e6), secs, bytes: bytes as f64, flops: 0.0, bound: "bw" });
            }
        }
    }

    // --- report ---
    let mut out = String::new();
    out.push_str(&format!("Adapter: {}\n\nActivations: {:?}. Roofline: {:.0} GB/s, {:.1} TFLOP/s (f32, no tensor cores), {:.0} TFLOP/s (\"tensor\": the cooperative-matrix kernels, dense f16 → f32).\n\n", ctx.describe(), act, o.peak_gbs, o.peak_tflops, o.peak_tensor_tflops));
    out.push_str("| kernel | shape | time (µs) | GB/s | GFLOP/s | of roofline |\n|---|---|---:|---:|---:|---:|\n");
    for r in &rows {
        let gbs = r.bytes / r.secs / 1e9;
        let gfs = r.flops / r.secs / 1e9;
        let frac = match r.bound {
            "bw" => gbs / o.peak_gbs,
            "tensor" => gfs / (o.peak_tensor_tflops * 1e3),
            _ => gfs / (o.peak_tflops * 1e3),
        };
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.0} | {:.0} | {:.1} % {} |\n",
            r.name,
            r.shape,
            r.secs * 1e6,
            gbs,
            gfs,
            frac * 100.0,
            match r.bound {
                "bw" => "bw",
                "tensor" => "tensor",
                _ => "compute",
            }
        ));
    }
    // the format decision, on Gaussian weights
    let mut g = Rng(7);
    let w: Vec<f32> = (0..1 << 20)
        .map(|_| {
            let u1 = ((g.next() >> 11) as f64 / (1u64 << 53) as f64).max(1e-300);
            let u2 = (g.next() >> 11) as f64 / (1u64 << 53) as f64;
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * 0.02) as f32
        })
        .collect();
    out.push_str("\n4-bit formats on 1M Gaussian weights (relative RMS error):\n\n| format | bits/weight | error |\n|---|---:|---:|\n");
    for (name, bits, err) in quant::compare_formats(&w) {
        out.push_str(&format!("| {name} | {bits:.3} | {err:.4} |\n"));
    }
    Ok(out)
}
