//! The converter's memory does not grow with the model: a synthetic checkpoint of 3.8 GB with
//! VARCO-VISION-14B's names and shapes (one layer of each tower, the full 151680 × 5120 embed_tokens and
//! lm_head, bf16, two files with an index) converts with a peak resident set (VmHWM, this process alone: the
//! test is its own binary) far below its size. Also prints the conversion throughput.
#![cfg(not(target_arch = "wasm32"))]

use varco_tests::fixtures;
use varco_web::convert::{self, synthetic, Options};
use varco_web::loader::manifest::Manifest;

fn vm_hwm_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_multi_gigabyte_checkpoint_converts_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let bytes = synthetic::write(&input, synthetic::Shape { text_layers: 1, vision_layers: 1 }, 7).unwrap();
    for f in ["tokenizer.json", "chat_template.json"] {
        std::fs::write(input.join(f), fixtures::read(&format!("model-hf/{f}"))).unwrap();
    }
    assert!(bytes > 3_500_000_000, "the synthetic checkpoint is {bytes} bytes");
    let before = vm_hwm_bytes();
    let t = std::time::Instant::now();
    let mut last = 0;
    let out = convert::convert(&input, &tmp.path().join("out"), &Options::default(), &mut |p| {
        assert!(p.done >= last && p.done <= p.total, "progress {} of {} after {last}", p.done, p.total);
        last = p.done;
    })
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let peak = vm_hwm_bytes();
    eprintln!(
        "converted {:.2} GB into {:.2} GB in {secs:.1} s ({:.0} MB/s in); peak RSS {:.0} MB (before: {:.0} MB)",
        bytes as f64 / 1e9,
        out.manifest.total_bytes as f64 / 1e9,
        bytes as f64 / 1e6 / secs,
        peak as f64 / 1e6,
        before as f64 / 1e6
    );
    // the whole model is 3.8 GB, its largest tensors 1.56 GB each (3.1 GB as f32)
    assert!(peak < 1 << 30, "peak RSS {peak} bytes while converting {bytes} bytes");
    assert_eq!(last, out.manifest.total_bytes, "progress reached the end");
    let m = Manifest::parse(&std::fs::read(tmp.path().join("out/manifest.json")).unwrap()).unwrap();
    assert_eq!(m.config.text.vocab, 151680);
    assert_eq!(m.shards.len() as u64, m.total_bytes.div_ceil(64 << 20));
}
