//! `varco convert` and loading converted models: identical output from both layouts and from sharded input,
//! determinism, verified shards (a flipped byte, a truncated shard, a tampered manifest are caught), the
//! converted model computing exactly what the directly loaded one does (also when the runtime splits its
//! weights), every precision plan, the report, and bad input refused without leaving anything behind.
#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use varco_tests::fixtures;
use varco_tests::harness::rel_error;
use varco_web::convert::{self, partial_path, Options};
use varco_web::gpu::tensor::WeightFormat;
use varco_web::gpu::{Context, ContextOptions};
use varco_web::image::{decode, DecodeLimits};
use varco_web::loader::manifest::Manifest;
use varco_web::loader::plan::{Kind, QuantPlan};
use varco_web::loader::stream::load_dir;
use varco_web::loader::{load_checkpoint, Precision};
use varco_web::model::activation;
use varco_web::model::decode::Workspace;
use varco_web::model::Model;
use varco_web::weights::WeightSource;

fn ctx() -> &'static Context {
    static C: OnceLock<Context> = OnceLock::new();
    C.get_or_init(|| pollster::block_on(Context::new(ContextOptions::default())).expect("a WebGPU adapter (lavapipe in CI)"))
}

fn hf_dir() -> PathBuf {
    fixtures::root().join("model-hf")
}

/// Small shards, so that tensors span shard boundaries in the tiny model.
fn small_shards(plan: QuantPlan) -> Options {
    Options { plan, shard_size: 1 << 20, ..Options::default() }
}

fn convert_to(input: &Path, out: &Path, opts: &Options) -> convert::Outcome {
    convert::convert(input, out, opts, &mut |_| {}).unwrap_or_else(|e| panic!("converting {}: {e}", input.display()))
}

/// Every file of a directory, by name, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

fn assert_same_dirs(a: &Path, b: &Path, what: &str) {
    let (fa, fb) = (files(a), files(b));
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&fa), names(&fb), "{what}: different files");
    for ((n, x), (_, y)) in fa.iter().zip(&fb) {
        assert!(x == y, "{what}: {n} differs");
    }
}

#[test]
fn both_layouts_and_sharded_input_give_byte_identical_output() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = small_shards(QuantPlan::DEFAULT);
    let a = tmp.path().join("a");
    let out = convert_to(&hf_dir(), &a, &opts);
    assert!(out.manifest.shards.len() >= 3, "the tiny model in 1 MiB shards spans several");
    // the same input again: the same bytes
    let again = tmp.path().join("again");
    convert_to(&hf_dir(), &again, &opts);
    assert_same_dirs(&a, &again, "a second conversion");
    // the original LLaVA-NeXT layout (renamed tensors, its own config.json)
    let next = tmp.path().join("next-in");
    std::fs::create_dir(&next).unwrap();
    fixtures::write_checkpoint(&next, fixtures::llava_next_name, 1, &fixtures::read("llava-next-config.json"));
    assert_eq!(WeightSource::open_dir(&next).unwrap().layout, varco_web::weights::Layout::LlavaNext);
    let b = tmp.path().join("b");
    convert_to(&next, &b, &opts);
    assert_same_dirs(&a, &b, "the LLaVA-NeXT layout");
    // the -HF layout split over three files with an index json
    let sharded = tmp.path().join("sharded-in");
    std::fs::create_dir(&sharded).unwrap();
    fixtures::write_checkpoint(&sharded, |n| n.to_string(), 3, &fixtures::read("model-hf/config.json"));
    assert!(sharded.join("model.safetensors.index.json").exists());
    let c = tmp.path().join("c");
    convert_to(&sharded, &c, &opts);
    assert_same_dirs(&a, &c, "a sharded checkpoint");
}

