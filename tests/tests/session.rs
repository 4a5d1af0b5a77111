//! The session against transformers and against itself: a multi-turn conversation whose prefix is already
//! in the cache reproduces transformers' turn-2 tokens while running only the new tokens; a new question
//! about the same image runs only the question, a different image of the same size runs its image again;
//! and over random sequences of requests (same or different image, continued or restarted chats,
//! interrupted answers) every answer equals a fresh session's wherever the reference's top-two margin
//! exceeds the f32 error. f32 activations (the exact path), the tiny fixture model.
#![cfg(not(target_arch = "wasm32"))]

use std::cell::Cell;
use std::sync::OnceLock;

use varco_tests::fixtures;
use varco_tests::harness::Rng;
use varco_web::chat::{Message, Part};
use varco_web::generate::Settings;
use varco_web::gpu::{Context, ContextOptions};
use varco_web::image::{decode, DecodeLimits};
use varco_web::loader::Precision;
use varco_web::model::decode::Workspace;
use varco_web::session::{Answer, Prompt, Request, Session};

fn ctx() -> &'static Context {
    static C: OnceLock<Context> = OnceLock::new();
    C.get_or_init(|| pollster::block_on(Context::new(ContextOptions::default())).expect("a WebGPU adapter (lavapipe in CI)"))
}

fn ask(s: &mut Session, messages: Vec<Message>, image: Option<&image::RgbImage>, max_new_tokens: usize, reuse: bool) -> Answer {
    ask_interrupted(s, messages, image, max_new_tokens, reuse, usize::MAX)
}

/// As [`ask`], interrupted once `after` pieces of text have come (so, after the same token in any two
/// sessions that generate the same tokens).
fn ask_interrupted(s: &mut Session, messages: Vec<Message>, image: Option<&image::RgbImage>, max_new_tokens: usize, reuse: bool, after: usize) -> Answer {
    let req = Request {
        prompt: Prompt::Chat(messages),
        image: image.cloned(),
        settings: Settings { max_new_tokens: Some(max_new_tokens), ..Settings::default() },
        reuse,
    };
    let pieces = Cell::new(0);
    pollster::block_on(s.answer(ctx(), &req, &mut |_| pieces.set(pieces.get() + 1), &|| pieces.get() >= after)).expect("an answer")
}

fn user(image: bool, text: &str) -> Message {
    let mut parts = Vec::new();
    if image {
        parts.push(Part::Image);
    }
    parts.push(Part::Text { text: text.into() });
    Message::user(parts)
}

fn case_messages(case: &serde_json::Value) -> Vec<Message> {
    serde_json::from_value(case["conversation"].clone()).expect("the fixture's conversation")
}

