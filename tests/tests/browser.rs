//! The kernels' f32 paths in headless Chromium (WebGPU on SwiftShader, which has no shader-f16):
//! `cargo test --target wasm32-unknown-unknown -p varco-tests --test browser` with wasm-bindgen-test-runner.
//! The same cases as `kernels.rs`, with the subgroup variants where the browser offers subgroups (wgpu's web
//! backend maps them only with vendor/wgpu's patch) and with the workgroup-memory fallback; each test logs
//! which ran. A missing adapter fails.
#![cfg(target_arch = "wasm32")]

use varco_tests::cases;
use varco_web::gpu::tensor::WeightFormat;
use varco_web::gpu::{Context, ContextOptions, DType};
use varco_web::kernels::linear;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn ctx() -> Context {
    Context::new(ContextOptions::default()).await.expect("a WebGPU adapter in the browser")
}

/// The contexts a kernel test runs on: everything the browser offers, then (where that included subgroups)
/// the workgroup-memory fallback.
async fn variants() -> Vec<Context> {
    let full = ctx().await;
    let mut out = vec![];
    if full.caps.subgroups {
        out.push(Context::new(ContextOptions { allow_subgroups: false, ..Default::default() }).await.unwrap());
    }
    out.insert(0, full);
    out
}

fn variant(c: &Context) -> &'static str {
    if c.caps.subgroups { "subgroup reductions" } else { "workgroup-memory reductions" }
}

macro_rules! browser_test {
    ($name:ident, $suite:ident $(, $arg:expr)*) => {
        #[wasm_bindgen_test]
        async fn $name() {
            for c in variants().await {
                web_sys_log(&format!("{}: {}", stringify!($name), variant(&c)));
                cases::$suite(&c, DType::F32 $(, $arg)*).await;
            }
        }
    };
}

browser_test!(matvec_q4, matvec_suite, WeightFormat::Q4);
browser_test!(matvec_q8, matvec_suite, WeightFormat::Q8);
browser_test!(matvec_f16_weights, matvec_suite, WeightFormat::F16);
browser_test!(matvec_fused_q4, matvec_fused_suite, WeightFormat::Q4, &linear::MODEL_FUSED_SHAPES);
browser_test!(matvec_fused_f16_weights, matvec_fused_suite, WeightFormat::F16, &linear::MODEL_FUSED_SHAPES);
browser_test!(matvec_fused_prepared, prepared_suite);
browser_test!(matmul_q4, matmul_suite, WeightFormat::Q4);
browser_test!(matmul_q8, matmul_suite, WeightFormat::Q8);
browser_test!(matmul_f16_weights, matmul_suite, WeightFormat::F16);
browser_test!(attention_prefill, attention_suite);
browser_test!(attention_fused_qkv, attention_fused_qkv);
browser_test!(attention_decode, decode_suite);
browser_test!(rope, rope_suite);
browser_test!(norms, norm_suite);
browser_test!(elementwise, elementwise_suite);
browser_test!(embed_q4, embed_suite, WeightFormat::Q4);
browser_test!(embed_q8, embed_suite, WeightFormat::Q8);
browser_test!(embed_f16, embed_suite, WeightFormat::F16);
browser_test!(patch_embed, patch_embed_suite);
browser_test!(resize, resize_suite);
browser_test!(sample, sample_suite);
browser_test!(greedy_in_lm_head, greedy_in_lm_head_suite);

/// `name` of a JS object, or undefined.
fn get(o: &wasm_bindgen::JsValue, name: &str) -> wasm_bindgen::JsValue {
    js_sys::Reflect::get(o, &name.into()).unwrap_or(wasm_bindgen::JsValue::UNDEFINED)
}

