//! Every kernel against its CPU reference on the native adapter (Mesa lavapipe in CI), for f32 and f16
//! activations, with subgroup reductions and with the workgroup-memory fallback. No adapter is a failure.
#![cfg(not(target_arch = "wasm32"))]

use std::sync::OnceLock;

use varco_web::gpu::tensor::WeightFormat;
use varco_web::gpu::{Context, ContextOptions, DType};
use varco_web::kernels::linear;
use varco_tests::cases;

/// [all features, subgroups switched off].
fn contexts() -> &'static [Context; 2] {
    static CTX: OnceLock<[Context; 2]> = OnceLock::new();
    CTX.get_or_init(|| {
        let full = pollster::block_on(Context::new(ContextOptions::default())).expect("a WebGPU adapter (lavapipe in CI)");
        let plain = pollster::block_on(Context::new(ContextOptions { allow_subgroups: false, ..Default::default() })).unwrap();
        eprintln!("adapter: {}", full.describe());
        [full, plain]
    })
}

/// Runs `f` for every (context, activation type) pair; lavapipe must offer both f16 and subgroups.
fn each(f: impl Fn(&'static Context, DType)) {
    let [full, plain] = contexts();
    assert!(full.caps.f16 && full.caps.subgroups, "the test adapter must offer shader-f16 and subgroups: {}", full.describe());
    assert!(!plain.caps.subgroups);
    for ctx in [full, plain] {
        for act in [DType::F32, DType::F16] {
            f(ctx, act);
        }
    }
}

macro_rules! kernel_test {
    ($name:ident, $suite:ident $(, $arg:expr)*) => {
        #[test]
        fn $name() {
            each(|ctx, act| pollster::block_on(cases::$suite(ctx, act $(, $arg)*)));
        }
    };
}

kernel_test!(matvec_q4, matvec_suite, WeightFormat::Q4);
kernel_test!(matvec_q8, matvec_suite, WeightFormat::Q8);
kernel_test!(matvec_f16_weights, matvec_suite, WeightFormat::F16);
kernel_test!(matvec_fused_q4, matvec_fused_suite, WeightFormat::Q4, &linear::FUSED_SHAPES);
kernel_test!(matvec_fused_q8, matvec_fused_suite, WeightFormat::Q8, &linear::FUSED_SHAPES);
kernel_test!(matvec_fused_f16_weights, matvec_fused_suite, WeightFormat::F16, &linear::FUSED_SHAPES);
kernel_test!(matvec_fused_prepared, prepared_suite);
kernel_test!(greedy_in_lm_head, greedy_in_lm_head_suite);
kernel_test!(matmul_q4, matmul_suite, WeightFormat::Q4);
kernel_test!(matmul_q8, matmul_suite, WeightFormat::Q8);
kernel_test!(matmul_f16_weights, matmul_suite, WeightFormat::F16);
kernel_test!(attention_prefill, attention_suite);
kernel_test!(attention_fused_qkv, attention_fused_qkv);
kernel_test!(attention_rising_scores, attention_rising_scores);
kernel_test!(attention_decode, decode_suite);
kernel_test!(rope, rope_suite);
kernel_test!(norms, norm_suite);
kernel_test!(elementwise, elementwise_suite);
kernel_test!(embed_q4, embed_suite, WeightFormat::Q4);
kernel_test!(embed_q8, embed_suite, WeightFormat::Q8);
kernel_test!(embed_f16, embed_suite, WeightFormat::F16);
kernel_test!(patch_embed, patch_embed_suite);
kernel_test!(resize, resize_suite);
kernel_test!(sample, sample_suite);

#[test]
fn f16_activations_need_shader_f16() {
    let ctx = pollster::block_on(Context::new(ContextOptions { allow_f16: false, ..Default::default() })).unwrap();
    let x = varco_web::gpu::Tensor::empty(&ctx, &[4], DType::F16).unwrap();
    let mut rec = varco_web::gpu::Recorder::new(&ctx);
    let err = varco_web::kernels::elementwise::gelu_tanh(&mut rec, &x).unwrap_err();
    assert!(err.to_string().contains("shader-f16"), "{err}");
}

/// The packed-f16 matmul tier (f16 tiles and products, f32 across groups of 32) against the f64 reference
/// within the f16 tolerance, every weight format and tile, awkward sizes; and it is really another kernel:
/// its sums differ in the last bits from the f32-accumulating matmul's on the same inputs.
#[test]
fn packed_f16_matmul_matches_the_reference() {
    let ctx = pollster::block_on(Context::new(ContextOptions { packed_f16_matmul: true, ..Default::default() })).unwrap();
    assert!(ctx.packed_f16_matmul, "the test adapter must offer shader-f16");
    for format in [WeightFormat::Q4, WeightFormat::Q8, WeightFormat::F16] {
        pollster::block_on(cases::matmul_suite(&ctx, DType::F16, format));
    }
    let plain = pollster::block_on(Context::new(ContextOptions::default())).unwrap();
    let run = |ctx| pollster::block_on(cases::linear_output(ctx, DType::F16, WeightFormat::Q4, cases::LinearKernel::Matmul(64), 70, 96, 1024, false, u64::MAX, 5)).0;
    let (a, b) = (run(&ctx), run(&plain));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).any(|(x, y)| x != y), "PACKED changed nothing: the flag does not reach the shader");
}

