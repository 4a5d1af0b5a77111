//! Seeded fuzzing of everything that reads what a user or a server hands over: the answer parser, requests
//! and their conversations, manifest.json, safetensors headers and index files, config.json, and the headers
//! of every image format. Each input is generated or mutated (structure-aware: JSON values swapped, deleted,
//! made huge, negative, fractional or of another type; header bytes and length fields changed) from a seed
//! that names it, so a failure prints the seed and replays alone (`VARCO_FUZZ_SEED=…`), and a seed that once
//! failed stays below as a regression case. Nothing may panic; every refusal is a named error of the right
//! kind; no input takes more than `SLOW` to refuse or accept.
//!
//! Counts: 1,000,000 answers and 1,000,000 requests; 100,000 mutations of each file kind. `VARCO_FUZZ_SCALE=N`
//! runs N times as many (longer runs, outside CI).
#![cfg(not(target_arch = "wasm32"))]

use std::time::{Duration, Instant};

use varco_tests::fixtures;
use varco_tests::harness::Rng;
use varco_web::answer::parse;
use varco_web::loader::manifest::Manifest;
use varco_web::model::config::ModelConfig;
use varco_web::session::Request;
use varco_web::weights::WeightSource;
use varco_web::Error;

/// The longest any one input may take.
const SLOW: Duration = Duration::from_secs(2);

fn scale() -> u64 {
    std::env::var("VARCO_FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1)
}

/// Runs `case` for `n` seeds (times the scale) derived from `base`, or only `VARCO_FUZZ_SEED`; a panic or a
/// slow input names its seed.
fn fuzz(what: &str, base: u64, n: u64, case: impl Fn(u64) + std::panic::RefUnwindSafe) {
    let seeds: Vec<u64> = match std::env::var("VARCO_FUZZ_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => (0..n * scale()).map(|i| base.wrapping_mul(1_000_003).wrapping_add(i)).collect(),
    };
    for seed in seeds {
        let t = Instant::now();
        if std::panic::catch_unwind(|| case(seed)).is_err() {
            panic!("{what}: seed {seed} panicked (replay: VARCO_FUZZ_SEED={seed})");
        }
        assert!(t.elapsed() < SLOW, "{what}: seed {seed} took {:?} (replay: VARCO_FUZZ_SEED={seed})", t.elapsed());
    }
}

/// A refusal of a file the user handed over: a model-format error that says something.
fn format_error(what: &str, seed: u64, e: &Error) {
    assert!(matches!(e, Error::Checkpoint(_)), "{what}: seed {seed}: {e:?} is not a checkpoint-format error");
    assert!(e.to_string().len() > 12, "{what}: seed {seed}: the message says too little: {e}");
}

// ------------------------------------------------------------------------------------------- answers

const ATOMS: &[&str] = &[
    "<obj>", "</obj>", "<char>", "</char>", "<bbox>", "</bbox>", "<delim>", "0.5", "0.", ".5", ", ", ",", "1", "0", "x", "한국",
    "<", ">", " ", "\n", "-3e9", "1e39", "NaN", "inf", "-0", "0.083, 0.333, 0.5, 0.4", "<|im_end|>", "\u{FFFD}",
    "99999999999999999999999999999999999999999999999999999999999999999999999999999999",
];

fn answer_text(rng: &mut Rng) -> String {
    let n = rng.below(40) as usize;
    (0..n)
        .map(|_| {
            if rng.below(10) == 0 {
                // a stray run of arbitrary characters
                (0..rng.below(6)).map(|_| char::from_u32(rng.below(0x11000) as u32).unwrap_or('?')).collect()
            } else {
                ATOMS[rng.below(ATOMS.len() as u64) as usize].to_string()
            }
        })
        .collect()
}

#[test]
fn answers_parse_without_panic_into_finite_boxes() {
    fuzz("answer", 1, 1_000_000, |seed| {
        let mut rng = Rng::new(seed);
        let text = answer_text(&mut rng);
        let wh = (rng.below(2) == 0).then(|| (1 + rng.below(5000) as u32, 1 + rng.below(5000) as u32));
        for span in parse(&text, wh) {
            for b in span.boxes {
                assert!([b.x1, b.y1, b.x2, b.y2].iter().all(|v| v.is_finite()), "seed {seed}: {b:?} from {text:?}");
                if let Some(p) = b.pixels {
                    assert!(p.iter().all(|v| v.is_finite()), "seed {seed}: {p:?}");
                }
            }
        }
    });
}

// ------------------------------------------------------------------------------------------- requests

/// A valid request's JSON, as the browser worker sends it.
fn request_json(rng: &mut Rng) -> serde_json::Value {
    let roles = ["system", "user", "assistant"];
    let n = 1 + rng.below(4) as usize;
    let messages: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut content = Vec::new();
            if i == 0 && rng.below(2) == 0 {
                content.push(serde_json::json!({"type": "image"}));
            }
            content.push(serde_json::json!({"type": "text", "text": answer_text(rng)}));
            serde_json::json!({"role": roles[(i + 1) % 3], "content": content})
        })
        .collect();
    serde_json::json!({"messages": messages, "max_new_tokens": rng.below(2000), "temperature": 0.7, "top_p": 0.9, "cache_prompt": true})
}