/// The context asks for what the browser's adapter offers, as the browser itself reports it (asked here
/// through `navigator.gpu`, apart from wgpu): subgroups (with a size in the range the reductions assume)
/// and shader-f16.
#[wasm_bindgen_test]
async fn the_web_path_asks_for_what_the_adapter_offers() {
    use wasm_bindgen::JsCast;
    let gpu = get(&get(&js_sys::global(), "navigator"), "gpu");
    let request: js_sys::Function = get(&gpu, "requestAdapter").dyn_into().expect("navigator.gpu.requestAdapter");
    let opts = js_sys::Object::new();
    js_sys::Reflect::set(&opts, &"powerPreference".into(), &"high-performance".into()).unwrap();
    let adapter = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::from(request.call1(&gpu, &opts).unwrap())).await.unwrap();
    let features = get(&adapter, "features");
    let has: js_sys::Function = get(&features, "has").dyn_into().unwrap();
    let offers = |f: &str| has.call1(&features, &f.into()).unwrap().as_bool().unwrap();
    let info = get(&adapter, "info");
    let (min, max) = (get(&info, "subgroupMinSize").as_f64().unwrap_or(0.0), get(&info, "subgroupMaxSize").as_f64().unwrap_or(0.0));
    let c = ctx().await;
    web_sys_log(&format!(
        "browser offers subgroups {} ({min}..{max}), shader-f16 {}; the engine runs {}, {} activations: {}",
        offers("subgroups"),
        offers("shader-f16"),
        variant(&c),
        if c.caps.f16 { "f16" } else { "f32" },
        c.describe()
    ));
    assert_eq!(c.caps.subgroups, offers("subgroups") && min >= 4.0 && max <= 128.0, "subgroups requested where offered");
    assert_eq!((c.caps.subgroup_min_size as f64, c.caps.subgroup_max_size as f64), (min, max), "the subgroup size range");
    assert_eq!(c.caps.f16, offers("shader-f16"), "shader-f16 requested where offered");
    let fallback = Context::new(ContextOptions { allow_subgroups: false, allow_f16: false, ..Default::default() }).await.unwrap();
    assert!(!fallback.caps.subgroups && !fallback.caps.f16, "the options that force the fallbacks hold on the web too");
}

/// Prefill attention in 32 queries × 64 keys a step (ContextOptions::attention_q32) fits a browser's 32 KiB of
/// workgroup memory and matches the f64 reference there (its head-128 cases; the rest take their usual kernels).
#[wasm_bindgen_test]
async fn attention_q32_in_the_browser() {
    let c = Context::new(ContextOptions { attention_q32: true, ..Default::default() }).await.unwrap();
    assert!(c.caps.max_workgroup_storage >= varco_web::kernels::attention::Q32_STORAGE, "the browser's workgroup memory");
    cases::attention_suite(&c, DType::F32).await;
}

fn web_sys_log(s: &str) {
    wasm_bindgen_test::console_log!("{s}");
}

/// The wasm build runs the whole model on a small case (text_only_ko) in the browser and reproduces
/// transformers' logits (top-20 of every teacher-forced step, f32 path) and greedy tokens.
#[wasm_bindgen_test]
async fn model_reproduces_text_only_ko() {
    use varco_web::loader::{load_checkpoint, Precision};
    use varco_web::model::{config::ModelConfig, decode::Workspace};
    use varco_web::session::{prompt_inputs, text_runs};
    use varco_web::weights::WeightSource;
    const WEIGHTS: &[u8] = include_bytes!("../../../shared/fixtures/tiny-varco-a/model-hf/model.safetensors");
    const CONFIG: &str = include_str!("../../../shared/fixtures/tiny-varco-a/model-hf/config.json");
    const CASE: &str = include_str!("../../../shared/fixtures/tiny-varco-a/cases/text_only_ko/case.json");
    const EXPECTED: &[u8] = include_bytes!("../../../shared/fixtures/tiny-varco-a/cases/text_only_ko/expected.safetensors");
    let c = ctx().await;
    let w = WeightSource::from_bytes(vec![WEIGHTS.to_vec()]).unwrap();
    let cfg = ModelConfig::from_json(CONFIG, &w).unwrap();
    let m = load_checkpoint(&c, &w, &cfg, Precision::F32).unwrap();
    let case: Vec<&str> = CASE.split("\"input_ids_llava_next\": [").collect();
    let ids: Vec<i64> = case[1].split(']').next().unwrap().split(',').map(|s| s.trim().parse().unwrap()).collect();
    let gen: Vec<u32> = CASE.split("\"generated_ids\": [").nth(1).unwrap().split(']').next().unwrap().split(',').map(|s| s.trim().parse().unwrap()).collect();
    let exp = safetensors::SafeTensors::deserialize(EXPECTED).unwrap();
    let top_ids: Vec<i32> = bytemuck::pod_collect_to_vec(exp.tensor("step_top20_ids").unwrap().data());
    let top_vals: Vec<f32> = bytemuck::pod_collect_to_vec(exp.tensor("step_top20_logits").unwrap().data());
    let mut cache = m.llm.new_cache(&c, ids.len() + gen.len()).unwrap();
    let mut ws = Workspace::new(&c, &m, ids.len() + gen.len()).unwrap();
    let runs = text_runs(&ids, cfg.text.vocab).unwrap();
    m.prefill(&c, &prompt_inputs(&runs, None).unwrap(), &mut cache, &ws).unwrap();
    for step in 0..gen.len() {
        let l = m.read_logits(&c, &mut ws).await.unwrap();
        let got: Vec<f32> = (0..20).map(|j| l[top_ids[step * 20 + j] as usize]).collect();
        let want: Vec<f64> = top_vals[step * 20..step * 20 + 20].iter().map(|&v| v as f64).collect();
        varco_tests::harness::assert_close(&format!("browser text_only_ko step {step}"), &got, &want, 1e-3);
        let argmax = l.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
        assert_eq!(argmax as u32, gen[step], "greedy token at step {step}");
        if step + 1 < gen.len() {
            m.step(&c, &mut ws, &mut cache, gen[step]).unwrap();
        }
    }
}