/// The portable matmul without its variants (ContextOptions::tiled_matmul: interleaved tile reads, the next
/// tile prefetched into registers, unrolled k steps — all three by default, so `matmul_*` above test them)
/// against the f64 reference, in both activation types, both tiles and every weight format, awkward sizes.
/// The variants sum in the same order as the plain kernel, so outputs cannot tell whether the flags reached
/// the shader: the pipelines' labels (their defines) do, with and without them.
#[test]
fn tiled_matmul_without_its_variants_matches_the_reference() {
    use varco_web::gpu::TiledMatmul;
    let ctx = pollster::block_on(Context::new(ContextOptions { tiled_matmul: TiledMatmul::NONE, coop_matmul: false, ..Default::default() })).unwrap();
    for act in [DType::F32, DType::F16] {
        for format in [WeightFormat::Q4, WeightFormat::Q8, WeightFormat::F16] {
            pollster::block_on(cases::matmul_suite(&ctx, act, format));
        }
    }
    let label = |ctx: &Context| {
        let x = varco_web::gpu::Tensor::empty(ctx, &[3, 64], DType::F32).unwrap();
        let y = varco_web::gpu::Tensor::empty(ctx, &[3, 8], DType::F32).unwrap();
        let (w, _) = cases::random_weight(ctx, &mut varco_tests::harness::Rng::new(9), 8, 64, WeightFormat::Q4, u64::MAX);
        let mut rec = varco_web::gpu::Recorder::new(ctx);
        linear::matmul_with_tile(&mut rec, &x, &w, None, &y, 64).unwrap();
        pollster::block_on(rec.submit_profiled()).unwrap().expect("timestamps on the test adapter")[0].0.clone()
    };
    let flags = ["MM_IL", "MM_PF", "MM_UR"];
    let plain = label(&ctx);
    assert!(flags.iter().all(|f| !plain.contains(f)), "{plain}");
    let by_default = label(&contexts()[0]);
    assert!(flags.iter().all(|f| by_default.contains(f)), "{by_default}");
    let all = TiledMatmul::ALL;
    assert_eq!(ContextOptions::default().tiled_matmul, all);
    assert_eq!(TiledMatmul::parse("il,pf,ur").unwrap(), all);
    assert_eq!(TiledMatmul::parse(&all.label()).unwrap(), all);
    assert_eq!(TiledMatmul::parse("none").unwrap(), TiledMatmul::NONE);
    assert_eq!(TiledMatmul::parse(&TiledMatmul::NONE.label()).unwrap(), TiledMatmul::NONE);
    assert!(TiledMatmul::parse("il,fast").is_err());
}