#[test]
fn shards_match_their_hashes_and_damage_is_detected_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let out = convert_to(&hf_dir(), &dir, &small_shards(QuantPlan::DEFAULT));
    let m = &out.manifest;
    // every shard and the tokenizer against a hash computed here
    let mut total = 0;
    for s in &m.shards {
        let bytes = std::fs::read(dir.join(&s.file)).unwrap();
        assert_eq!(bytes.len() as u64, s.bytes, "{}", s.file);
        assert_eq!(format!("{:x}", Sha256::digest(&bytes)), s.sha256, "{}", s.file);
        total += s.bytes;
    }
    assert_eq!(total, m.total_bytes);
    assert_eq!(format!("{:x}", Sha256::digest(std::fs::read(dir.join("tokenizer.json")).unwrap())), m.tokenizer.sha256);
    assert_eq!(&Manifest::parse(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap(), m);
    load_dir(ctx(), &dir).expect("the intact model loads");

    let damaged = |name: &str, f: &dyn Fn(&Path)| -> String {
        let d = tmp.path().join(name);
        std::fs::create_dir(&d).unwrap();
        for (n, bytes) in files(&dir) {
            std::fs::write(d.join(n), bytes).unwrap();
        }
        f(&d);
        match load_dir(ctx(), &d) {
            Ok(_) => panic!("{name}: the damaged model loaded"),
            Err(e) => e.to_string(),
        }
    };
    let shard1 = m.shards[1].file.clone();
    let e = damaged("flipped", &|d| {
        let p = d.join(&shard1);
        let mut b = std::fs::read(&p).unwrap();
        let i = b.len() / 2;
        b[i] ^= 0x10;
        std::fs::write(&p, b).unwrap();
    });
    assert!(e.contains("corrupt") && e.contains(&shard1), "{e}");
    let e = damaged("truncated", &|d| {
        let p = d.join(&shard1);
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 4096]).unwrap();
    });
    assert!(e.contains("truncated"), "{e}");
    let e = damaged("missing", &|d| std::fs::remove_file(d.join(&shard1)).unwrap());
    assert!(e.contains(&shard1), "{e}");
    fn edit(d: &Path, f: impl Fn(&mut serde_json::Value)) {
        let p = d.join("manifest.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, v.to_string()).unwrap();
    }
    let e = damaged("misplaced", &|d| edit(d, |v| v["tensors"][3]["data"]["offset"] = serde_json::json!(12)));
    assert!(e.contains("manifest.json") && e.contains(&m.tensors[3].name), "{e}");
    let e = damaged("version", &|d| edit(d, |v| v["version"] = serde_json::json!(99)));
    assert!(e.contains("version 99"), "{e}");
    let e = damaged("sizes", &|d| edit(d, |v| v["total_bytes"] = serde_json::json!(12)));
    assert!(e.contains("shard sizes"), "{e}");
}

/// Logits after the grounding case's prompt and image.
fn logits(m: &Model) -> Vec<f32> {
    logits_on(ctx(), m, "grounding_500x375")
}

fn logits_on(c: &Context, m: &Model, name: &str) -> Vec<f32> {
    let case = fixtures::json(&format!("cases/{name}/case.json"));
    let ids: Vec<i64> = case["input_ids_llava_next"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let feats = (!case["image"].is_null()).then(|| {
        let img = decode(&fixtures::read(&format!("cases/{name}/image.png")), DecodeLimits::default()).unwrap();
        m.encode_image(c, &img).unwrap().1
    });
    let n = ids.len() + feats.as_ref().map_or(0, |f| f.shape[0]);
    let mut cache = m.llm.new_cache(c, n).unwrap();
    let ws = Workspace::new(c, m, n).unwrap();
    fixtures::prefill(c, m, &ids, feats.as_ref(), &mut cache, &ws).unwrap();
    pollster::block_on(ws.logits().to_f32(c)).unwrap()
}

use fixtures::checkpoint;

fn converted(ctx: &Context, dir: &Path) -> Model {
    let (m, mut t) = load_dir(ctx, dir).unwrap();
    Model::new(ctx, &m.config, activation(ctx, None).unwrap(), &mut t).unwrap()
}

#[test]
fn the_converted_model_computes_what_the_direct_4_bit_load_does() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    convert_to(&hf_dir(), &dir, &small_shards(QuantPlan::DEFAULT));
    let (w, cfg) = checkpoint();
    let direct = logits(&load_checkpoint(ctx(), &w, &cfg, Precision::Q4).unwrap());
    let conv = logits(&converted(ctx(), &dir));
    assert_eq!(direct, conv, "a converted model gives the same logits as the checkpoint quantized at load");
    // a runtime with a small binding limit splits embed_tokens and lm_head (2.4 and 4.9 MB) while streaming
    // them in: same result (a text-only case: the image's activations would not fit 1 MiB bindings)
    let text = logits_on(ctx(), &load_checkpoint(ctx(), &w, &cfg, Precision::Q4).unwrap(), "text_only_ko");
    let small = pollster::block_on(Context::new(ContextOptions { max_binding_override: Some(1 << 20), ..Default::default() })).unwrap();
    let m = converted(&small, &dir);
    assert!(m.llm.weight_parts() > 1, "the 1 MiB limit splits weights");
    assert_eq!(text, logits_on(&small, &m, "text_only_ko"), "weights split into 1 MiB buffers give the same logits");
}