/// Something to put where a JSON value was: other types, edge numbers, deep nesting.
fn odd_value(rng: &mut Rng) -> serde_json::Value {
    use serde_json::json;
    match rng.below(14) {
        0 => json!(null),
        1 => json!(-1),
        2 => json!(u64::MAX),
        3 => json!(1e308),
        4 => json!(0.5),
        5 => json!(""),
        6 => json!("x".repeat(rng.below(300) as usize)),
        7 => json!([]),
        8 => json!({}),
        9 => json!(true),
        10 => json!([1, 2, 3]),
        11 => json!(i64::MIN),
        12 => json!({"type": "image"}),
        _ => json!(4_294_967_296u64),
    }
}

/// Applies one structure-aware mutation somewhere in `v`: a value replaced, a key removed or added, an array
/// emptied, shortened or lengthened.
fn mutate_json(v: &mut serde_json::Value, rng: &mut Rng) {
    use serde_json::Value;
    // a random path down the containers, as a JSON pointer
    let mut path = String::new();
    let mut at: &Value = v;
    for _ in 0..rng.below(6) {
        let (step, next) = match at {
            Value::Object(m) if !m.is_empty() => {
                let (k, n) = m.iter().nth(rng.below(m.len() as u64) as usize).unwrap();
                (k.replace('~', "~0").replace('/', "~1"), n)
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len() as u64) as usize;
                (i.to_string(), &a[i])
            }
            _ => break,
        };
        if !matches!(next, Value::Object(_) | Value::Array(_)) {
            break;
        }
        path.push('/');
        path.push_str(&step);
        at = next;
    }
    let cur = v.pointer_mut(&path).expect("the path just walked");
    match cur {
        Value::Object(m) if !m.is_empty() && rng.below(3) == 0 => {
            let k = m.keys().nth(rng.below(m.len() as u64) as usize).unwrap().clone();
            m.remove(&k);
        }
        Value::Object(m) if !m.is_empty() && rng.below(2) == 0 => {
            let k = m.keys().nth(rng.below(m.len() as u64) as usize).unwrap().clone();
            m.insert(k, odd_value(rng));
        }
        Value::Object(m) => {
            m.insert(format!("k{}", rng.below(9)), odd_value(rng));
        }
        Value::Array(a) if !a.is_empty() => match rng.below(4) {
            0 => a.clear(),
            1 => a.truncate(rng.below(a.len() as u64) as usize),
            2 => {
                let x = a[rng.below(a.len() as u64) as usize].clone();
                a.push(x)
            }
            _ => {
                let i = rng.below(a.len() as u64) as usize;
                a[i] = odd_value(rng);
            }
        },
        other => *other = odd_value(rng),
    }
}

/// Byte-level damage to a text: a character dropped, doubled or replaced, or the text cut short.
fn damage_bytes(b: &mut Vec<u8>, rng: &mut Rng) {
    if b.is_empty() {
        return;
    }
    let i = rng.below(b.len() as u64) as usize;
    match rng.below(4) {
        0 => {
            b.remove(i);
        }
        1 => b.insert(i, b[i]),
        2 => b[i] = rng.below(256) as u8,
        _ => b.truncate(i),
    }
}

#[test]
fn requests_are_taken_or_refused_as_request_errors() {
    fuzz("request", 2, 1_000_000, |seed| {
        let mut rng = Rng::new(seed);
        let mut v = request_json(&mut rng);
        for _ in 0..rng.below(4) {
            mutate_json(&mut v, &mut rng);
        }
        let mut text = serde_json::to_vec(&v).unwrap();
        if rng.below(8) == 0 {
            damage_bytes(&mut text, &mut rng);
        }
        let text = String::from_utf8_lossy(&text);
        if let Err(e) = Request::from_json(&text, None) {
            assert!(matches!(e, Error::Request(_)), "seed {seed}: {e:?} is not a request error");
            assert_eq!(e.class(), "EngineError");
        }
    });
}