/// The tiled matmul's variants beyond the default three, each set on the defaults: the balanced staging of W
/// (MM_BW: every invocation dequantizes half a q4 code word), the products as a multiply and an add (MM_MA), a
/// subgroup over 8 × 4 invocations (MM_W8), and 128 invocations of 16 × 8 outputs (MM_T16) — against the f64
/// reference in both activation types (packed f16 too), q4 and q8, both tiles, awkward sizes; the pipelines'
/// labels show the flags reached the shader where they apply (the balanced staging and the tall blocks are
/// q4's only, the tall blocks the 128-wide tile's).
#[test]
fn tiled_matmul_variants_match_the_reference() {
    use varco_web::gpu::TiledMatmul;
    let wide = TiledMatmul { balance: true, mul_add: true, warp8: true, ..TiledMatmul::ALL };
    let tall = TiledMatmul { tall: true, mul_add: true, ..TiledMatmul::ALL };
    assert_eq!(TiledMatmul::parse("il,pf,ur,bw,ma,w8").unwrap(), wide);
    assert_eq!(TiledMatmul::parse("il,pf,ur,t16,ma").unwrap(), tall);
    for t in [wide, tall] {
        assert_eq!(TiledMatmul::parse(&t.label()).unwrap(), t);
        for packed in [false, true] {
            let ctx = pollster::block_on(Context::new(ContextOptions { tiled_matmul: t, packed_f16_matmul: packed, coop_matmul: false, ..Default::default() })).unwrap();
            for act in if packed { &[DType::F16][..] } else { &[DType::F32, DType::F16][..] } {
                for format in [WeightFormat::Q4, WeightFormat::Q8] {
                    pollster::block_on(cases::matmul_suite(&ctx, *act, format));
                }
            }
            for (format, tile) in [(WeightFormat::Q4, 64), (WeightFormat::Q4, 128), (WeightFormat::Q8, 128)] {
                let x = varco_web::gpu::Tensor::empty(&ctx, &[3, 64], DType::F32).unwrap();
                let y = varco_web::gpu::Tensor::empty(&ctx, &[3, 8], DType::F32).unwrap();
                let (w, _) = cases::random_weight(&ctx, &mut varco_tests::harness::Rng::new(9), 8, 64, format, u64::MAX);
                let mut rec = varco_web::gpu::Recorder::new(&ctx);
                linear::matmul_with_tile(&mut rec, &x, &w, None, &y, tile).unwrap();
                let label = pollster::block_on(rec.submit_profiled()).unwrap().expect("timestamps on the test adapter")[0].0.clone();
                let q4 = format == WeightFormat::Q4;
                let want = [("MM_MA", true), ("MM_W8", t.warp8), ("MM_BW", t.balance && q4), ("MM_T16", t.tall && q4 && tile == 128), ("MM_X", false)];
                assert!(want.iter().all(|(f, on)| label.contains(f) == *on), "{t:?} {format:?} tile {tile}: {label}");
            }
        }
    }
}

/// Prefill attention in 32 queries × 64 keys a step (ContextOptions::attention_q32), in both activation
/// types: the attention suites' head-128 cases (causal after a context, GQA, bidirectional, partial blocks of
/// queries and keys) and the rising scores (a row's maximum replaced block after block) against the f64
/// reference; its pipeline is the one that ran.
#[test]
fn attention_q32_matches_the_reference() {
    let ctx = pollster::block_on(Context::new(ContextOptions { attention_q32: true, coop_matmul: false, ..Default::default() })).unwrap();
    assert!(ctx.caps.max_workgroup_storage >= varco_web::kernels::attention::Q32_STORAGE, "the test adapter must allow the kernel's workgroup memory");
    for act in [DType::F32, DType::F16] {
        pollster::block_on(cases::attention_suite(&ctx, act));
        pollster::block_on(cases::attention_rising_scores(&ctx, act));
    }
    let x = varco_web::gpu::Tensor::empty(&ctx, &[5, 2 * 128], DType::F32).unwrap();
    let kv = varco_web::gpu::Tensor::empty(&ctx, &[1, 8, 128], DType::F32).unwrap();
    let mut rec = varco_web::gpu::Recorder::new(&ctx);
    varco_web::kernels::attention::attention(&mut rec, &x, &kv, &kv, &x, &cases::attention_case_args((5, 5, 2, 1, 128, true, 0))).unwrap();
    let label = pollster::block_on(rec.submit_profiled()).unwrap().expect("timestamps on the test adapter")[0].0.clone();
    assert!(label.contains("attention_q32"), "{label}");
}

