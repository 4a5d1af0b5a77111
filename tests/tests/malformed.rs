//! Broken models, each refused with its own message in the user's terms: what is wrong, where, and what to
//! do. A fault the manifest alone shows is refused before anything is allocated on the GPU; one found while
//! the shards stream in (a NaN among the scales, a damaged or short shard) leaves no buffer behind. Also
//! broken checkpoints (truncated or damaged safetensors, shapes that disagree with the config) and the
//! pieces a session checks when it is made (tokenizer, template, stop ids).
#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use varco_tests::fixtures;
use varco_web::convert::{self, Options};
use varco_web::gpu::{Context, ContextOptions};
use varco_web::loader::manifest::Manifest;
use varco_web::loader::stream::load_dir;
use varco_web::weights::WeightSource;

/// wgpu's live-object counts are process-wide: the tests of this file take turns.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

fn ctx() -> &'static Context {
    static C: OnceLock<Context> = OnceLock::new();
    C.get_or_init(|| pollster::block_on(Context::new(ContextOptions::default())).expect("a WebGPU adapter (lavapipe in CI)"))
}

/// The tiny fixture converted once (default plan, 1 MiB shards).
fn converted() -> &'static Path {
    static D: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &D.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("tiny");
        convert::convert(&fixtures::root().join("model-hf"), &out, &Options { shard_size: 1 << 20, ..Options::default() }, &mut |_| {}).unwrap();
        (tmp, out)
    })
    .1
}

/// Buffers alive on the device now (wgpu's own count), once freed resources are reclaimed (an empty submit
/// releases what writes still waiting for one held).
fn live_buffers() -> isize {
    let c = ctx();
    c.queue.submit([]);
    c.device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    c.device.get_internal_counters().hal.buffers.read()
}

/// A copy of the converted model with `damage` done to it, loaded: its error message. `before_alloc`: the
/// fault is in the manifest, so no buffer may have been created; otherwise none may be left alive.
fn refused(name: &str, before_alloc: bool, damage: impl Fn(&Path)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join(name);
    std::fs::create_dir(&d).unwrap();
    for e in std::fs::read_dir(converted()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
    }
    damage(&d);
    let created = ctx().stats.counts().buffers;
    let live = live_buffers();
    let e = match load_dir(ctx(), &d) {
        Ok(_) => panic!("{name}: the broken model loaded"),
        Err(e) => e,
    };
    assert_eq!(e.class(), "ModelFormatError", "{name}: {e:?}");
    if before_alloc {
        assert_eq!(ctx().stats.counts().buffers, created, "{name}: buffers were created before the refusal");
    }
    assert_eq!(live_buffers(), live, "{name}: buffers left alive after the refusal");
    e.to_string()
}