// ------------------------------------------------------------------------------------------- model files

/// The manifest the mutations start from: the tiny test model's (49 tensors in 5 shards), which the demo
/// bundled until 2026-12-06 and whose mutations the seeds below were found on (a mutation follows the JSON's
/// shape, so another manifest would replay them as other, harmless cases), kept as a fixture of this suite.
fn manifest_base() -> serde_json::Value {
    let text = fixtures::read_repo("tests/fixtures/fuzz/manifest-tiny.json");
    Manifest::parse(&text).expect("the fixture manifest reads");
    serde_json::from_slice(&text).unwrap()
}

#[test]
fn manifests_are_read_or_refused_by_name() {
    let base = manifest_base();
    fuzz("manifest.json", 3, 100_000, |seed| manifest_case(seed, &base));
}

fn manifest_case(seed: u64, base: &serde_json::Value) {
    {
        let mut rng = Rng::new(seed);
        let mut v = base.clone();
        for _ in 0..1 + rng.below(3) {
            mutate_json(&mut v, &mut rng);
        }
        let mut bytes = serde_json::to_vec(&v).unwrap();
        if rng.below(8) == 0 {
            damage_bytes(&mut bytes, &mut rng);
        }
        match Manifest::parse(&bytes) {
            Ok(m) => {
                // what parses is also checked against an adapter's limits without panicking
                if let Err(e) = m.check_limits(1 << 30, 2) {
                    assert!(matches!(e, Error::TooLarge { .. } | Error::Checkpoint(_)), "seed {seed}: {e:?}");
                }
            }
            Err(e) => format_error("manifest.json", seed, &e),
        }
    }
}

/// Seeds that once failed (each fixed since), replayed on every run.
#[test]
fn seeds_that_once_failed() {
    // a vision head count of 0 (a division by zero); a vision grid whose square overflowed
    let (w, _) = fixtures::checkpoint();
    let (hf, next) = (fixtures::json("model-hf/config.json"), fixtures::json("llava-next-config.json"));
    for seed in [6_002_557, 6_039_754] {
        config_case(seed, &w, &hf, &next);
    }
    // array offsets past any stream, a KV cache size, a scale array size: overflows
    let base = manifest_base();
    for seed in [3_001_626, 3_002_843, 3_003_601] {
        manifest_case(seed, &base);
    }
}

/// A small safetensors file: the tiny model's first tensors (the header's names and offsets are what the
/// mutations aim at).
fn small_safetensors() -> Vec<u8> {
    let bytes = fixtures::read("model-hf/model.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, safetensors::tensor::TensorView)> = st.tensors().into_iter().filter(|(n, _)| n.contains("layers.0.")).collect();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    safetensors::serialize(views, &None).unwrap()
}

#[test]
fn safetensors_headers_are_read_or_refused_by_name() {
    let file = small_safetensors();
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + n]).unwrap();
    let body = file[8 + n..].to_vec();
    fuzz("safetensors header", 4, 100_000, |seed| {
        let mut rng = Rng::new(seed);
        let mut h = header.clone();
        for _ in 0..1 + rng.below(3) {
            mutate_json(&mut h, &mut rng);
        }
        let mut hb = serde_json::to_vec(&h).unwrap();
        if rng.below(8) == 0 {
            damage_bytes(&mut hb, &mut rng);
        }
        // the length prefix: right, or off, or absurd
        let len = match rng.below(6) {
            0 => rng.below(1 << 40),
            1 => (hb.len() as u64).saturating_sub(rng.below(9)),
            _ => hb.len() as u64,
        };
        let mut f = len.to_le_bytes().to_vec();
        f.extend_from_slice(&hb);
        let mut body = body.clone();
        if rng.below(4) == 0 {
            body.truncate(rng.below(body.len() as u64 + 1) as usize);
        }
        f.extend_from_slice(&body);
        if rng.below(16) == 0 {
            f.truncate(rng.below(16) as usize);
        }
        if let Err(e) = WeightSource::from_bytes(vec![f]) {
            format_error("safetensors header", seed, &e);
        }
    });
}

