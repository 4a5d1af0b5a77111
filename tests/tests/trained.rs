//! The demo's trained model (web/demo/public/models/synth, issue 17) against transformers: for each case of
//! tests/fixtures/trained (held-out scenes: OCR over Latin and Hangul, grounding, referring in English and
//! Korean), transformers' greedy answer on a checkpoint of the converted model's exact 4-bit values
//! (train/dequant.py, train/fixtures.py) is reproduced token for token by our engine on the converted model,
//! f32 activations, through the session as the CLI and the browser use it.
#![cfg(not(target_arch = "wasm32"))]

use std::path::PathBuf;

use varco_web::chat::Message;
use varco_web::generate::Settings;
use varco_web::gpu::{Context, ContextOptions, DType};
use varco_web::image::{decode, DecodeLimits};
use varco_web::loader::stream::Converted;
use varco_web::session::Request;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cases() -> Vec<PathBuf> {
    let dir = repo().join("tests/fixtures/trained/cases");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|e| e.unwrap().path()).collect();
    v.sort();
    assert!(v.len() >= 4, "expected the trained model's four cases, found {v:?}");
    v
}

#[test]
fn the_trained_model_answers_as_transformers_does() {
    let ctx = pollster::block_on(Context::new(ContextOptions::default())).expect("a WebGPU adapter (lavapipe in CI)");
    let model = Converted::open_dir(&ctx, &repo().join("web/demo/public/models/synth"), Some(DType::F32)).expect("the demo's model");
    let mut s = pollster::block_on(model.session(&ctx, Some(4096))).unwrap();
    let mut failures = Vec::new();
    for dir in cases() {
        let case: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("case.json")).unwrap()).unwrap();
        let name = case["name"].as_str().unwrap().to_string();
        let messages: Vec<Message> = serde_json::from_value(case["conversation"].clone()).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["generated_ids"].clone()).unwrap();
        let image = decode(&std::fs::read(dir.join("image.png")).unwrap(), DecodeLimits::default()).unwrap();
        let settings = Settings { max_new_tokens: Some(want.len()), temperature: Some(0.0), ..Settings::default() };
        let req = Request { settings, ..Request::chat(messages, Some(image)) };
        let a = pollster::block_on(s.answer(&ctx, &req, &mut |_| {}, &|| false)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let prompt_len = case["input_ids_hf"].as_array().unwrap().len();
        assert_eq!(a.usage.prompt_tokens, prompt_len, "{name}: the prompt's tokens (text and image) differ in number");
        assert_eq!(a.usage.image_tokens, case["n_image_tokens"].as_u64().map(|n| n as usize), "{name}: the image's tokens");
        if a.generated_ids != want {
            let at = a.generated_ids.iter().zip(&want).position(|(x, y)| x != y).unwrap_or(a.generated_ids.len().min(want.len()));
            let margin = case["step_margins"].get(at).and_then(|m| m.as_f64()).unwrap_or(f64::NAN);
            failures.push(format!("{name}: differs at token {at} (transformers' top-1 margin there {margin:.3}):\n  ours {:?}\n  want {:?}", a.text, case["generated_text"]));
        }
        // the answer means something: its boxes parse (OCR, grounding) or it names an object (referring)
        match case["task"].as_str().unwrap() {
            "ocr" | "gro" => assert!(!a.spans.is_empty(), "{name}: no boxes in {:?}", a.text),
            _ => assert!(!a.text.trim().is_empty(), "{name}: an empty answer"),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