fn edit(d: &Path, f: impl Fn(&mut serde_json::Value)) {
    let p = d.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

fn manifest() -> Manifest {
    Manifest::parse(&std::fs::read(converted().join("manifest.json")).unwrap()).unwrap()
}

/// Index of tensor `name` in the manifest's table.
fn tensor(name: &str) -> usize {
    manifest().tensors.iter().position(|t| t.name == name).unwrap()
}

fn says(e: &str, parts: &[&str]) {
    for p in parts {
        assert!(e.contains(p), "{e:?} does not say {p:?}");
    }
}

#[test]
fn broken_manifests_are_refused_before_anything_is_allocated() {
    let _turn = serial();
    let q = tensor("llm.0.qkv");
    let v = tensor("llm.norm");
    let cases: Vec<(&str, Box<dyn Fn(&mut serde_json::Value)>, Vec<&str>)> = vec![
        ("not a manifest", Box::new(|m| m["format"] = "safetensors".into()), vec!["not a varco-web model manifest"]),
        ("older version", Box::new(|m| m["version"] = 1.into()), vec!["version 1", "older varco", "varco convert"]),
        ("newer version", Box::new(|m| m["version"] = 3.into()), vec!["version 3", "newer varco"]),
        ("heads that do not divide", Box::new(|m| m["config"]["text"]["kv_heads"] = 3.into()), vec!["do not divide"]),
        ("a zero size", Box::new(|m| m["config"]["text"]["intermediate"] = 0.into()), vec!["intermediate_size = 0"]),
        ("an odd head size", Box::new(|m| m["config"]["text"]["head_dim"] = 12.into()), vec!["head_dim 12", "multiples of 8"]),
        ("a shape that disagrees with the config", Box::new(move |m| m["tensors"][q]["n"] = 65.into()), vec!["llm.0.qkv", "the config and plan call for"]),
        ("a missing tensor", Box::new(move |m| { m["tensors"].as_array_mut().unwrap().remove(v); }), vec!["tensors, where the config and plan call for"]),
        ("a tensor twice", Box::new(move |m| { let t = m["tensors"][v].clone(); m["tensors"][v + 1] = t; }), vec!["llm.norm", "twice"]),
        ("an unknown tensor", Box::new(move |m| m["tensors"][v]["name"] = "llm.extra".into()), vec!["llm.extra", "not part of this model"]),
        ("an array past the shards", Box::new(move |m| m["tensors"][v]["data"]["shard"] = 40.into()), vec!["llm.norm", "past the shards"]),
        ("a misaligned array", Box::new(move |m| { let o = m["tensors"][v]["data"]["offset"].as_u64().unwrap(); m["tensors"][v]["data"]["offset"] = (o + 4).into(); }), vec!["llm.norm", "256-byte boundary"]),
        ("overlapping arrays", Box::new(move |m| m["tensors"][q]["data"] = m["tensors"][q - 1]["data"].clone()), vec!["overlap"]),
        ("a wrong array length", Box::new(move |m| m["tensors"][v]["data"]["length"] = 12.into()), vec!["llm.norm", "has 12 bytes"]),
        ("shard sizes that do not add up", Box::new(|m| m["total_bytes"] = 12.into()), vec!["shard sizes do not add up"]),
        ("a shard size off the alignment", Box::new(|m| m["shard_size"] = 1000.into()), vec!["shard size 1000"]),
        ("a stop id beyond the vocabulary", Box::new(|m| m["generation"]["eos_token_ids"] = serde_json::json!([999_999])), vec!["stop id 999999", "outside the vocabulary"]),
        ("a sampler setting no sampler takes", Box::new(|m| m["generation"]["top_p"] = 1.5.into()), vec!["top_p 1.5"]),
        ("not JSON", Box::new(|m| *m = serde_json::Value::String("{".into())), vec!["manifest.json"]),
    ];
    assert!(cases.len() >= 19);
    for (name, f, want) in &cases {
        let e = refused(name, true, |d| edit(d, f));
        says(&e, want);
        assert!(e.starts_with("checkpoint: manifest.json"), "{name}: {e}");
    }
}

/// The stream position (shard, offset) of `array` of tensor `t`.
fn at(m: &Manifest, a: &varco_web::loader::manifest::ArrayRef) -> (String, u64) {
    (m.shards[a.shard].file.clone(), a.offset)
}

#[test]
fn faults_found_while_streaming_leave_nothing_allocated() {
    let _turn = serial();
    let m = manifest();
    let head = &m.tensors[tensor("llm.lm_head")];
    let norm = &m.tensors[tensor("llm.1.in_norm")];
    let poke = |file: &str, offset: u64, bytes: &[u8]| {
        let file = file.to_string();
        let bytes = bytes.to_vec();
        move |d: &Path| {
            let p = d.join(&file);
            let mut b = std::fs::read(&p).unwrap();
            b[offset as usize..offset as usize + bytes.len()].copy_from_slice(&bytes);
            std::fs::write(&p, b).unwrap();
            // the damage came before the hash was taken: the manifest agrees with the shard
            edit(d, |v| {
                let i = v["shards"].as_array().unwrap().iter().position(|s| s["file"] == file.as_str()).unwrap();
                v["shards"][i]["sha256"] = varco_web::loader::stream::hex(&<sha2::Sha256 as sha2::Digest>::digest(&std::fs::read(d.join(&file)).unwrap())).into();
            });
        }
    };
    let (file, off) = at(&m, head.scales.as_ref().unwrap());
    let e = refused("an infinite scale", false, poke(&file, off + 2, &0x7C00u16.to_le_bytes()));
    says(&e, &["llm.lm_head", "NaN or infinite", "scales", "convert the checkpoint again"]);
    let (file, off) = at(&m, &norm.data);
    let e = refused("a NaN norm weight", false, poke(&file, off + 8, &f32::NAN.to_le_bytes()));
    says(&e, &["llm.1.in_norm", "NaN or infinite", "values"]);
    let shard = m.shards[1].file.clone();
    let e = refused("a flipped bit", false, |d| {
        let p = d.join(&shard);
        let mut b = std::fs::read(&p).unwrap();
        b[100] ^= 1;
        std::fs::write(&p, b).unwrap();
    });
    says(&e, &[&shard, "corrupt", "SHA-256"]);
    let e = refused("a short shard", false, |d| {
        let p = d.join(&shard);
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    });
    says(&e, &[&shard, "truncated"]);
    let e = refused("a missing shard", false, |d| std::fs::remove_file(d.join(&shard)).unwrap());
    says(&e, &[&shard]);
}

#[test]
fn what_a_session_checks_is_refused_by_name() {
    let _turn = serial();
    use varco_web::chat::ChatTemplate;
    use varco_web::session::Session;
    let m = manifest();
    let model = || fixtures::model(ctx(), varco_web::loader::Precision::Q4);
    let tok = || varco_web::tokenizer::Tokenizer::from_bytes(&fixtures::read("model-hf/tokenizer.json")).unwrap();
    let new = |model, tok, template: &str, g| match pollster::block_on(Session::new(ctx(), model, tok, ChatTemplate::new(template), g, 64)) {
        Ok(_) => panic!("a session was made with the template {template:?}"),
        Err(e) => e,
    };
    // a template that does not parse
    let e = new(model(), tok(), "{{ messages[ }}", m.generation.clone());
    assert_eq!(e.class(), "ModelFormatError");
    says(&e.to_string(), &["chat template does not parse"]);
    // a tokenizer whose ids go beyond the embedding: the real tokenizer (ids up to 151,675) on a model of the
    // same shapes with 151,000 embedding rows
    let (_, mut cfg) = fixtures::checkpoint();
    cfg.text.vocab = 151_000;
    let mut t = varco_web::bench::model::random_tensors(ctx(), &cfg, &varco_web::loader::plan::QuantPlan::DEFAULT).unwrap();
    let small = varco_web::model::Model::new(ctx(), &cfg, varco_web::gpu::DType::F32, &mut t).unwrap();
    let mut g = m.generation.clone();
    g.eos_token_ids = vec![1];
    let e = new(small, tok(), &m.chat_template, g);
    assert_eq!(e.class(), "ModelFormatError");
    says(&e.to_string(), &["tokenizer has ids up to 151675", "embedding has 151000 rows"]);
    // a stop id beyond the vocabulary
    let mut g = m.generation.clone();
    g.eos_token_ids = vec![200_000];
    let e = new(model(), tok(), &m.chat_template, g);
    says(&e.to_string(), &["stop id 200000"]);
}

#[test]
fn broken_checkpoints_say_what_is_wrong_with_the_file() {
    let _turn = serial();
    let bytes = fixtures::read("model-hf/model.safetensors");
    let labels = |e: varco_web::Error| {
        let s = e.to_string();
        // the library's own names say nothing to the user
        for internal in ["MetadataIncompleteBuffer", "InvalidHeaderLength", "HeaderTooSmall", "InvalidHeaderDeserialization"] {
            assert!(!s.contains(internal), "{s}");
        }
        s
    };
    let e = labels(WeightSource::from_bytes(vec![bytes[..bytes.len() - 1000].to_vec()]).err().unwrap());
    says(&e, &["truncated", "download or copy the file again"]);
    let e = labels(WeightSource::from_bytes(vec![bytes[..5].to_vec()]).err().unwrap());
    says(&e, &["only 5 bytes", "too short"]);
    let e = labels(WeightSource::from_bytes(vec![bytes[..200].to_vec()]).err().unwrap());
    says(&e, &["header is said to take", "truncated"]);
    let mut b = bytes.clone();
    b[9] = b'#';
    let e = labels(WeightSource::from_bytes(vec![b]).err().unwrap());
    says(&e, &["header", "not readable"]);
    // a config that disagrees with the weights: the tensor and both shapes named
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value = fixtures::json("model-hf/config.json");
    cfg["text_config"]["intermediate_size"] = 96.into();
    fixtures::write_checkpoint(dir.path(), |n| n.to_string(), 1, cfg.to_string().as_bytes());
    let out = dir.path().join("out");
    let e = convert::convert(dir.path(), &out, &Options::default(), &mut |_| {}).err().unwrap().to_string();
    says(&e, &["gate_proj", "shape", "[88, 32]", "[96, 32]"]);
}