/// The fixture's multi-turn case: the conversation through its first assistant turn fills the cache (no
/// answer asked), then the whole conversation is answered: transformers' greedy tokens for turn 2, and
/// only the tokens after the common prefix run.
#[test]
fn a_follow_up_turn_runs_only_its_own_tokens_and_matches_transformers() {
    let case = fixtures::json("cases/multiturn_ocr_followup/case.json");
    let messages = case_messages(&case);
    let img = decode(&fixtures::read("cases/multiturn_ocr_followup/image.png"), DecodeLimits::default()).unwrap();
    let ids: Vec<i64> = case["input_ids_llava_next"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let n_image = case["n_image_tokens"].as_u64().unwrap() as usize;
    let total = ids.len() - 1 + n_image;
    // turn 1 ends where turn 2's "<|im_start|>user\n" (151644 872 198) before the image begins
    let image_at = ids.iter().position(|&i| i == -200).unwrap();
    assert_eq!(&ids[image_at - 3..image_at], &[151644, 872, 198]);
    let turn1 = image_at - 3;

    let mut s = fixtures::session(ctx(), Precision::F32, total + 64);
    let first = ask(&mut s, messages[..2].to_vec(), None, 0, true);
    assert_eq!((first.usage.prompt_tokens, first.usage.cached_tokens, first.generated_ids.len()), (turn1, 0, 0));
    let a = ask(&mut s, messages.clone(), Some(&img), 16, true);
    assert_eq!(a.usage.prompt_tokens, total);
    assert_eq!(a.usage.cached_tokens, turn1, "the first turn is reused");
    assert_eq!(a.usage.prompt_tokens - a.usage.cached_tokens, total - turn1, "only turn 2 runs");
    let want: Vec<u32> = serde_json::from_value(case["generated_ids"].clone()).unwrap();
    assert_eq!(a.generated_ids, want, "transformers' greedy tokens");
    assert_eq!(a.text, case["generated_text"].as_str().unwrap());
}

/// A second question about the same image runs only the question; a different image of the same size (one
/// pixel changed) runs the image again, and answers as a fresh session does.
#[test]
fn the_same_image_is_reused_and_a_different_one_is_not() {
    let case = fixtures::json("cases/rgba_300x200/case.json");
    let img = decode(&fixtures::read("cases/rgba_300x200/image.png"), DecodeLimits::default()).unwrap();
    let n_image = case["n_image_tokens"].as_u64().unwrap() as usize;
    let mut s = fixtures::session(ctx(), Precision::F32, 2048);
    ask(&mut s, vec![user(true, "<ocr>")], Some(&img), 3, true);
    // the system prompt and "<|im_start|>user\n" (14 tokens), the image, and the "\n" after it are reused
    let b = ask(&mut s, vec![user(true, "What does the sign say?")], Some(&img), 4, true);
    assert_eq!(b.usage.cached_tokens, 14 + n_image + 1, "the image was not run again");
    let fresh = ask(&mut fixtures::session(ctx(), Precision::F32, 2048), vec![user(true, "What does the sign say?")], Some(&img), 4, false);
    assert_eq!(fresh.usage.cached_tokens, 0);
    assert_eq!(b.generated_ids, fresh.generated_ids);
    let mut other = img.clone();
    let p = other.get_pixel_mut(150, 100);
    p.0[0] = p.0[0].wrapping_add(1);
    let c = ask(&mut s, vec![user(true, "What does the sign say?")], Some(&other), 4, true);
    assert_eq!(c.usage.cached_tokens, 14, "nothing of the other image is reused");
}

/// The first step where two answers differ, with the reference's top-two margin there: the fresh
/// prompt's logits teacher-forced along `a`.
fn margin_at(s: &Session, prompt: &Prompt, image: Option<&image::RgbImage>, a: &[u32], step: usize) -> f32 {
    let m = fixtures::model(ctx(), Precision::F32);
    let ids = s.prompt_ids(prompt).unwrap();
    let feats = image.map(|img| m.encode_image(ctx(), img).unwrap().1);
    let n = ids.len() + feats.as_ref().map_or(0, |f| f.shape[0]) + a.len() + 1;
    let mut cache = m.llm.new_cache(ctx(), n).unwrap();
    let mut ws = Workspace::new(ctx(), &m, n).unwrap();
    fixtures::prefill(ctx(), &m, &ids, feats.as_ref(), &mut cache, &ws).unwrap();
    for &id in &a[..step] {
        m.step(ctx(), &mut ws, &mut cache, id).unwrap();
    }
    let mut l = pollster::block_on(m.read_logits(ctx(), &mut ws)).unwrap();
    l.sort_by(|x, y| y.total_cmp(x));
    l[0] - l[1]
}

/// Random sequences of requests against one session that reuses its cache: each answer equals a fresh
/// session's (no reuse), but where the top-two margin is within the f32 error.
#[test]
fn reuse_never_changes_an_answer() {
    let img_a = decode(&fixtures::read("cases/pixel_1x1/image.png"), DecodeLimits::default()).unwrap();
    let mut img_b = img_a.clone();
    img_b.get_pixel_mut(0, 0).0[2] ^= 0x40;
    let questions = ["Is this image empty?", "무엇이 보이나요?", "<ocr>", "Describe it in one word.", "And the colour?"];
    let mut s = fixtures::session(ctx(), Precision::F32, 4096);
    let mut fresh = fixtures::session(ctx(), Precision::F32, 4096);
    let mut reused = 0;
    for seed in 0..2u64 {
        let mut rng = Rng::new(7000 + seed);
        let mut chat: Vec<Message> = Vec::new();
        let mut image: Option<&image::RgbImage> = None;
        for step in 0..7 {
            let q = questions[rng.below(questions.len() as u64) as usize];
            match rng.below(4) {
                // a new chat, text only or with one of the two images (same size)
                0 | 1 => {
                    image = match rng.below(3) {
                        0 => None,
                        1 => Some(&img_a),
                        _ => Some(&img_b),
                    };
                    chat = vec![user(image.is_some(), q)];
                }
                // the same first question again, about the same image
                2 if !chat.is_empty() => chat.truncate(1),
                // the chat continues
                _ if !chat.is_empty() => chat.push(user(false, q)),
                _ => chat = vec![user(false, q)],
            }
            let after = if rng.below(3) == 0 { 1 + rng.below(3) as usize } else { usize::MAX };
            let a = ask_interrupted(&mut s, chat.clone(), image, 6, true, after);
            let f = ask_interrupted(&mut fresh, chat.clone(), image, 6, false, after);
            assert_eq!(f.usage.cached_tokens, 0);
            assert_eq!((a.usage.prompt_tokens, a.stop), (f.usage.prompt_tokens, f.stop), "seed {seed} step {step}");
            reused += a.usage.cached_tokens;
            if a.generated_ids != f.generated_ids {
                let at = a.generated_ids.iter().zip(&f.generated_ids).take_while(|(x, y)| x == y).count();
                let margin = margin_at(&fresh, &Prompt::Chat(chat.clone()), image, &f.generated_ids, at);
                assert!(margin < 1e-4, "seed {seed} step {step}: reuse changed token {at} although the margin is {margin}");
            }
            chat.push(Message::assistant(&a.text));
        }
    }
    assert!(reused > 1000, "the sequences reused only {reused} tokens: the test does not exercise reuse");
}

/// A lost device (a driver reset; here `destroy()`) ends the next answer with an error of its own kind that
/// says what happened, not a read-back failure; the CLI prints it and exits non-zero.
#[test]
fn a_lost_device_is_told_as_such() {
    let ctx = pollster::block_on(Context::new(ContextOptions::default())).expect("a WebGPU adapter (lavapipe in CI)");
    let mut s = fixtures::session(&ctx, Precision::F32, 64);
    let req = Request::chat(vec![user(false, "Hi")], None);
    pollster::block_on(s.answer(&ctx, &req, &mut |_| {}, &|| false)).expect("an answer before the loss");
    ctx.device.destroy();
    let _ = ctx.device.poll(wgpu::PollType::wait_indefinitely());
    let e = pollster::block_on(s.answer(&ctx, &req, &mut |_| {}, &|| false)).err().expect("no answer after the loss");
    assert!(matches!(e, varco_web::Error::DeviceLost(_)), "{e:?}");
    assert_eq!(e.class(), "GPUDeviceLostError");
    assert!(e.to_string().contains("the GPU device was lost: the device was destroyed"), "{e}");
}

/// A long prompt runs in chunks paced by the device: a session's first prompt starts with 1,024 tokens, every
/// chunk but the last holds at least 1,024 and none more than the model's chunk, and they add up to the
/// prompt's new tokens, on a later prompt too (which starts at the pace the session measured: on lavapipe
/// that may be 1,024 again). That chunks give transformers' logits is generate.rs's test.
#[test]
fn long_prompts_run_in_paced_chunks() {
    use varco_web::model::PREFILL_CHUNK;
    let mut s = fixtures::session(ctx(), Precision::F32, 3000);
    let max = s.model.prefill_chunk;
    assert!(max >= 2 * PREFILL_CHUNK, "lavapipe binds {max}-token chunks");
    let ask_ids = |s: &mut Session, n: usize, salt: i64| {
        let ids: Vec<i64> = (0..n as i64).map(|i| 1000 + (i * 7 + salt) % 5000).collect();
        let req = Request { prompt: Prompt::Ids(ids), image: None, settings: Settings { max_new_tokens: Some(4), ..Settings::default() }, reuse: false };
        pollster::block_on(s.answer(ctx(), &req, &mut |_| {}, &|| false)).unwrap()
    };
    let check = |chunks: &[usize], n: usize| {
        assert_eq!(chunks.iter().sum::<usize>(), n, "{chunks:?}");
        assert!(chunks.iter().all(|&c| c <= max), "{chunks:?}");
        assert!(chunks[..chunks.len() - 1].iter().all(|&c| c >= PREFILL_CHUNK), "{chunks:?}");
    };
    let first = ask_ids(&mut s, 2500, 1);
    assert_eq!(first.usage.prompt_tokens, 2500);
    assert_eq!(s.prefill_chunks()[0], PREFILL_CHUNK, "{:?}", s.prefill_chunks());
    check(s.prefill_chunks(), 2500);
    ask_ids(&mut s, 2500, 2);
    assert!(s.prefill_chunks()[0] >= PREFILL_CHUNK, "{:?}", s.prefill_chunks());
    check(s.prefill_chunks(), 2500);
}
