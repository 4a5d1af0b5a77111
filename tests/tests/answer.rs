//! The answer parser on the model card's formats, on malformed and truncated output, and on random input.
#![cfg(not(target_arch = "wasm32"))]

use varco_tests::harness::Rng;
use varco_web::answer::{format_box, format_coord, parse, prompts, SpanKind};

#[test]
fn grounding_with_several_boxes() {
    let a = "There are <obj>two cats</obj><bbox>0.014, 0.106, 0.51, 0.996<delim>0.51, 0.054, 0.996, 0.787</bbox> on a couch with <obj>a remote</obj><bbox>0.037, 0.141, 0.283, 0.253</bbox>.<|im_end|>";
    let s = parse(a, Some((640, 480)));
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].kind, s[0].text.as_str(), s[0].boxes.len()), (SpanKind::Object, "two cats", 2));
    assert_eq!(s[0].boxes[1].x1, 0.51);
    let px = s[0].boxes[0].pixels.unwrap();
    assert!((px[0] - 0.014 * 640.0).abs() < 1e-3 && (px[3] - 0.996 * 480.0).abs() < 1e-3);
    assert_eq!(s[1].text, "a remote");
}

#[test]
fn ocr_lines() {
    let a = "<char>백범로</char><bbox>0.172, 0.266, 0.328, 0.341</bbox>\n<char>OPEN 24H</char><bbox>0.083, 0.333, 0.5, 0.4</bbox>";
    let s = parse(a, None);
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].kind, s[0].text.as_str()), (SpanKind::Text, "백범로"));
    assert_eq!(s[1].boxes[0].y2, 0.4);
    assert!(s[1].boxes[0].pixels.is_none());
}

#[test]
fn malformed_and_truncated_keep_what_parses() {
    // truncated inside the second box list
    let s = parse("<obj>cat</obj><bbox>0.1, 0.2, 0.3, 0.4<delim>0.5, 0.6", None);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].boxes.len(), 1, "the incomplete second box is dropped");
    // unclosed label
    let s = parse("<char>EXIT", None);
    assert_eq!((s.len(), s[0].text.as_str()), (1, "EXIT"));
    // a box with no label, junk numbers, empty input
    let s = parse("<bbox>0.1, 0.1, 0.2, 0.2</bbox> and <bbox>x, 1, 2</bbox>", None);
    assert_eq!(s.len(), 1);
    assert!(parse("", None).is_empty());
    assert!(parse("no tags at all", None).is_empty());
    // a label whose boxes never came
    let s = parse("<obj>dog</obj> is brown", None);
    assert_eq!((s[0].text.as_str(), s[0].boxes.len()), ("dog", 0));
}

#[test]
fn random_input_never_panics() {
    let atoms = ["<obj>", "</obj>", "<char>", "</char>", "<bbox>", "</bbox>", "<delim>", "0.5", ", ", "1", "x", "한", "<", ">", " ", "\n", "-3e9", "NaN"];
    let mut rng = Rng::new(9);
    for _ in 0..5000 {
        let n = rng.below(20) as usize;
        let s: String = (0..n).map(|_| atoms[rng.below(atoms.len() as u64) as usize]).collect();
        for span in parse(&s, Some((100, 50))) {
            for b in span.boxes {
                assert!(b.x1.is_finite() && b.y2.is_finite());
            }
        }
    }
}

#[test]
fn prompts_match_the_card() {
    assert_eq!(format_coord(0.51), "0.51");
    assert_eq!(format_coord(0.0), "0");
    assert_eq!(format_coord(1.0), "1");
    assert_eq!(format_coord(0.0394), "0.039");
    assert_eq!(format_box([0.039, 0.138, 0.283, 0.257]), "0.039, 0.138, 0.283, 0.257");
    // the referring_ko fixture's prompt, rebuilt
    assert_eq!(prompts::refer(prompts::ko::REFER_LABEL, [0.039, 0.138, 0.283, 0.257], "은 어떻게 쓰는거야?"), "<obj>이 물건</obj><bbox>0.039, 0.138, 0.283, 0.257</bbox>은 어떻게 쓰는거야?");
    // the describe fixture's prompt
    assert_eq!(prompts::describe(), "Describe this image.");
    assert!(prompts::ko::ground(None).starts_with("<gro>\n") && prompts::ko::ground(Some("고양이")).contains("고양이"));
    assert_eq!(prompts::ground(None), "<gro>\nDescribe the image in detail.");
    assert_eq!(prompts::ocr(), "<ocr>");
    // a referring prompt parses back into its box
    let s = parse(&prompts::refer("this", [0.1, 0.2, 0.3, 0.4], "?"), None);
    assert_eq!((s[0].boxes[0].x1, s[0].boxes[0].y2), (0.1, 0.4));
}
