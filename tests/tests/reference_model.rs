//! The CPU reference (candle-core, f32) against transformers' fixtures: image features and the logits
//! after the prompt, for a text-only and two image cases.
#![cfg(not(target_arch = "wasm32"))]

use candle_core::DType as CDType;
use varco_tests::fixtures;
use varco_tests::harness::{assert_close, rel_error};
use varco_web::image::{decode, normalize, tiles, DecodeLimits};
use varco_web::model::config::ModelConfig;
use varco_web::reference::Reference;
use varco_web::weights::WeightSource;

fn setup() -> (WeightSource, ModelConfig) {
    let w = WeightSource::open_dir(&fixtures::root().join("model-hf")).unwrap();
    let cfg = ModelConfig::from_json(&String::from_utf8(fixtures::read("model-hf/config.json")).unwrap(), &w).unwrap();
    (w, cfg)
}

fn check_case(r: &Reference, cfg: &ModelConfig, case: &str) {
    let c = fixtures::json(&format!("cases/{case}/case.json"));
    let exp = fixtures::expected(case);
    let ids: Vec<i64> = c["input_ids_llava_next"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let img = if c["image"].is_null() {
        None
    } else {
        let rgb = decode(&fixtures::read(&format!("cases/{case}/image.png")), DecodeLimits::default()).unwrap();
        let (plan, ts) = tiles(&rgb, &cfg.anyres).unwrap();
        let f = r.image_features(&normalize(&ts), &plan).unwrap();
        if let Some(want) = exp.get("image_features") {
            let got: Vec<f32> = f.flatten_all().unwrap().to_vec1().unwrap();
            let want: Vec<f64> = want.to_dtype(CDType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_close(&format!("{case}: CPU image features"), &got, &want, 1e-4);
        }
        Some(f)
    };
    let l = r.logits(&ids, img.as_ref()).unwrap();
    let top_ids = exp["step_top20_ids"].to_dtype(CDType::I64).unwrap().to_vec2::<i64>().unwrap();
    let top_vals = exp["step_top20_logits"].to_dtype(CDType::F64).unwrap().to_vec2::<f64>().unwrap();
    let got: Vec<f32> = top_ids[0].iter().map(|&i| l[i as usize]).collect();
    eprintln!("{case}: CPU reference top-20 logit error {:.2e}", rel_error(&got, &top_vals[0]));
    assert_close(&format!("{case}: CPU logits after the prompt"), &got, &top_vals[0], 1e-4);
    let argmax = l.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
    assert_eq!(argmax as u64, c["generated_ids"][0].as_u64().unwrap(), "{case}: first greedy token");
}

#[test]
fn cpu_reference_matches_transformers() {
    let (w, cfg) = setup();
    let r = Reference::new(&w, &cfg);
    for case in ["text_only_ko", "pixel_1x1", "grounding_500x375"] {
        check_case(&r, &cfg, case);
    }
}
