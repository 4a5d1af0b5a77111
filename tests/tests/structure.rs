//! The structure of a decode step, pinned without timing: how many dispatches, buffer allocations and
//! submits one more generated token costs on the tiny fixture model (2 layers), through generation's own
//! decode loop, so that a change that adds work to every token shows up here. The figures are derived from
//! the design, not measured:
//!
//! dispatches = 1 (embedding gather, reading the id the previous sampler wrote) + 13 per layer + 2 (final
//! norm, lm_head) + 1 (sample), where a layer is: RMSNorm, fused qkv matvec, RoPE (q and k heads in one
//! dispatch), KV-cache append, split-K decode attention and its merge, o_proj matvec, residual add,
//! RMSNorm, fused gate/up matvec, SiLU·up, down matvec, residual add. (Weights that fit one binding: one
//! dispatch per matrix.)
//!
//! buffers = 1 (the embedded row) + 6 (the layer scratch: normed row, qkv, attention output, gate/up,
//! SiLU·up, decode-attention partials; shared by all layers) + 3 (last row, its norm, logits) + 1 (the
//! mappable buffer the sampled id comes back through). The uniform arena is pooled: none.
//!
//! submits = 1: the step and its sampler in one command buffer.
#![cfg(not(target_arch = "wasm32"))]

use varco_tests::fixtures;
use varco_web::generate::{decode, SplitMix};
use varco_web::gpu::{Context, ContextOptions};
use varco_web::kernels::sample::Sampling;
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
    // the counts of a whole generation of `budget` tokens (prefill included: it cancels in the difference)
    let generation = |budget: usize| -> [u64; 3] {
        let before = ctx.stats.counts();
        let mut cache = m.llm.new_cache(&ctx, 16).unwrap();
        let logits = m.prefill(&ctx, &[151644, 872, 198], None, &mut cache).unwrap();
        let mut n = 0;
        pollster::block_on(decode(&ctx, &m, logits, &mut cache, budget, Sampling::GREEDY, &mut SplitMix(0), &mut |_| {
            n += 1;
            Ok(true)
        }))
        .unwrap();
        assert_eq!(n, budget);
        let after = ctx.stats.counts();
        [after.0 - before.0, after.1 - before.1, after.2 - before.2]
    };
    generation(3); // compiles pipelines, fills the uniform pool
    let (a, b) = (generation(3), generation(4));
    let [dispatches, buffers, submits] = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let layers = cfg.text.layers as u64;
    assert_eq!(layers, 2);
    assert_eq!(dispatches, 1 + 13 * layers + 2 + 1, "dispatches per generated token");
    assert_eq!(buffers, 1 + 6 + 3 + 1, "buffer allocations per generated token");
    assert_eq!(submits, 1, "submits per generated token");
}
