//! The structure of a decode step, pinned without timing: what one more generated token costs on the tiny
//! fixture model (2 layers), through the session's own answer path, so that a change that adds work or
//! allocations to every token shows up here. The figures are derived from the design, not measured:
//!
//! dispatches = 1 (embedding gather, reading the id the previous sampler wrote) + 6 per layer + 1 (lm_head
//! with the final norm folded in) + 2 (the greedy choice's two passes), where a layer is (matvec_fused.wgsl, the norms' weights
//! folded into the 4-bit matrices): RMSNorm + q/k/v + bias + RoPE + KV append; split-K decode attention and
//! its merge; o_proj + residual; RMSNorm + gate/up + SiLU·up; down + residual. (Weights that fit one
//! binding: one dispatch per matrix.)
//!
//! buffers = 0 and bind groups = 0: everything a step touches — its activations, the logits, the sampler's
//! output, the buffers the ids come back through, the parameter arena and every dispatch's bind group — is
//! made once per session (model::decode), at its first token.
//!
//! submits = 1: the step and its sampler in one command buffer.
#![cfg(not(target_arch = "wasm32"))]

use varco_tests::fixtures;
use varco_web::generate::Settings;
use varco_web::gpu::{Context, ContextOptions, Counts};
use varco_web::loader::Precision;
use varco_web::session::{Prompt, Request};

#[test]
fn a_decoded_token_costs_its_designed_dispatches_and_allocates_nothing() {
    let ctx = pollster::block_on(Context::new(ContextOptions::default())).expect("a WebGPU adapter (lavapipe in CI)");
    let mut s = fixtures::session(&ctx, Precision::Q4, 64);
    let layers = s.model.cfg.text.layers as u64;
    assert_eq!(layers, 2);
    // the counts of a whole answer of `budget` tokens (its prefill included: it cancels in the difference)
    let mut answer = |budget: usize| -> Counts {
        let before = ctx.stats.counts();
        let req = Request {
            prompt: Prompt::Ids(vec![151644, 872, 198]),
            image: None,
            settings: Settings { max_new_tokens: Some(budget), ignore_eos: true, ..Settings::default() },
            reuse: false,
        };
        let a = pollster::block_on(s.answer(&ctx, &req, &mut |_| {}, &|| false)).unwrap();
        assert_eq!(a.generated_ids.len(), budget);
        ctx.stats.counts() - before
    };
    answer(3); // compiles pipelines, makes the step's bind groups
    let (a, b) = (answer(3), answer(7));
    let d = b - a;
    assert_eq!(d.dispatches, 4 * (1 + 6 * layers + 1 + 2), "dispatches for 4 more tokens");
    assert_eq!([d.buffers, d.bind_groups], [0, 0], "buffers and bind groups created for 4 more tokens");
    assert_eq!(d.submits, 4, "submits for 4 more tokens");
}