#[test]
fn every_precision_plan_converts_loads_and_is_as_accurate_as_its_bits() {
    let (w, cfg) = checkpoint();
    let exact = logits(&load_checkpoint(ctx(), &w, &cfg, Precision::F32).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let plans = [
        ("default", QuantPlan::DEFAULT),
        ("q4 everywhere", QuantPlan { llm: WeightFormat::Q4, embed: WeightFormat::Q4, lm_head: WeightFormat::Q4, vision: WeightFormat::Q4 }),
        ("q8 everywhere", QuantPlan { llm: WeightFormat::Q8, embed: WeightFormat::Q8, lm_head: WeightFormat::Q8, vision: WeightFormat::Q8 }),
        ("f16", QuantPlan::F16),
    ];
    let mut errs = Vec::new();
    for (i, (name, plan)) in plans.iter().enumerate() {
        let dir = tmp.path().join(format!("p{i}"));
        let out = convert_to(&hf_dir(), &dir, &small_shards(*plan));
        for t in &out.manifest.tensors {
            if let Kind::Matrix { format, .. } = t.kind {
                let want = if t.name.starts_with("vision") || t.name.starts_with("projector") {
                    plan.vision
                } else if t.name == "llm.embed" {
                    plan.embed
                } else if t.name == "llm.lm_head" {
                    plan.lm_head
                } else {
                    plan.llm
                };
                assert_eq!(format, want, "{name}: {} stored as {format:?}", t.name);
            }
        }
        // the stream loader against encoding the same plan at load
        let mut direct_t = varco_web::loader::from_checkpoint(ctx(), &w, &cfg, plan).unwrap();
        let direct = logits(&Model::new(ctx(), &cfg, activation(ctx(), None).unwrap(), &mut direct_t).unwrap());
        let conv = logits(&converted(ctx(), &dir));
        assert_eq!(direct, conv, "{name}: converted and direct loads differ");
        let e = rel_error(&conv, &exact.iter().map(|&v| v as f64).collect::<Vec<_>>());
        eprintln!("{name}: logits vs the f32 path: relative error {e:.3e}; {:.2} MB of shards", out.manifest.total_bytes as f64 / 1e6);
        errs.push(e);
    }
    // random weights: q4 costs ~8.6 % per weight, q8 ~0.5 %, f16 only the activations' rounding
    assert!(errs[2] * 4.0 < errs[1], "q8 ({:.3e}) is not clearly better than q4 ({:.3e})", errs[2], errs[1]);
    assert!(errs[3] * 4.0 < errs[2] && errs[3] < 2e-2, "f16 ({:.3e}) vs q8 ({:.3e})", errs[3], errs[2]);
}

#[test]
fn the_report_measures_each_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    let out = convert_to(&hf_dir(), &tmp.path().join("m"), &Options { report: true, ..Options::default() });
    let matrices = out.manifest.tensors.iter().filter(|t| matches!(t.kind, Kind::Matrix { .. })).count();
    assert_eq!(out.errors.len(), matrices);
    let (w, cfg) = checkpoint();
    let specs = varco_web::loader::plan::specs(&cfg, &QuantPlan::DEFAULT, true);
    for e in &out.errors {
        // Gaussian-like random weights: the documented 4-bit error, 16x less at 8 bits
        assert!(e.q4 > 0.06 && e.q4 < 0.11, "{}: q4 error {}", e.name, e.q4);
        assert!(e.q8 > e.q4 / 30.0 && e.q8 < e.q4 / 10.0, "{}: q8 error {} vs q4 {}", e.name, e.q8, e.q4);
        let spec = specs.iter().find(|s| s.name == e.name).unwrap();
        match &spec.fold {
            // the checkpoint is f16: nothing lost in f16
            None => assert_eq!(e.f16, 0.0, "{}: an f16 checkpoint loses nothing in f16", e.name),
            // a norm's weight folded in: the product is no longer f16-exact, and 4 bits lose at most 10 % more
            // than on the matrix alone (the measure of the fold's cost that the issue asked for)
            Some(_) => {
                assert!(e.f16 > 0.0 && e.f16 < 1e-3, "{}: f16 error {} of the folded matrix", e.name, e.f16);
                let mut plain = Vec::new();
                for s in &spec.sources {
                    plain.extend(w.rows_f32(&s.name, &s.shape, 0, s.shape[0]).unwrap());
                }
                let unfolded = varco_web::quant::relative_error(varco_web::quant::QFormat::Q4, &plain, e.n, e.k);
                eprintln!("{}: q4 error {:.4e} folded, {:.4e} alone ({:+.1} %)", e.name, e.q4, unfolded, 100.0 * (e.q4 / unfolded - 1.0));
                assert!(e.q4 <= 1.10 * unfolded, "{}: q4 error {} folded, {} alone", e.name, e.q4, unfolded);
            }
        }
    }
}