/// A converted model in memory: the tiny fixture with every matrix in f16 (so that the browser's f32 path
/// must reproduce transformers' tokens), laid out as `varco convert` documents it (docs/FORMAT.md §2:
/// 256-aligned arrays in one stream, cut into shards) — an independent writer of the format the engine reads.
fn converted_tiny(shard_size: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
    use sha2::{Digest, Sha256};
    use varco_web::loader::manifest::{self, ArrayRef, FileRef, Generation, Manifest, Memory, TensorEntry};
    use varco_web::loader::plan::{self, QuantPlan};
    use varco_web::model::config::ModelConfig;
    use varco_web::weights::WeightSource;
    const WEIGHTS: &[u8] = include_bytes!("../../../shared/fixtures/tiny-varco-a/model-hf/model.safetensors");
    const CONFIG: &str = include_str!("../../../shared/fixtures/tiny-varco-a/model-hf/config.json");
    const TEMPLATE: &str = include_str!("../../../shared/fixtures/tiny-varco-a/model-hf/chat_template.json");
    let w = WeightSource::from_bytes(vec![WEIGHTS.to_vec()]).unwrap();
    let cfg = ModelConfig::from_json(CONFIG, &w).unwrap();
    let mut stream: Vec<u8> = Vec::new();
    let mut tensors = Vec::new();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for spec in plan::specs(&cfg, &QuantPlan::F16, true) {
        stream.resize(stream.len().next_multiple_of(256), 0);
        let start = stream.len() as u64;
        let scales = plan::encode(&spec, &w, &mut |b| {
            stream.extend_from_slice(b);
            Ok(())
        }, None)
        .unwrap();
        assert!(scales.is_empty(), "f16 matrices have no scales");
        let at = |s: u64, len: u64| ArrayRef { shard: (s / shard_size) as usize, offset: s % shard_size, length: len };
        tensors.push(TensorEntry { name: spec.name, kind: spec.kind, data: at(start, stream.len() as u64 - start), scales: None });
    }
    let shards: Vec<Vec<u8>> = stream.chunks(shard_size as usize).map(|c| c.to_vec()).collect();
    let tok = TOKENIZER;
    let template = varco_web::chat::ChatTemplate::from_json(TEMPLATE).unwrap();
    let m = Manifest {
        format: manifest::FORMAT.into(),
        version: manifest::VERSION,
        memory: Memory::estimate(&cfg, &tensors, 4096),
        config: cfg,
        plan: QuantPlan::F16,
        tokenizer: FileRef { file: "tokenizer.json".into(), bytes: tok.len() as u64, sha256: hex(&Sha256::digest(tok)) },
        chat_template: template.source().to_string(),
        generation: Generation { max_new_tokens: 16, temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, eos_token_ids: vec![151645] },
        shard_size,
        total_bytes: stream.len() as u64,
        shards: shards.iter().enumerate().map(|(i, s)| FileRef { file: format!("shard-{i:05}.bin"), bytes: s.len() as u64, sha256: hex(&Sha256::digest(s)) }).collect(),
        tensors,
    };
    (serde_json::to_vec(&m).unwrap(), shards)
}

