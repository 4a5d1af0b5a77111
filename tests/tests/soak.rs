//! The long run, natively: a thousand short requests of mixed kinds through one session — new chats and
//! continued ones, questions about images of three sizes, answers interrupted at once or after a few
//! tokens — and what is alive on the GPU (buffers, their bytes, bind groups, as the library counts them and
//! as wgpu does) is the same after each of them as after the warm-up round that saw every kind and the
//! largest image. Then an interrupt storm: fifty answers each stopped at a random point, and the next answer
//! is transformers' own.
#![cfg(not(target_arch = "wasm32"))]

use std::cell::Cell;

use varco_tests::fixtures;
use varco_tests::harness::Rng;
use varco_web::chat::{Message, Part};
use varco_web::generate::Settings;
use varco_web::gpu::{Context, ContextOptions};
use varco_web::image::{decode, DecodeLimits};
use varco_web::loader::Precision;
use varco_web::session::{Answer, Request, Session};

fn ask(ctx: &Context, s: &mut Session, messages: Vec<Message>, image: Option<&image::RgbImage>, max: usize, stop_after: usize) -> Answer {
    let req = Request { settings: Settings { max_new_tokens: Some(max), ..Settings::default() }, ..Request::chat(messages, image.cloned()) };
    let pieces = Cell::new(0);
    pollster::block_on(s.answer(ctx, &req, &mut |_| pieces.set(pieces.get() + 1), &|| pieces.get() >= stop_after)).expect("an answer")
}

fn user(image: bool, text: &str) -> Message {
    let mut parts = Vec::new();
    if image {
        parts.push(Part::Image);
    }
    parts.push(Part::Text { text: text.into() });
    Message::user(parts)
}

/// Live buffers and bind groups (the library's counts, and wgpu's own buffer count), and live bytes.
fn alive(ctx: &Context) -> (varco_web::gpu::LiveCounts, isize) {
    ctx.queue.submit([]);
    ctx.device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    (ctx.live.counts(), ctx.device.get_internal_counters().hal.buffers.read())
}

#[test]
fn a_thousand_requests_leave_the_gpu_as_the_first_ones_did() {
    let ctx = pollster::block_on(Context::new(ContextOptions::default())).expect("a WebGPU adapter (lavapipe in CI)");
    let mut s = fixtures::session(&ctx, Precision::Q4, 2048);
    let images: Vec<image::RgbImage> = ["pixel_1x1", "rgba_300x200", "gray_400x300"]
        .iter()
        .map(|c| decode(&fixtures::read(&format!("cases/{c}/image.png")), DecodeLimits::default()).unwrap())
        .collect();
    let questions = ["Is this empty?", "<ocr>", "무엇이 보이나요?", "Describe it.", "And then?"];
    let mut rng = Rng::new(31);
    let mut chat: Vec<Message> = Vec::new();
    let mut image = None;
    let mut step = |s: &mut Session, rng: &mut Rng, i: usize| {
        let q = questions[rng.below(questions.len() as u64) as usize];
        // every kind in the first round; afterwards text, and a new image question every 500 (two in all, of
        // two sizes): an image costs lavapipe 10-15 s (its ≈ 1,500 tokens through the vision tower and the
        // prefill), a text question ≈ 0.1 s; the image buffers' counts are what the warm-up round pinned
        let kind = if i < 8 { i % 4 } else if i % 500 == 50 { 0 } else { 1 + rng.below(4) as usize };
        match kind {
            0 => {
                image = Some(&images[i % images.len()]);
                chat = vec![user(true, q)];
            }
            1 | 4 if !chat.is_empty() => chat.push(user(false, q)),
            2 => {
                image = None;
                chat = vec![user(false, q)];
            }
            _ => chat.truncate(1),
        }
        if chat.is_empty() {
            chat = vec![user(false, q)];
            image = None;
        }
        // two new tokens at most: each costs lavapipe ≈ 37 ms (the 151,680-row head), and a second token
        // already runs the decode step, its workspace and an interruption between tokens
        let stop_after = match rng.below(4) {
            0 => 0,
            1 => 1,
            _ => usize::MAX,
        };
        let a = ask(&ctx, s, chat.clone(), image, 2, stop_after);
        chat.push(Message::assistant(&a.text));
    };
    // the warm-up: every kind, every image (the largest last)
    for i in 0..8 {
        step(&mut s, &mut rng, i);
    }
    ask(&ctx, &mut s, vec![user(true, "<ocr>")], Some(&images[2]), 4, usize::MAX);
    let warm = alive(&ctx);
    assert!(warm.0.buffers > 0 && warm.0.bytes > 0 && warm.0.bind_groups > 0, "{warm:?}");
    let n: usize = std::env::var("VARCO_SOAK").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    for i in 8..8 + n {
        step(&mut s, &mut rng, i);
        if i % 50 == 0 || i == 7 + n {
            assert_eq!(alive(&ctx), warm, "after request {i}: live buffers, bytes, bind groups changed");
        }
    }
}

