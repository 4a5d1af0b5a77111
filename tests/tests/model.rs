//! The model's pieces on the GPU against transformers' fixtures (f32 activations on the checkpoint's f16
//! weights, the exact path): SigLIP's last hidden state, and the image features after the projector, unpad,
//! shrink and newlines. Both checkpoint layouts, and broken checkpoints.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use candle_core::DType as CDType;
use varco_tests::fixtures;
use varco_tests::harness::{assert_close, rel_error};
use varco_web::gpu::{Context, ContextOptions, DType, Recorder, Tensor};
use varco_web::image::{normalize, AnyresConfig};
use varco_web::model::config::ModelConfig;
use varco_web::loader::{load_checkpoint, Precision};
use varco_web::model::decode::Workspace;
use varco_web::weights::{Layout, WeightSource};

fn ctx() -> &'static Context {
    static C: OnceLock<Context> = OnceLock::new();
    C.get_or_init(|| pollster::block_on(Context::new(ContextOptions::default())).expect("a WebGPU adapter (lavapipe in CI)"))
}

fn hf_dir() -> std::path::PathBuf {
    fixtures::root().join("model-hf")
}

fn load(dir: &Path, config: &str) -> (WeightSource, ModelConfig) {
    let w = WeightSource::open_dir(dir).unwrap();
    let cfg = ModelConfig::from_json(config, &w).unwrap();
    (w, cfg)
}

/// Runs tower, projector and merge on the grounding case's own tiles; returns (last hidden, image features).
fn image_path(w: &WeightSource, cfg: &ModelConfig) -> (Vec<f32>, Vec<f32>) {
    let ctx = ctx();
    let exp = fixtures::expected("grounding_500x375");
    let tiles_u8 = exp["tiles_rgb_u8"].clone();
    let (n_tiles, s) = (tiles_u8.dims()[0], tiles_u8.dims()[1]);
    let raw = tiles_u8.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let tiles: Vec<image::RgbImage> = raw.chunks(s * s * 3).map(|c| image::RgbImage::from_raw(s as u32, s as u32, c.to_vec()).unwrap()).collect();
    assert_eq!(tiles.len(), n_tiles);
    let px = normalize(&tiles);
    let pixels = Tensor::from_f32(ctx, &px, &[n_tiles, 3, s, s], DType::F32).unwrap();
    let m = load_checkpoint(ctx, w, cfg, Precision::F32).unwrap();
    let (tower, proj) = (&m.vision, &m.projector);
    let plan = cfg.anyres.plan(500, 375);
    let mut rec = Recorder::new(ctx);
    let hidden = tower.forward(&mut rec, &pixels, DType::F32).unwrap();
    let projected = proj.forward(&mut rec, &hidden).unwrap();
    let feats = proj.merge(&mut rec, &projected, &plan, cfg.vision.cells() as u32).unwrap();
    rec.submit().unwrap();
    let h = pollster::block_on(hidden.to_f32(ctx)).unwrap();
    let f = pollster::block_on(feats.to_f32(ctx)).unwrap();
    (h, f)
}

