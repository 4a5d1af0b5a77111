//! `varco run` end to end on the fixture checkpoint: the JSON answer's ids equal transformers' greedy ids;
//! bad input is a clear error and a non-zero exit.

use std::path::PathBuf;
use std::process::Command;

fn fixtures() -> PathBuf {
    let p = std::env::var_os("VARCO_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
        .join("tiny-varco-a");
    assert!(p.is_dir(), "fixtures not found at {}", p.display());
    p
}

fn varco(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_varco"))
        .args(args)
        .env("WGPU_BACKEND", std::env::var("WGPU_BACKEND").unwrap_or_else(|_| "vulkan".into()))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run varco")
}

#[test]
fn run_json_reproduces_the_reference() {
    let f = fixtures();
    let case: serde_json::Value = serde_json::from_slice(&std::fs::read(f.join("cases/grounding_500x375/case.json")).unwrap()).unwrap();
    let model = f.join("model-hf");
    let image = f.join("cases/grounding_500x375/image.png");
    let out = varco(&["run", "--model", model.to_str().unwrap(), "--image", image.to_str().unwrap(), "--ground", "--max-new-tokens", "16", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["generated_ids"], case["generated_ids"]);
    assert_eq!(v["usage"]["image_tokens"], case["n_image_tokens"]);
    assert_eq!(v["usage"]["prompt_tokens"].as_u64().unwrap() as usize, case["input_ids_hf"].as_array().unwrap().len());
    assert_eq!(v["text"], case["generated_text"]);
}

/// The keys of a JSON object, nested ones as `a.b`, sorted.
fn keys(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            let name = format!("{prefix}{k}");
            if matches!(k.as_str(), "usage" | "timings") {
                keys(x, &format!("{name}."), out);
            }
            out.push(name);
        }
    }
}

