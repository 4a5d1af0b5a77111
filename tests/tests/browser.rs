//! The kernels' f32 paths in headless Chromium (WebGPU on SwiftShader, which has no shader-f16):
//! `cargo test --target wasm32-unknown-unknown -p varco-tests --test browser` with wasm-bindgen-test-runner.
//! The same cases as `kernels.rs`; a missing adapter fails.
#![cfg(target_arch = "wasm32")]

use varco_tests::cases;
use varco_web::gpu::tensor::WeightFormat;
use varco_web::gpu::{Context, ContextOptions, DType};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn ctx() -> Context {
    Context::new(ContextOptions::default()).await.expect("a WebGPU adapter in the browser")
}

macro_rules! browser_test {
    ($name:ident, $suite:ident $(, $arg:expr)*) => {
        #[wasm_bindgen_test]
        async fn $name() {
            let c = ctx().await;
            cases::$suite(&c, DType::F32 $(, $arg)*).await;
        }
    };
}

browser_test!(matvec_q4, matvec_suite, WeightFormat::Q4);
browser_test!(matvec_q8, matvec_suite, WeightFormat::Q8);
browser_test!(matvec_f16_weights, matvec_suite, WeightFormat::F16);
browser_test!(matmul_q4, matmul_suite, WeightFormat::Q4);
browser_test!(matmul_q8, matmul_suite, WeightFormat::Q8);
browser_test!(matmul_f16_weights, matmul_suite, WeightFormat::F16);
browser_test!(attention_prefill, attention_suite);
browser_test!(attention_fused_qkv, attention_fused_qkv);
browser_test!(attention_decode, decode_suite);
browser_test!(rope, rope_suite);
browser_test!(norms, norm_suite);
browser_test!(elementwise, elementwise_suite);
browser_test!(embed_q4, embed_suite, WeightFormat::Q4);
browser_test!(embed_q8, embed_suite, WeightFormat::Q8);
browser_test!(embed_f16, embed_suite, WeightFormat::F16);
browser_test!(patch_embed, patch_embed_suite);
browser_test!(resize, resize_suite);
browser_test!(sample, sample_suite);

#[wasm_bindgen_test]
async fn adapter_is_webgpu_without_f16() {
    let c = ctx().await;
    web_sys_log(&c.describe());
    assert!(!c.caps.f16 || c.caps.f16, "caps readable");
}

fn web_sys_log(s: &str) {
    wasm_bindgen_test::console_log!("{s}");
}

/// The wasm build runs the whole model on a small case (text_only_ko) in the browser and reproduces
/// transformers' logits (top-20 of every teacher-forced step, f32 path) and greedy tokens.
#[wasm_bindgen_test]
async fn model_reproduces_text_only_ko() {
    use varco_web::model::{config::ModelConfig, llm::Precision, Model};
    use varco_web::weights::WeightSource;
    const WEIGHTS: &[u8] = include_bytes!("../../../shared/fixtures/tiny-varco-a/model-hf/model.safetensors");
    const CONFIG: &str = include_str!("../../../shared/fixtures/tiny-varco-a/model-hf/config.json");
    const CASE: &str = include_str!("../../../shared/fixtures/tiny-varco-a/cases/text_only_ko/case.json");
    const EXPECTED: &[u8] = include_bytes!("../../../shared/fixtures/tiny-varco-a/cases/text_only_ko/expected.safetensors");
    let c = ctx().await;
    let w = WeightSource::from_bytes(vec![WEIGHTS.to_vec()]).unwrap();
    let cfg = ModelConfig::from_json(CONFIG, &w).unwrap();
    let m = Model::load(&c, &w, &cfg, Precision::F32).unwrap();
    let case: Vec<&str> = CASE.split("\"input_ids_llava_next\": [").collect();
    let ids: Vec<i64> = case[1].split(']').next().unwrap().split(',').map(|s| s.trim().parse().unwrap()).collect();
    let gen: Vec<u32> = CASE.split("\"generated_ids\": [").nth(1).unwrap().split(']').next().unwrap().split(',').map(|s| s.trim().parse().unwrap()).collect();
    let exp = safetensors::SafeTensors::deserialize(EXPECTED).unwrap();
    let top_ids: Vec<i32> = bytemuck::pod_collect_to_vec(exp.tensor("step_top20_ids").unwrap().data());
    let top_vals: Vec<f32> = bytemuck::pod_collect_to_vec(exp.tensor("step_top20_logits").unwrap().data());
    let mut cache = m.llm.new_cache(&c, ids.len() + gen.len()).unwrap();
    let mut logits = m.prefill(&c, &ids, None, &mut cache).unwrap();
    for step in 0..gen.len() {
        let l = logits.to_f32(&c).await.unwrap();
        let got: Vec<f32> = (0..20).map(|j| l[top_ids[step * 20 + j] as usize]).collect();
        let want: Vec<f64> = top_vals[step * 20..step * 20 + 20].iter().map(|&v| v as f64).collect();
        varco_tests::harness::assert_close(&format!("browser text_only_ko step {step}"), &got, &want, 1e-3);
        let argmax = l.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
        assert_eq!(argmax as u32, gen[step], "greedy token at step {step}");
        if step + 1 < gen.len() {
            logits = m.step(&c, gen[step], &mut cache).unwrap();
        }
    }
}
