//! Tokenizer, chat template and prompt ids against transformers' fixtures; the streaming detokenizer.
#![cfg(not(target_arch = "wasm32"))]

use varco_tests::fixtures;
use varco_web::chat::{ChatTemplate, Message, PromptIds};
use varco_web::tokenizer::Tokenizer;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_bytes(&fixtures::read("model-hf/tokenizer.json")).unwrap()
}

#[test]
fn tokenizer_cases_round_trip() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 151_676);
    for (name, id) in [("<|im_end|>", 151_645), ("<gro>", 151_666), ("<ocr>", 151_667), ("<delim>", 151_674), ("<image>", 151_675)] {
        assert_eq!(tok.token_id(name), Some(id), "{name}");
    }
    let cases = fixtures::json("tokenizer_cases.json");
    for c in cases.as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(text).unwrap(), want, "{text:?}");
        assert_eq!(tok.decode(&want).unwrap(), c["decoded"].as_str().unwrap(), "{text:?}");
    }
}

#[test]
fn prompts_and_ids_match_every_case() {
    let tok = tokenizer();
    let tmpl = ChatTemplate::from_json(std::str::from_utf8(&fixtures::read("model-hf/chat_template.json")).unwrap()).unwrap();
    let image_id = tok.token_id("<image>").unwrap();
    for case in fixtures::cases() {
        let c = fixtures::json(&format!("cases/{case}/case.json"));
        let messages: Vec<Message> = serde_json::from_value(c["conversation"].clone()).unwrap();
        let prompt = tmpl.render(&messages, true).unwrap();
        assert_eq!(prompt, c["prompt_text"].as_str().unwrap(), "{case}: prompt text");
        let ids = PromptIds::new(&tok, &prompt).unwrap();
        let want_ln: Vec<i64> = c["input_ids_llava_next"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(ids.llava_next, want_ln, "{case}: LLaVA-NeXT ids");
        let n: Vec<u32> = if c["image"].is_null() { vec![] } else { vec![c["n_image_tokens"].as_u64().unwrap() as u32] };
        let want_hf: Vec<u32> = c["input_ids_hf"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ids.expanded(image_id, &n).unwrap(), want_hf, "{case}: HF ids");
        assert_eq!(ids.len_with_images(&n), want_hf.len());
    }
}

#[test]
fn streaming_never_splits_a_character() {
    let tok = tokenizer();
    let mut seqs: Vec<Vec<u32>> = fixtures::json("tokenizer_cases.json")
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect())
        .collect();
    for case in fixtures::cases() {
        let c = fixtures::json(&format!("cases/{case}/case.json"));
        seqs.push(c["generated_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect());
    }
    let mut held_back = 0;
    for ids in seqs {
        let full = tok.decode(&ids).unwrap();
        let mut s = tok.stream();
        let mut text = String::new();
        for &id in &ids {
            match s.push(id).unwrap() {
                Some(piece) => {
                    assert!(!piece.contains('\u{FFFD}') || full.contains('\u{FFFD}'), "a piece split a character: {piece:?}");
                    text.push_str(&piece);
                }
                None => held_back += 1,
            }
        }
        if let Some(rest) = s.finish().unwrap() {
            text.push_str(&rest);
        }
        assert_eq!(text, full);
    }
    assert!(held_back > 0, "the Korean cases must hold back partial characters at least once");
}

#[test]
fn template_errors_are_clear() {
    assert!(ChatTemplate::from_json("{}").is_err());
    let t = ChatTemplate::new("{% for m in messages %}");
    assert!(t.render(&[], true).unwrap_err().to_string().contains("chat template"));
    let tok = tokenizer();
    let ids = PromptIds::new(&tok, "a<image>b").unwrap();
    assert!(ids.expanded(151_675, &[]).is_err(), "an image without its token count");
    assert!(ids.expanded(151_675, &[3, 4]).is_err(), "more counts than images");
}
