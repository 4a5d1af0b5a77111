//! Access to the reference fixtures in `../shared/fixtures` (read-only; made by transformers). A missing
//! fixture is a failure, never a skip.

use std::path::PathBuf;

/// `shared/fixtures/tiny-varco-a`, beside the checkout (or `$VARCO_FIXTURES`).
pub fn root() -> PathBuf {
    let dir = std::env::var_os("VARCO_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let p = dir.join("tiny-varco-a");
    assert!(p.is_dir(), "reference fixtures not found at {} (set VARCO_FIXTURES)", p.display());
    p
}

pub fn read(rel: &str) -> Vec<u8> {
    let p = root().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Names of all cases.
pub fn cases() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("cases"))
        .expect("cases/")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert!(v.len() >= 10, "expected the fixture cases, found {v:?}");
    v
}

/// Tensors of a case's expected.safetensors.
pub fn expected(case: &str) -> std::collections::HashMap<String, candle_core::Tensor> {
    let p = root().join("cases").join(case).join("expected.safetensors");
    candle_core::safetensors::load(&p, &candle_core::Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The -HF tensor name under the original LLaVA-NeXT layout's naming.
pub fn llava_next_name(n: &str) -> String {
    if let Some(r) = n.strip_prefix("vision_tower.") {
        format!("model.vision_tower.vision_tower.vision_model.{r}")
    } else if let Some(r) = n.strip_prefix("multi_modal_projector.linear_1.") {
        format!("model.mm_projector.0.{r}")
    } else if let Some(r) = n.strip_prefix("multi_modal_projector.linear_2.") {
        format!("model.mm_projector.2.{r}")
    } else if n == "image_newline" {
        "model.image_newline".into()
    } else if n == "language_model.lm_head.weight" {
        "lm_head.weight".into()
    } else {
        n.strip_prefix("language_model.").expect("a language-model tensor").to_string()
    }
}

/// Writes the tiny model's tensors, renamed by `rename`, into `dir` as `files` safetensors files (with an
/// index json when more than one); copies the tokenizer, chat template and generation config; writes
/// `config` as config.json.
pub fn write_checkpoint(dir: &std::path::Path, rename: impl Fn(&str) -> String, files: usize, config: &[u8]) {
    let bytes = read("model-hf/model.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, safetensors::tensor::TensorView)> = st.tensors().into_iter().map(|(n, v)| (rename(&n), v)).collect();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let per = views.len().div_ceil(files);
    let mut map = serde_json::Map::new();
    for (i, chunk) in views.chunks(per).enumerate() {
        let name = if files == 1 { "model.safetensors".to_string() } else { format!("model-{:05}-of-{files:05}.safetensors", i + 1) };
        for (n, _) in chunk {
            map.insert(n.clone(), serde_json::Value::String(name.clone()));
        }
        safetensors::serialize_to_file(chunk.to_vec(), &None, &dir.join(&name)).unwrap();
    }
    if files > 1 {
        let index = serde_json::json!({"metadata": {}, "weight_map": map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
    for f in ["tokenizer.json", "chat_template.json", "generation_config.json"] {
        std::fs::write(dir.join(f), read(&format!("model-hf/{f}"))).unwrap();
    }
    std::fs::write(dir.join("config.json"), config).unwrap();
}

/// The tiny fixture model, loaded from its checkpoint in `precision`.
pub fn model(ctx: &varco_web::gpu::Context, precision: varco_web::loader::Precision) -> varco_web::model::Model {
    let (w, cfg) = checkpoint();
    varco_web::loader::load_checkpoint(ctx, &w, &cfg, precision).expect("load the fixture model")
}

/// The fixture checkpoint and its config.
pub fn checkpoint() -> (varco_web::weights::WeightSource, varco_web::model::config::ModelConfig) {
    let w = varco_web::weights::WeightSource::open_dir(&root().join("model-hf")).expect("open the fixture checkpoint");
    let cfg = varco_web::model::config::ModelConfig::from_json(&String::from_utf8(read("model-hf/config.json")).unwrap(), &w).expect("its config");
    (w, cfg)
}

/// A session over the fixture model in `precision` with `context` positions, its tokenizer, template and
/// generation defaults.
pub fn session(ctx: &varco_web::gpu::Context, precision: varco_web::loader::Precision, context: usize) -> varco_web::session::Session {
    let dir = root().join("model-hf");
    let m = model(ctx, precision);
    let tok = varco_web::tokenizer::Tokenizer::from_bytes(&read("model-hf/tokenizer.json")).unwrap();
    let template = varco_web::chat::ChatTemplate::from_dir(&dir).unwrap();
    let generation = varco_web::loader::manifest::Generation::from_dir(&dir, m.cfg.text.eos_token_id).unwrap();
    pollster::block_on(varco_web::session::Session::new(ctx, m, tok, template, generation, context)).expect("a session")
}

/// Runs LLaVA-NeXT ids (−200 where `image`'s embeddings go) through the model into `cache`; the logits after
/// the last token are in `ws`.
pub fn prefill(
    ctx: &varco_web::gpu::Context,
    m: &varco_web::model::Model,
    ids: &[i64],
    image: Option<&varco_web::gpu::Tensor>,
    cache: &mut varco_web::model::llm::KvCache,
    ws: &varco_web::model::decode::Workspace,
) -> varco_web::Result<()> {
    let runs = varco_web::session::text_runs(ids, m.cfg.text.vocab)?;
    let inputs = varco_web::session::prompt_inputs(&runs, image)?;
    m.prefill(ctx, &inputs, cache, ws)
}

/// A file of this repository (the committed demo model, …), relative to its root.
pub fn read_repo(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// What [`teacher_forced`] saw over a case's steps.
pub struct Report {
    pub worst_rel: f64,
    pub mean_rel: f64,
    /// Steps whose greedy token was compared (the reference's top-1 margin well above our error).
    pub greedy_checked: usize,
    /// Steps whose argmax equals the reference's greedy token.
    pub top1_agree: usize,
    pub steps: usize,
}

/// Runs one reference case (a folder in the layout of ../shared/fixtures: case.json, expected.safetensors,
/// image.png) teacher-forced along the reference's greedy tokens: each step's top-20 logits against the
/// reference's, within `tol` relative error, and the greedy token wherever the reference's top-1 margin is
/// more than four times our error (with `strict`; otherwise only reported). The prompt's ids are the case's
/// LLaVA-NeXT ids (−200 where the image goes) or, where it has only transformers' expanded ids, those with
/// their run of image tokens folded into one −200.
pub fn teacher_forced(ctx: &varco_web::gpu::Context, m: &varco_web::model::Model, dir: &std::path::Path, tol: f64, strict: bool) -> Report {
    use candle_core::DType as CDType;
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let file = |f: &str| {
        let p = dir.join(f);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let c: serde_json::Value = serde_json::from_slice(&file("case.json")).unwrap_or_else(|e| panic!("{name}/case.json: {e}"));
    let list = |k: &str| -> Vec<i64> { c[k].as_array().unwrap_or_else(|| panic!("{name}: no {k}")).iter().map(|v| v.as_i64().unwrap()).collect() };
    let ids: Vec<i64> = if c.get("input_ids_llava_next").is_some() {
        list("input_ids_llava_next")
    } else {
        let image_token = m.cfg.image_token_id.expect("the model names its image token") as i64;
        let mut out: Vec<i64> = Vec::new();
        for id in list("input_ids_hf") {
            if id != image_token {
                out.push(id);
            } else if out.last() != Some(&-200) {
                out.push(-200);
            }
        }
        out
    };
    let generated: Vec<u32> = list("generated_ids").into_iter().map(|v| v as u32).collect();
    let margins: Vec<f64> = c["step_margins"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let exp = candle_core::safetensors::load(dir.join("expected.safetensors"), &candle_core::Device::Cpu).unwrap_or_else(|e| panic!("{name}/expected.safetensors: {e}"));
    let top_ids = exp["step_top20_ids"].to_dtype(CDType::I64).unwrap().to_vec2::<i64>().unwrap();
    let top_vals = exp["step_top20_logits"].to_dtype(CDType::F64).unwrap().to_vec2::<f64>().unwrap();
    assert_eq!(top_ids.len(), generated.len(), "{name}: a row of expected logits per generated token");
    let image = if c["image"].is_null() {
        None
    } else {
        let img = varco_web::image::decode(&file("image.png"), varco_web::image::DecodeLimits::default()).unwrap();
        let (plan, feats) = m.encode_image(ctx, &img).unwrap();
        assert_eq!(plan.n_tokens as u64, c["n_image_tokens"].as_u64().unwrap(), "{name}: image tokens");
        Some(feats)
    };
    let n = ids.len() + image.as_ref().map_or(0, |t| t.shape[0]) + generated.len();
    let mut cache = m.llm.new_cache(ctx, n).unwrap();
    let mut ws = varco_web::model::decode::Workspace::new(ctx, m, n).unwrap();
    prefill(ctx, m, &ids, image.as_ref(), &mut cache, &ws).unwrap();
    let mut report = Report { worst_rel: 0.0, mean_rel: 0.0, greedy_checked: 0, top1_agree: 0, steps: generated.len() };
    for step in 0..generated.len() {
        let l = pollster::block_on(m.read_logits(ctx, &mut ws)).unwrap();
        if step == 0 && strict {
            if let Some(full) = exp.get("prefill_last_logits") {
                let full = full.to_dtype(CDType::F64).unwrap().to_vec1::<f64>().unwrap();
                crate::harness::assert_close(&format!("{name}: prefill logits"), &l, &full, tol);
            }
        }
        let got: Vec<f32> = top_ids[step].iter().map(|&i| l[i as usize]).collect();
        let rel = crate::harness::rel_error(&got, &top_vals[step]);
        report.worst_rel = report.worst_rel.max(rel);
        report.mean_rel += rel / generated.len() as f64;
        if std::env::var_os("VARCO_VERBOSE").is_some() {
            eprintln!("{name} step {step}: {rel:.2e}");
        }
        if strict {
            assert!(rel <= tol, "{name} step {step}: top-20 logits relative error {rel:.2e} > {tol:.0e}");
        }
        let argmax = l.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
        report.top1_agree += (argmax as u32 == generated[step]) as usize;
        let abs_err = got.iter().zip(&top_vals[step]).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        if strict && margins[step] > 4.0 * abs_err + 1e-6 {
            assert_eq!(argmax as u32, generated[step], "{name} step {step}: greedy token (margin {})", margins[step]);
            report.greedy_checked += 1;
        }
        if step + 1 < generated.len() {
            m.step(ctx, &mut ws, &mut cache, generated[step]).unwrap();
        }
    }
    report
}