#[test]
fn safetensors_indexes_are_read_or_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = small_safetensors();
    std::fs::write(dir.path().join("model-00001-of-00001.safetensors"), &file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&file).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = st.names().into_iter().map(|n| (n.clone(), serde_json::json!("model-00001-of-00001.safetensors"))).collect();
    let index = serde_json::json!({"metadata": {"total_size": file.len()}, "weight_map": map});
    let path = dir.path().join("model.safetensors.index.json");
    fuzz("safetensors index", 5, 100_000, |seed| {
        let mut rng = Rng::new(seed);
        let mut v = index.clone();
        for _ in 0..1 + rng.below(3) {
            mutate_json(&mut v, &mut rng);
        }
        let mut bytes = serde_json::to_vec(&v).unwrap();
        if rng.below(8) == 0 {
            damage_bytes(&mut bytes, &mut rng);
        }
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = WeightSource::open_dir(dir.path()) {
            format_error("safetensors index", seed, &e);
        }
    });
}

#[test]
fn configs_are_read_or_refused_by_name() {
    let (w, _) = fixtures::checkpoint();
    let hf: serde_json::Value = fixtures::json("model-hf/config.json");
    let next: serde_json::Value = fixtures::json("llava-next-config.json");
    fuzz("config.json", 6, 100_000, |seed| config_case(seed, &w, &hf, &next));
}

fn config_case(seed: u64, w: &WeightSource, hf: &serde_json::Value, next: &serde_json::Value) {
    {
        let mut rng = Rng::new(seed);
        let mut v = if rng.below(2) == 0 { hf.clone() } else { next.clone() };
        for _ in 0..1 + rng.below(3) {
            mutate_json(&mut v, &mut rng);
        }
        let mut bytes = serde_json::to_vec(&v).unwrap();
        if rng.below(8) == 0 {
            damage_bytes(&mut bytes, &mut rng);
        }
        if let Err(e) = ModelConfig::from_json(&String::from_utf8_lossy(&bytes), w) {
            format_error("config.json", seed, &e);
        }
    }
}

// ------------------------------------------------------------------------------------------- images

/// A small image in each format the engine reads.
fn encoded_images() -> Vec<(&'static str, Vec<u8>)> {
    use image::ImageFormat as F;
    let img = image::RgbImage::from_fn(23, 17, |x, y| image::Rgb([(x * 11) as u8, (y * 13) as u8, ((x + y) * 7) as u8]));
    let dynamic = image::DynamicImage::ImageRgb8(img);
    [("png", F::Png), ("jpeg", F::Jpeg), ("webp", F::WebP), ("gif", F::Gif), ("bmp", F::Bmp)]
        .into_iter()
        .map(|(name, f)| {
            let mut out = std::io::Cursor::new(Vec::new());
            dynamic.write_to(&mut out, f).unwrap_or_else(|e| panic!("encode {name}: {e}"));
            (name, out.into_inner())
        })
        .collect()
}

#[test]
fn image_headers_are_decoded_or_refused_by_name() {
    let images = encoded_images();
    for (name, bytes) in &images {
        varco_web::image::decode(bytes, Default::default()).unwrap_or_else(|e| panic!("the clean {name} decodes: {e}"));
    }
    fuzz("image header", 7, 100_000 * images.len() as u64, |seed| {
        let mut rng = Rng::new(seed);
        let (name, clean) = &images[(seed % images.len() as u64) as usize];
        let mut b = clean.clone();
        // damage aimed at the header (where sizes, counts and offsets live), sometimes further in
        let far = rng.below(4) == 0;
        for _ in 0..1 + rng.below(4) {
            let reach = if far { b.len() } else { b.len().min(64) };
            let i = rng.below(reach as u64) as usize;
            match rng.below(5) {
                0 => b[i] = 0xFF,
                1 => b[i] = 0,
                2 => b[i] = b[i].wrapping_add(1 + rng.below(255) as u8),
                3 => {
                    // a 32-bit field made huge (widths, lengths)
                    for j in i..(i + 4).min(b.len()) {
                        b[j] = 0x7F;
                    }
                }
                _ => b.truncate(i.max(1)),
            }
        }
        if let Err(e) = varco_web::image::decode(&b, Default::default()) {
            assert!(matches!(e, Error::Image(_)), "{name}: seed {seed}: {e:?} is not an image error");
            assert!(e.to_string().len() > 10, "{name}: seed {seed}: {e}");
        }
    });
}