const TOKENIZER: &[u8] = include_bytes!("../../../shared/fixtures/tiny-varco-a/model-hf/tokenizer.json");

/// The browser engine: a converted model fed in 64 KiB pieces (verified shard by shard), then a
/// conversation answered with transformers' greedy tokens (text_only_ko, f32 path); a flipped byte in a
/// shard is refused.
#[wasm_bindgen_test]
async fn engine_loads_pieces_and_answers_like_transformers() {
    use varco_web::web::Engine;
    const CASE: &str = include_str!("../../../shared/fixtures/tiny-varco-a/cases/text_only_ko/case.json");
    let case: serde_json::Value = serde_json::from_str(CASE).unwrap();
    let (manifest, shards) = converted_tiny(1 << 20);
    assert!(shards.len() > 3);
    let engine = Engine::create(manifest.clone(), None).await.unwrap();
    for (i, s) in shards.iter().enumerate() {
        for (j, piece) in s.chunks(64 << 10).enumerate() {
            engine.write(i as u32, (j * (64 << 10)) as f64, piece).unwrap();
        }
        engine.verify_shard(i as u32).unwrap();
    }
    engine.finish(TOKENIZER.to_vec()).await.unwrap();
    let request = serde_json::json!({"messages": case["conversation"], "max_new_tokens": 16}).to_string();
    let pieces = std::rc::Rc::new(std::cell::RefCell::new(String::new()));
    let sink = pieces.clone();
    let on_text = wasm_bindgen::closure::Closure::<dyn FnMut(String)>::new(move |s: String| sink.borrow_mut().push_str(&s));
    let out = wasm_bindgen_futures::JsFuture::from(engine.generate(request, None, on_text.as_ref().clone().into())).await.unwrap();
    let out: serde_json::Value = serde_json::from_str(&out.as_string().unwrap()).unwrap();
    assert_eq!(out["generated_ids"], case["generated_ids"], "greedy tokens");
    // the answer's JSON has the keys `varco run --json` prints (crate/tests/cli.rs checks the CLI)
    let mut keys = Vec::new();
    for (k, v) in out.as_object().unwrap() {
        if let Some(o) = v.as_object().filter(|_| k == "usage" || k == "timings") {
            keys.extend(o.keys().map(|x| format!("{k}.{x}")));
        }
        keys.push(k.clone());
    }
    keys.sort();
    let spec: Vec<&str> = include_str!("../answer-keys.txt").lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert_eq!(keys, spec, "the answer's keys");
    assert_eq!(out["text"], case["generated_text"]);
    assert_eq!(*pieces.borrow(), case["generated_text"].as_str().unwrap(), "the streamed pieces make the text");

    // a flipped byte: the shard's hash does not match
    let bad = Engine::create(manifest, None).await.unwrap();
    let mut s1 = shards[1].clone();
    s1[1000] ^= 1;
    bad.write(1, 0.0, &s1).unwrap();
    let e = bad.verify_shard(1).err().expect("a corrupt shard is refused");
    let msg: String = js_sys::Error::from(e).message().into();
    assert!(msg.contains("corrupt"), "{msg}");
}

