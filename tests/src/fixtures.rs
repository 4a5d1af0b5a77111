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