/// Runs a conversion that must fail; checks the message and that nothing is left behind.
fn refused(input: &Path, want: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let e = match convert::convert(input, &out, &Options::default(), &mut |_| {}) {
        Ok(_) => panic!("{}: converted", input.display()),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(want), "expected {want:?} in: {e}");
    assert!(!out.exists() && !partial_path(&out).exists(), "{}: left output behind", input.display());
}

#[test]
fn bad_input_is_refused_clearly_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let make = |name: &str, rename: &dyn Fn(&str) -> String| {
        let d = tmp.path().join(name);
        std::fs::create_dir(&d).unwrap();
        fixtures::write_checkpoint(&d, rename, 1, &fixtures::read("model-hf/config.json"));
        d
    };
    refused(&make("other", &|n| format!("encoder.{n}")), "not a VARCO-VISION");
    // cut the file in half: tensors end past its end
    let d = make("truncated", &|n| n.to_string());
    let p = d.join("model.safetensors");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    refused(&d, "truncated");
    // a tensor of an unexpected dtype, and one of an unexpected shape
    let d = make("dtype", &|n| n.to_string());
    retype(&d.join("model.safetensors"), "language_model.model.norm.weight", safetensors::Dtype::I32, None);
    refused(&d, "unsupported dtype");
    let d = make("shape", &|n| n.to_string());
    retype(&d.join("model.safetensors"), "language_model.model.layers.1.mlp.down_proj.weight", safetensors::Dtype::F16, Some(vec![32, 80]));
    refused(&d, "down_proj.weight has shape [32, 80]");
    let d = make("no-tokenizer", &|n| n.to_string());
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    refused(&d, "tokenizer.json");
    refused(&tmp.path().join("does-not-exist"), "neither model.safetensors");
    // an existing output is never overwritten
    let out = tmp.path().join("existing");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep"), b"x").unwrap();
    let e = convert::convert(&hf_dir(), &out, &Options::default(), &mut |_| {}).err().expect("refused").to_string();
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(std::fs::read(out.join("keep")).unwrap(), b"x");
}

/// Rewrites one tensor of a safetensors file with another dtype and/or shape (zeros).
fn retype(path: &Path, name: &str, dtype: safetensors::Dtype, shape: Option<Vec<usize>>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (n, v) in st.tensors() {
        if n == name {
            let shape = shape.clone().unwrap_or(v.shape().to_vec());
            let size = shape.iter().product::<usize>() * dtype.size();
            owned.push((n, dtype, shape, vec![0u8; size]));
        } else {
            owned.push((n, v.dtype(), v.shape().to_vec(), v.data().to_vec()));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        owned.iter().map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

#[test]
fn a_model_the_adapter_cannot_hold_is_refused_before_anything_is_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let m = convert_to(&hf_dir(), &dir, &small_shards(QuantPlan::DEFAULT)).manifest;
    m.check_limits(1 << 30, 2).expect("the tiny model fits a 1 GiB buffer limit");
    // a context whose KV cache for one layer (kv_heads · context · head_dim f16 values) is above the limit
    let mut long = m.clone();
    long.memory.context = 1 << 30;
    let t = &m.config.text;
    let kv = ((t.kv_heads * t.head_dim * 2) as u64) << 30;
    match long.check_limits(1 << 30, 2) {
        Err(varco_web::Error::TooLarge { what, needed, limit }) => {
            assert!(what.contains("KV cache"), "{what}");
            assert_eq!((needed, limit), (kv, 1 << 30));
        }
        other => panic!("a 2^30-token context was not refused: {other:?}"),
    }
    // a limit below two rows of a matrix: named, whatever the splitting
    match m.check_limits(64, 2) {
        Err(varco_web::Error::TooLarge { what, .. }) => assert!(what.contains("tensor"), "{what}"),
        other => panic!("a 64-byte limit was not refused: {other:?}"),
    }
    // the loader checks the tensors before allocating any: under a 4 KiB binding limit the model is refused,
    // naming a tensor, and no buffer was created
    let tiny = pollster::block_on(Context::new(ContextOptions { max_binding_override: Some(4096), ..Default::default() })).unwrap();
    let before = tiny.stats.counts().buffers;
    let e = load_dir(&tiny, &dir).err().expect("the model loaded under a 4 KiB binding limit").to_string();
    assert!(e.contains("tensor ") && e.contains("adapter allows at most 4096"), "{e}");
    assert_eq!(tiny.stats.counts().buffers, before, "nothing allocated");
}
