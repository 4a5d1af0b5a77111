//! The structure of a decode step, pinned without timing: how many dispatches, buffer allocations and
//! submits one generated token costs on the tiny fixture model (2 layers), so that a change that adds work
//! to every token shows up here. The figures are derived from the design, not measured:
//!
//! dispatches = 1 (embedding gather) + 14 per layer + 2 (final norm, lm_head) + 1 (greedy sample), where a
//! layer is: RMSNorm, fused qkv matvec, RoPE for q and for k, KV-cache append, split-K decode attention
//! and its merge, o_proj matvec, residual add, RMSNorm, fused gate/up matvec, SiLU·up, down matvec,
//! residual add. (Weights that fit one binding: one dispatch per matrix.)
//!
//! buffers = 1 (the token id) + 1 (the embedded row) + 6 (the layer scratch: normed row, qkv, attention
//! output, gate/up, SiLU·up, decode-attention partials; shared by all layers) + 3 (last row, its norm,
//! logits) + 1 (the staging buffer the sampled id is read through). The uniform arena is pooled: none.
//!
//! submits = 2 per token: the sampler (then one u32 read back), and the whole step in one command buffer.
#![cfg(not(target_arch = "wasm32"))]

use varco_tests::fixtures;
use varco_web::gpu::{Context, ContextOptions, DType, Recorder, Tensor};
use varco_web::kernels::sample::{self, Sampling};
use varco_web::model::config::ModelConfig;
use varco_web::model::llm::Precision;
use varco_web::model::Model;
use varco_web::weights::WeightSource;

#[test]
fn a_decode_step_has_its_designed_dispatches_and_allocations() {
    let ctx = pollster::block_on(Context::new(ContextOptions::default())).expect("a WebGPU adapter (lavapipe in CI)");
    let w = WeightSource::open_dir(&fixtures::root().join("model-hf")).unwrap();
    let cfg = ModelConfig::from_json(&String::from_utf8(fixtures::read("model-hf/config.json")).unwrap(), &w).unwrap();
    let m = Model::load(&ctx, &w, &cfg, Precision::Q4).unwrap();
    let mut cache = m.llm.new_cache(&ctx, 16).unwrap();
    let logits = m.prefill(&ctx, &[151644, 872, 198], None, &mut cache).unwrap();
    let picked = Tensor::empty(&ctx, &[1], DType::U32).unwrap();
    let step = |cache: &mut _, logits: &Tensor| -> Tensor {
        let mut rec = Recorder::new(&ctx);
        sample::sample(&mut rec, logits, &picked, Sampling::GREEDY, 0.5).unwrap();
        rec.submit().unwrap();
        let id = pollster::block_on(picked.to_u32(&ctx)).unwrap()[0];
        let mut rec = Recorder::new(&ctx);
        let next = m.record_step(&mut rec, id, cache).unwrap();
        rec.submit().unwrap();
        next
    };
    let warm = step(&mut cache, &logits); // compiles pipelines, fills the uniform pool
    let before = ctx.stats.counts();
    let _ = step(&mut cache, &warm);
    let after = ctx.stats.counts();
    let (dispatches, buffers, submits) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    let layers = cfg.text.layers as u64;
    assert_eq!(layers, 2);
    assert_eq!(dispatches, 1 + 14 * layers + 2 + 1, "dispatches per decode step");
    assert_eq!(buffers, 1 + 1 + 6 + 3 + 1, "buffer allocations per decode step");
    assert_eq!(submits, 2, "the sampler's submit and the step's");
}