/// The fused kernel's TOP and DOT4 products and its exact ones all match the reference in
/// `matvec_fused_suite`; each must also differ from the exact ones, bit for bit somewhere, or the shape's
/// `math` never reached the shader and the suite tested one path twice. In f32 activations (in f16 the outputs' rounding hides
/// differences of 1e-6; the flag is the same for both).
#[test]
fn fused_top_products_reach_the_shader() {
    let ctx = pollster::block_on(Context::new(ContextOptions::default())).unwrap();
    use varco_web::kernels::linear::FusedMath;
    let top = pollster::block_on(cases::fused_output(&ctx, DType::F32, FusedMath::Top));
    let exact = pollster::block_on(cases::fused_output(&ctx, DType::F32, FusedMath::Exact));
    let dot4 = pollster::block_on(cases::fused_output(&ctx, DType::F32, FusedMath::Dot4));
    assert!(top.iter().zip(&exact).any(|(a, b)| a != b), "TOP changed nothing: the flag does not reach the shader");
    assert!(dot4.iter().zip(&exact).any(|(a, b)| a != b), "DOT4 changed nothing: the flag does not reach the shader");
}

/// The cooperative-matrix (tensor-core) tier against the f64 reference within the f16 tolerance: the matmul
/// for every weight format, both stage depths, awkward sizes (rows, columns and K that are not multiples of
/// the 128 × 128 tile or of 16), bias and a weight split into parts, in every shape the kernel is built in
/// (`linear::COOP_SHAPES`); prefill attention through the attention suites and the rising-scores case. Ignored by default: it needs an adapter with 16×16×16
/// f16→f32 cooperative matrices and subgroups of 32, which lavapipe (CI, Mesa 22.3) does not have; run on an
/// NVIDIA GPU with `kernels -- --ignored coop` (scripts/on-device.sh; docs/bench has each run). Where it runs, it fails on an adapter
/// without the tier rather than passing vacuously.
#[test]
#[ignore = "needs cooperative matrices (an NVIDIA GPU through Vulkan); lavapipe has none"]
fn coop_matmul_matches_the_reference() {
    let ctx = pollster::block_on(Context::new(ContextOptions { coop_matmul: true, coop_attention: true, ..Default::default() })).unwrap();
    assert!(ctx.coop_matmul, "this adapter lacks the cooperative-matrix tier: {:?}", ctx.caps.cooperative_matrix);
    let big = u64::MAX;
    for format in [WeightFormat::Q4, WeightFormat::Q8, WeightFormat::F16] {
        for shape in varco_web::kernels::linear::COOP_SHAPES {
            for (i, &(m, n, k, bias, limit)) in [(2, 5, 32, false, big), (5, 33, 64, true, big), (67, 70, 100, true, big), (130, 129, 260, false, big), (9, 300, 588, true, big), (200, 300, 1000, true, big), (70, 203, 160, true, 2048)].iter().enumerate() {
                pollster::block_on(cases::linear_case(&ctx, DType::F16, format, cases::LinearKernel::Coop(shape), m, n, k, bias, limit, 300 + i as u64));
            }
        }
        // and `linear` on this context takes the tier by itself for many rows
        pollster::block_on(cases::linear_case(&ctx, DType::F16, format, cases::LinearKernel::Chosen, 150, 96, 256, true, big, 320));
    }
    // prefill attention: on this context `attention` takes the cooperative-matrix kernel for every head size
    // of the suites (16, 72, 128; causal with offsets, bidirectional, fused qkv rows)
    // (and `attention` would fall back silently where a case's offsets or strides could not be read four
    // values at a time: every case here can)
    for d in [16, 72, 128] {
        assert!(varco_web::kernels::attention::attention_coop_fits(&ctx, DType::F16, d), "head size {d}");
    }
    for args in cases::ATTENTION_CASES.map(cases::attention_case_args).iter().chain([&cases::attention_fused_args()]) {
        assert!(varco_web::kernels::attention::coop_aligned(args), "{args:?}");
    }
    pollster::block_on(cases::attention_suite(&ctx, DType::F16));
    pollster::block_on(cases::attention_fused_qkv(&ctx, DType::F16));
    pollster::block_on(cases::attention_rising_scores(&ctx, DType::F16));
}