/// The CLI answers text_only_ko with transformers' tokens in the JSON the browser engine returns: the same
/// keys (tests/answer-keys.txt; tests/tests/browser.rs checks the engine against the same list).
#[test]
fn run_json_has_the_engine_keys() {
    let f = fixtures();
    let case: serde_json::Value = serde_json::from_slice(&std::fs::read(f.join("cases/text_only_ko/case.json")).unwrap()).unwrap();
    let text = case["conversation"][0]["content"][0]["text"].as_str().unwrap();
    let model = f.join("model-hf");
    let out = varco(&["run", "--model", model.to_str().unwrap(), "--prompt", text, "--max-new-tokens", "16", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["generated_ids"], case["generated_ids"]);
    let mut got = Vec::new();
    keys(&v, "", &mut got);
    got.sort();
    let spec = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/answer-keys.txt")).unwrap();
    let want: Vec<&str> = spec.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert_eq!(got, want);
}

#[test]
fn draw_writes_the_image() {
    let f = fixtures();
    let dir = std::env::temp_dir().join(format!("varco-draw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_png = dir.join("answer.png");
    let model = f.join("model-hf");
    let image = f.join("cases/describe_640x480/image.png");
    let out = varco(&["run", "--model", model.to_str().unwrap(), "--image", image.to_str().unwrap(), "--ground", "--max-new-tokens", "4", "--draw", out_png.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let drawn = image::open(&out_png).unwrap();
    assert_eq!((drawn.width(), drawn.height()), (640, 480));
    assert!(!dir.join("answer.partial.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_compares_with_the_cpu_reference() {
    let f = fixtures();
    let model = f.join("model-hf");
    let image = f.join("cases/pixel_1x1/image.png");
    let out = varco(&["run", "--model", model.to_str().unwrap(), "--image", image.to_str().unwrap(), "--prompt", "Is this image empty?", "--max-new-tokens", "2", "--check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.starts_with("check:")).expect("a check line");
    let rel: f64 = line.split("relative error ").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    assert!(rel < 1e-4, "{line}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let f = fixtures();
    let model = f.join("model-hf");
    let out = varco(&["run", "--model", model.to_str().unwrap(), "--image", f.join("variant.json").to_str().unwrap(), "--ocr"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a supported image"));
    let out = varco(&["run", "--model", f.to_str().unwrap(), "--ocr"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither model.safetensors"));
    let out = varco(&["run", "--model", model.to_str().unwrap(), "--refer", "0.1,0.2,1.5", "what?"]);
    assert!(!out.status.success());
}

/// `varco convert` then `varco run` on the converted directory: the same answer, token for token, as the
/// checkpoint quantized at load (`--precision q4`); `--report` prints a row per matrix; a second conversion
/// into the same place is refused.
#[test]
fn convert_then_run_gives_the_4_bit_answer() {
    let f = fixtures();
    let dir = std::env::temp_dir().join(format!("varco-convert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out_dir = dir.join("tiny");
    let model = f.join("model-hf");
    let out = varco(&["convert", "--input", model.to_str().unwrap(), "--output", out_dir.to_str().unwrap(), "--report"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.lines().any(|l| l.starts_with("llm.1.gate_up") && l.contains("q4")), "{report}");
    assert!(report.lines().any(|l| l.starts_with("llm.lm_head") && l.contains("q8")), "{report}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("tensors in"), "a summary line");
    let image = f.join("cases/grounding_500x375/image.png");
    let ask = |m: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["run", "--model", m.to_str().unwrap(), "--image", image.to_str().unwrap(), "--ground", "--max-new-tokens", "12", "--json"];
        args.extend_from_slice(extra);
        let out = varco(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // the same answer (timings aside)
    let without_timings = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("timings").expect("timings");
        v
    };
    let converted = without_timings(ask(&out_dir, &[]));
    let direct = without_timings(ask(&model, &["--precision", "q4"]));
    assert_eq!(converted, direct);
    let again = varco(&["convert", "--input", model.to_str().unwrap(), "--output", out_dir.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = varco(&["run", "--model", out_dir.to_str().unwrap(), "--precision", "q4", "--prompt", "hi"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("converted model"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `varco run --batch`: one model load answers every line in order (the same greedy answer as a single run),
/// a request whose image does not decode gets an error line and the next one still runs, and a file with a
/// malformed line is refused before anything loads, naming the line.
#[test]
fn batch_answers_every_line_and_reports_failures_in_place() {
    let f = fixtures();
    let case: serde_json::Value = serde_json::from_slice(&std::fs::read(f.join("cases/grounding_500x375/case.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(f.join("cases/grounding_500x375/image.png"), dir.path().join("scene.png")).unwrap();
    std::fs::copy(f.join("variant.json"), dir.path().join("not-an-image.png")).unwrap();
    let reqs = dir.path().join("requests.jsonl");
    let ground = serde_json::json!({"id": "a", "image": "scene.png", "prompt": "<gro>\nDescribe the image in detail."});
    let broken = serde_json::json!({"id": 2, "image": "not-an-image.png", "prompt": "<ocr>"});
    let text = serde_json::json!({"id": "c", "prompt": "Hello", "max_new_tokens": 3});
    std::fs::write(&reqs, format!("{ground}\n{broken}\n\n{text}\n")).unwrap();
    let model = f.join("model-hf");
    let out = varco(&["run", "--model", model.to_str().unwrap(), "--batch", reqs.to_str().unwrap(), "--max-new-tokens", "16"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[0]["text"], case["generated_text"]);
    assert_eq!(lines[0]["completion_tokens"], 16);
    assert_eq!(lines[1]["id"], 2);
    assert!(lines[1]["error"].as_str().unwrap().contains("not a supported image"), "{}", lines[1]);
    assert_eq!(lines[2]["id"], "c");
    assert_eq!(lines[2]["completion_tokens"], 3);

    std::fs::write(&reqs, format!("{ground}\n{{\"id\": 3, \"promt\": \"typo\"}}\n")).unwrap();
    let out = varco(&["run", "--model", model.to_str().unwrap(), "--batch", reqs.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("requests.jsonl:2") && err.contains("not a request"), "{err}");
    assert!(out.stdout.is_empty());
    std::fs::write(&reqs, "{\"id\": 1, \"prompt\": \"x\", \"image\": \"missing.png\"}\n").unwrap();
    let out = varco(&["run", "--model", model.to_str().unwrap(), "--batch", reqs.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.png does not exist"));
}
