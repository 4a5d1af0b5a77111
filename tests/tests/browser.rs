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
browser_test!(matvec_f16_weights, matvec_suite, WeightFormat::F16);
browser_test!(matmul_q4, matmul_suite, WeightFormat::Q4);
browser_test!(matmul_f16_weights, matmul_suite, WeightFormat::F16);
browser_test!(attention_prefill, attention_suite);
browser_test!(attention_fused_qkv, attention_fused_qkv);
browser_test!(attention_decode, decode_suite);
browser_test!(rope, rope_suite);
browser_test!(norms, norm_suite);
browser_test!(elementwise, elementwise_suite);
browser_test!(embed_q4, embed_suite, WeightFormat::Q4);
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