/// naga's runtime checks follow the backend: off by default on Vulkan (lavapipe here: the whole native suite
/// runs without them, as users' Vulkan GPUs do), on at the caller's request; the decode step's fused kernel
/// built with them (what Metal, DX12 and GL run) computes the same, f32 and f16, in every shape the model
/// chooses. (Whether the checks were really put in shows only in the generated code and its speed.)
#[test]
fn runtime_checks_follow_the_backend() {
    let default = pollster::block_on(Context::new(ContextOptions::default())).unwrap();
    assert_eq!(default.info.backend, wgpu::Backend::Vulkan, "this test expects lavapipe (Vulkan)");
    assert!(!default.runtime_checks, "Vulkan bounds buffer accesses itself: no naga checks by default");
    drop(default);
    let ctx = pollster::block_on(Context::new(ContextOptions { runtime_checks: Some(true), ..Default::default() })).unwrap();
    assert!(ctx.runtime_checks);
    for act in [DType::F32, DType::F16] {
        pollster::block_on(cases::matvec_fused_suite(&ctx, act, WeightFormat::Q4, &linear::MODEL_FUSED_SHAPES));
    }
}

/// Decode's integer dot products follow the adapter: a CPU renderer (CI's lavapipe) keeps the float products
/// and says why, a native GPU takes them, and the caller can switch them off.
#[test]
fn integer_dot_products_follow_the_adapter() {
    let [full, _] = contexts();
    let gpu = matches!(full.info.device_type, wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu);
    assert_eq!(full.int_dot_decode, gpu, "{}: {}", full.describe(), full.int_dot_why);
    if full.info.device_type == wgpu::DeviceType::Cpu {
        assert!(full.int_dot_why.contains("Cpu adapter keeps the float products"), "{}", full.int_dot_why);
    }
    let off = pollster::block_on(Context::new(ContextOptions { int_dot_decode: false, ..Default::default() })).unwrap();
    assert!(!off.int_dot_decode);
    assert!(off.int_dot_why.contains("switched off by the caller"), "{}", off.int_dot_why);
}

/// How decode attention splits its keys, by the rules its documentation states (hand-worked figures for the
/// 14B's 8 KV heads and a head of 128: 16 chunks a key in f16, 32 in f32), and the tunings it refuses.
#[test]
fn decode_split_rules() {
    use varco_web::kernels::attention::{decode_block, decode_split, decode_workgroups};
    // the model's block: the largest that a key's chunks divide
    assert_eq!(decode_block(16, None).unwrap(), 128);
    assert_eq!(decode_block(32, None).unwrap(), 128);
    assert_eq!(decode_block(16, Some(32)).unwrap(), 32);
    assert!(decode_block(64, Some(32)).is_err(), "a block smaller than a key's chunks");
    assert!(decode_block(16, Some(256)).is_err(), "not a built block size");
    // the model's workgroups: 512; 256 and 1024 forced; others refused
    assert_eq!(decode_workgroups(None).unwrap(), 512);
    assert_eq!(decode_workgroups(Some(256)).unwrap(), 256);
    assert!(decode_workgroups(Some(300)).is_err());
    // 8k keys, 8 KV heads: 512 workgroups → 64 splits of one 128-key block; 256 → 32 splits of two
    assert_eq!(decode_split(8192, 8, 128, 512), (128, 64));
    assert_eq!(decode_split(8192, 8, 128, 256), (256, 32));
    // 1k keys: a block each, 8 splits, whatever the workgroups
    assert_eq!(decode_split(1024, 8, 128, 512), (128, 8));
    assert_eq!(decode_split(1024, 8, 32, 512), (32, 32));
    // the merge takes at most 256 splits: one KV head aiming at 1,024 workgroups gets 256 splits' keys each
    // (391, rounded up to 32-key blocks: 416), so 241 splits
    assert_eq!(decode_split(100_000, 1, 32, 1024), (416, 241));
    // a short cache: one split of one block
    assert_eq!(decode_split(5, 8, 128, 512), (128, 1));
}