/// The model benchmark is portable: `varco bench model`'s own code on the browser's WebGPU (the small shape,
/// decode figures and the decode step's per-kernel profile), its clock and memory counts working there.
#[wasm_bindgen_test]
async fn the_model_benchmark_runs_in_the_browser() {
    use varco_web::bench::model::{run_model, ModelBenchOptions, Text};
    const MANIFEST: &[u8] = include_bytes!("../../web/demo/public/models/small/manifest.json");
    let c = ctx().await;
    let o = ModelBenchOptions {
        shape: "small".into(),
        contexts: vec![16],
        steps: 2,
        prompt: 16,
        tiles: vec![1],
        plan: varco_web::loader::plan::QuantPlan::DEFAULT,
        runs: 1,
        act: None,
        decode_only: true,
        decode_shapes: None,
        prefill_chunk: None,
    };
    let report = run_model(&c, &o, Text::from_bytes(MANIFEST, TOKENIZER).unwrap()).await.unwrap();
    web_sys_log(&report.markdown);
    let fig = |name: &str| report.figures.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no figure {name}: {:?}", report.figures)).value;
    let tps = fig("decode tokens/s at 16 context");
    assert!(tps.is_finite() && tps > 0.0, "{tps}");
    // the small shape's weights alone are tens of MB (a q4 embedding and a q8 lm_head of 151,680 rows)
    assert!(fig("peak GPU memory bytes") > 30e6, "{}", fig("peak GPU memory bytes"));
    assert!(report.markdown.contains("| 16 context |"), "{}", report.markdown);
    // SwiftShader has timestamp queries: the decode step's profile, the fused kernel in it
    assert!(report.markdown.contains("one decode step at 16 context: 16 dispatches") && report.markdown.contains("| matvec_fused |"), "{}", report.markdown);
}

/// The browser's WGSL language features as the context reads them (through `has` alone: wgpu's own reading
/// panics on Dawn for Node): Chromium has had packed_4x8_integer_dot_product since version 123; a name no
/// browser has reads false. SwiftShader is a CPU adapter, so decode keeps its float products here anyway.
#[wasm_bindgen_test]
async fn the_browsers_wgsl_features_are_read() {
    assert!(varco_web::gpu::browser_wgsl_has("packed_4x8_integer_dot_product"));
    assert!(!varco_web::gpu::browser_wgsl_has("no_such_feature"));
    let c = ctx().await;
    assert!(!c.int_dot_decode && c.int_dot_why.contains("Cpu adapter keeps the float products"), "{}", c.int_dot_why);
}

/// Makes `navigator.gpu.requestAdapter` answer null to its first `nulls` requests (as Chromium does while its
/// GPU process starts), counting every request; the returned function puts the browser's own back and says
/// how many requests there were.
fn adapter_answers_null(nulls: u32) -> js_sys::Function {
    let patch = js_sys::Function::new_with_args(
        "nulls",
        "const gpu = navigator.gpu; const real = gpu.requestAdapter.bind(gpu); let n = 0;
         gpu.requestAdapter = (o) => (n++ < nulls ? Promise.resolve(null) : real(o));
         return () => { delete gpu.requestAdapter; return n; };",
    );
    use wasm_bindgen::JsCast;
    patch.call1(&wasm_bindgen::JsValue::UNDEFINED, &nulls.into()).unwrap().dyn_into().unwrap()
}

/// A browser that answers null while its GPU process starts gets asked again, and the context is made on the
/// third request; one that always answers null is a NoAdapter error that says how often it was asked.
#[wasm_bindgen_test]
async fn a_null_adapter_is_asked_again() {
    let restore = adapter_answers_null(2);
    let made = Context::new(ContextOptions::default()).await;
    let asked = restore.call0(&wasm_bindgen::JsValue::UNDEFINED).unwrap().as_f64().unwrap();
    assert!(made.is_ok(), "{:?}", made.err());
    assert_eq!(asked, 3.0);

    let restore = adapter_answers_null(u32::MAX);
    let made = Context::new(ContextOptions::default()).await;
    let asked = restore.call0(&wasm_bindgen::JsValue::UNDEFINED).unwrap().as_f64().unwrap();
    let tries = varco_web::gpu::ADAPTER_RETRY_MS.len() + 1;
    assert_eq!(asked, tries as f64);
    match made {
        Err(e @ varco_web::Error::NoAdapter(_)) => {
            assert_eq!(e.class(), "NoWebGPUError");
            assert!(e.to_string().contains(&format!("asked {tries} times over 1.5 s")), "{e}");
        }
        other => panic!("expected NoAdapter, got {:?}", other.err()),
    }
}