fn expected_f64(name: &str) -> Vec<f64> {
    let exp = fixtures::expected("grounding_500x375");
    exp[name].to_dtype(CDType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn hf_config_text() -> String {
    String::from_utf8(fixtures::read("model-hf/config.json")).unwrap()
}

#[test]
fn config_from_the_hf_layout() {
    let (w, cfg) = load(&hf_dir(), &hf_config_text());
    assert_eq!(w.layout, Layout::Hf);
    let t = &cfg.text;
    assert_eq!((t.hidden, t.intermediate, t.layers, t.heads, t.kv_heads, t.head_dim, t.vocab), (32, 88, 2, 2, 1, 16, 151_680));
    assert_eq!((t.rope_theta, t.rms_eps, t.tie_word_embeddings, t.eos_token_id), (1e6, 1e-6, false, 151_645));
    let v = &cfg.vision;
    assert_eq!((v.hidden, v.intermediate, v.layers, v.heads, v.head_dim, v.image_size, v.patch_size), (144, 288, 2, 2, 72, 384, 14));
    assert_eq!(cfg.anyres.pinpoints, AnyresConfig::default().pinpoints);
    assert_eq!((cfg.anyres.cells, cfg.anyres.max_patches), (27, 9));
    assert_eq!(cfg.image_token_id, Some(151_675));
}

#[test]
fn vision_tower_and_image_features_match_transformers() {
    let (w, cfg) = load(&hf_dir(), &hf_config_text());
    let (hidden, feats) = image_path(&w, &cfg);
    let (eh, ef) = (expected_f64("vision_last_hidden"), expected_f64("image_features"));
    eprintln!("relative error: vision_last_hidden {:.2e}, image_features {:.2e}", rel_error(&hidden, &eh), rel_error(&feats, &ef));
    assert_close("vision_last_hidden (f32 path)", &hidden, &eh, 1e-3);
    assert_close("image_features (f32 path)", &feats, &ef, 1e-3);
}

/// The original LLaVA-NeXT layout, made by renaming the -HF tensors, gives the same config and results.
#[test]
fn llava_next_layout_gives_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_checkpoint(dir.path(), fixtures::llava_next_name, 1, &fixtures::read("llava-next-config.json"));
    let next_cfg = String::from_utf8(fixtures::read("llava-next-config.json")).unwrap();
    let (w2, cfg2) = load(dir.path(), &next_cfg);
    assert_eq!(w2.layout, Layout::LlavaNext);
    let (w1, cfg1) = load(&hf_dir(), &hf_config_text());
    assert_eq!(cfg1.text, cfg2.text);
    assert_eq!(cfg1.vision, cfg2.vision);
    assert_eq!(cfg1.anyres.pinpoints, cfg2.anyres.pinpoints);
    assert_eq!(w1.names(), w2.names(), "the same canonical tensors");
    let a = image_path(&w1, &cfg1);
    let b = image_path(&w2, &cfg2);
    assert_eq!(a.0, b.0, "identical vision output");
    assert_eq!(a.1, b.1, "identical image features");
    // and identical language-model logits
    let ids: Vec<i64> = vec![151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198];
    let logits = |w: &WeightSource, cfg: &ModelConfig| {
        let m = load_checkpoint(ctx(), w, cfg, Precision::F32).unwrap();
        let mut cache = m.llm.new_cache(ctx(), ids.len()).unwrap();
        let ws = Workspace::new(ctx(), &m, ids.len()).unwrap();
        fixtures::prefill(ctx(), &m, &ids, None, &mut cache, &ws).unwrap();
        pollster::block_on(ws.logits().to_f32(ctx())).unwrap()
    };
    assert_eq!(logits(&w1, &cfg1), logits(&w2, &cfg2), "identical logits");
}

/// A prefill chunk is as long as the device binds its largest buffer, the gate and up projections' output
/// (rows × 2 × intermediate): for the 14B, 2 × 13,824 values a token, 55,296 bytes in f16. Halves from 8,192
/// down to 1,024, never below (the manifest's limits check refuses a model whose 1,024 rows do not bind).
#[test]
fn prefill_chunks_follow_the_binding_limit() {
    use varco_web::model::prefill_chunk;
    let t = varco_web::bench::model::config("14b").unwrap().text;
    let row = 2 * 13_824 * 2u64;
    assert_eq!(prefill_chunk(2047 << 20, &t, DType::F16), 8192);
    assert_eq!(prefill_chunk(8192 * row, &t, DType::F16), 8192);
    assert_eq!(prefill_chunk(8192 * row - 1, &t, DType::F16), 4096);
    // WebGPU's default limit, 128 MiB: 2,427 rows in f16, 1,213 in f32
    assert_eq!(prefill_chunk(128 << 20, &t, DType::F16), 2048);
    assert_eq!(prefill_chunk(128 << 20, &t, DType::F32), 1024);
    assert_eq!(prefill_chunk(1 << 20, &t, DType::F32), 1024);
}

/// A session's chunks after the first follow the device's pace: about a second's worth of tokens, never fewer
/// than 1,024 nor more than the model's chunk.
#[test]
fn prefill_chunks_follow_the_pace() {
    use varco_web::model::paced_chunk;
    assert_eq!(paced_chunk(1024, 0.25, 8192), 4096);
    assert_eq!(paced_chunk(1024, 0.125, 8192), 8192);
    assert_eq!(paced_chunk(1024, 0.01, 8192), 8192);
    assert_eq!(paced_chunk(1024, 0.0, 8192), 8192);
    assert_eq!(paced_chunk(1024, 2.0, 8192), 1024, "a slow device keeps the shortest chunks");
    assert_eq!(paced_chunk(2000, 1.0, 8192), 2000);
    assert_eq!(paced_chunk(500, 10.0, 500), 500, "a model chunk under 1,024 is kept");
    assert_eq!(paced_chunk(500, 0.1, 500), 500);
}

/// What a request asks beyond the model or the context is a request error (the npm package's EngineError),
/// told in the user's terms, and the session answers the next request as if nothing happened.
#[test]
fn requests_beyond_the_context_or_the_vocabulary_are_refused() {
    use varco_web::chat::{Message, Part};
    use varco_web::session::{Prompt, Request};
    use varco_web::Error;
    let mut s = fixtures::session(ctx(), Precision::F32, 40);
    let ask = |s: &mut varco_web::session::Session, prompt: Prompt, image: Option<image::RgbImage>| {
        let req = Request { prompt, image, settings: Default::default(), reuse: true };
        pollster::block_on(s.answer(ctx(), &req, &mut |_| {}, &|| false))
    };
    let request_error = |r: varco_web::Result<varco_web::session::Answer>, says: &str| {
        let e = r.err().expect("refused");
        assert!(matches!(e, Error::Request(_)), "{e:?} is not a request error");
        assert_eq!(e.class(), "EngineError");
        assert!(e.to_string().contains(says), "{e} does not say {says:?}");
    };
    let long = Prompt::Chat(vec![Message::user(vec![Part::Text { text: "word ".repeat(60) }])]);
    request_error(ask(&mut s, long, None), "the context holds 40");
    request_error(ask(&mut s, Prompt::Ids(vec![1, 999_999]), None), "outside the vocabulary");
    request_error(ask(&mut s, Prompt::Ids(vec![1, -200, 3]), None), "no image was given");
    let img = image::RgbImage::new(8, 8);
    request_error(ask(&mut s, Prompt::Ids(vec![1, 2, 3]), Some(img)), "no message has an image part");
    let two = Prompt::Chat(vec![Message::user(vec![Part::Image, Part::Image, Part::Text { text: "?".into() }])]);
    request_error(ask(&mut s, two, None), "this model takes one");
    request_error(ask(&mut s, Prompt::Chat(vec![]), None), "no messages");
    let bad_role = Prompt::Chat(vec![Message { role: "tool".into(), content: vec![Part::Text { text: "?".into() }] }]);
    request_error(ask(&mut s, bad_role, None), "role");
    // a context larger than the model's is refused when the session is made
    let (w, cfg) = fixtures::checkpoint();
    let m = load_checkpoint(ctx(), &w, &cfg, Precision::F32).unwrap();
    let e = m.llm.new_cache(ctx(), cfg.text.max_positions + 1).err().unwrap().to_string();
    assert!(e.contains("exceed the model's context"), "{e}");
    // still usable
    let ok = ask(&mut s, Prompt::Ids(vec![151644, 872, 198]), None).expect("a short prompt is answered");
    assert!(ok.usage.prompt_tokens == 3 && !ok.generated_ids.is_empty());
}

#[test]
fn broken_checkpoints_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    // nothing there
    assert!(WeightSource::open_dir(dir.path()).err().unwrap().to_string().contains("neither model.safetensors"));
    // truncated file
    let bytes = fixtures::read("model-hf/model.safetensors");
    std::fs::write(dir.path().join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = WeightSource::open_dir(dir.path()).err().unwrap().to_string();
    assert!(e.contains("truncated") || e.contains("model.safetensors"), "{e}");
    // not a VARCO checkpoint
    let one = vec![0u8; 16];
    let t = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &one).unwrap();
    safetensors::serialize_to_file(vec![("encoder.weight".to_string(), t)], &None::<HashMap<String, String>>, &dir.path().join("model.safetensors")).unwrap();
    assert!(WeightSource::open_dir(dir.path()).err().unwrap().to_string().contains("not a VARCO-VISION"));
    // missing and misshapen tensors are named
    let (w, cfg) = load(&hf_dir(), &hf_config_text());
    let e = w.f32("language_model.model.layers.7.input_layernorm.weight", &[32]).unwrap_err().to_string();
    assert!(e.contains("language_model.model.layers.7.input_layernorm.weight") && e.contains("missing"), "{e}");
    let e = w.f32("image_newline", &[33]).unwrap_err().to_string();
    assert!(e.contains("image_newline") && e.contains("[32]"), "{e}");
    let _ = cfg;
}