#[test]
fn after_an_interrupt_storm_an_answer_is_transformers_own() {
    let ctx = pollster::block_on(Context::new(ContextOptions::default())).expect("a WebGPU adapter (lavapipe in CI)");
    let case = fixtures::json("cases/text_only_ko/case.json");
    let messages: Vec<Message> = serde_json::from_value(case["conversation"].clone()).unwrap();
    let mut s = fixtures::session(&ctx, Precision::F32, 256);
    let mut rng = Rng::new(32);
    for _ in 0..50 {
        let a = ask(&ctx, &mut s, messages.clone(), None, 16, rng.below(8) as usize);
        assert!(a.generated_ids.len() <= 8);
    }
    let a = ask(&ctx, &mut s, messages, None, 16, usize::MAX);
    let want: Vec<u32> = serde_json::from_value(case["generated_ids"].clone()).unwrap();
    assert_eq!(a.generated_ids, want);
    assert_eq!(a.text, case["generated_text"].as_str().unwrap());
}

/// An allocation the GPU refuses (the test hook makes the device refuse the n-th buffer, inside the error scope
/// a real out-of-memory refusal meets) ends that request with a GPUMemoryError that says what did not fit and
/// how much it needed; nothing it allocated stays alive; the next, smaller request is answered. At load, the
/// same refusal names the model's weights.
#[test]
fn a_refused_allocation_is_a_named_memory_error_and_the_engine_goes_on() {
    let ctx = pollster::block_on(Context::new(ContextOptions::default())).expect("a WebGPU adapter (lavapipe in CI)");
    let mut s = fixtures::session(&ctx, Precision::F32, 2048);
    let img = decode(&fixtures::read("cases/pixel_1x1/image.png"), DecodeLimits::default()).unwrap();
    ask(&ctx, &mut s, vec![user(true, "<ocr>")], Some(&img), 2, usize::MAX);
    let before = alive(&ctx);
    let mut other = img.clone();
    other.get_pixel_mut(0, 0).0[0] ^= 1;
    ctx.refuse_allocation(3);
    let req = Request { settings: Settings { max_new_tokens: Some(2), ..Settings::default() }, ..Request::chat(vec![user(true, "What is it?")], Some(other)) };
    let e = pollster::block_on(s.answer(&ctx, &req, &mut |_| {}, &|| false)).err().expect("refused");
    assert_eq!(e.class(), "GPUMemoryError", "{e:?}");
    let m = e.to_string();
    assert!(m.contains("ran out of memory for this request") && m.contains("the image") && m.contains(" MB)"), "{m}");
    assert_eq!(alive(&ctx), before, "what the refused request allocated is freed");
    let a = ask(&ctx, &mut s, vec![user(false, "Hi")], None, 2, usize::MAX);
    assert!(!a.generated_ids.is_empty());
    // at load: the weights
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    varco_web::convert::convert(&fixtures::root().join("model-hf"), &out, &Default::default(), &mut |_| {}).unwrap();
    ctx.refuse_allocation(5);
    let e = varco_web::loader::stream::load_dir(&ctx, &out).err().expect("refused");
    assert_eq!(e.class(), "GPUMemoryError", "{e:?}");
    assert!(e.to_string().contains("the model's weights"), "{e}");
}
