//! Answers into structure, and the prompts that ask for them (docs: MODEL.md §4).
//!
//! The model writes `<obj>phrase</obj><bbox>x1, y1, x2, y2<delim>x1, y1, x2, y2</bbox>` for grounding and
//! `<char>text</char><bbox>x1, y1, x2, y2</bbox>` for OCR: corners top-left and bottom-right, each coordinate
//! in 0..1 of the **original** image's width (x) or height (y). The parser keeps whatever parses from
//! malformed or truncated output and never fails.

use serde::Serialize;

/// What a span marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    /// `<obj>…</obj>`: an object or phrase (grounding, referring).
    Object,
    /// `<char>…</char>`: a piece of text (OCR).
    Text,
}

/// A box in 0..1 coordinates of the original image, and in its pixels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BoxCoords {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    /// `[x1, y1, x2, y2]` in pixels of the original image (when its size was given).
    pub pixels: Option<[f32; 4]>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Span {
    pub kind: SpanKind,
    pub text: String,
    pub boxes: Vec<BoxCoords>,
}

/// The spans of an answer, in order. `image_wh` adds pixel coordinates.
pub fn parse(answer: &str, image_wh: Option<(u32, u32)>) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut rest = answer;
    loop {
        // the next opening tag of either kind
        let next = [("<obj>", "</obj>", SpanKind::Object), ("<char>", "</char>", SpanKind::Text), ("<bbox>", "", SpanKind::Object)]
            .into_iter()
            .filter_map(|(open, close, kind)| rest.find(open).map(|i| (i, open, close, kind)))
            .min_by_key(|t| t.0);
        let Some((i, open, close, kind)) = next else { break };
        rest = &rest[i + open.len()..];
        if open == "<bbox>" {
            // boxes without a label of their own belong to the span before them, or to an unnamed one
            let (boxes, after) = take_boxes(rest, image_wh);
            rest = after;
            match spans.last_mut() {
                Some(s) if s.boxes.is_empty() => s.boxes = boxes,
                _ if !boxes.is_empty() => spans.push(Span { kind: SpanKind::Object, text: String::new(), boxes }),
                _ => {}
            }
            continue;
        }
        let (text, after) = match rest.find(close) {
            Some(j) => (&rest[..j], &rest[j + close.len()..]),
            None => {
                // truncated: the text up to the next tag or the end
                let j = rest.find('<').unwrap_or(rest.len());
                (&rest[..j], &rest[j..])
            }
        };
        rest = after;
        let mut span = Span { kind, text: text.trim().to_string(), boxes: Vec::new() };
        let trimmed = rest.trim_start();
        if let Some(b) = trimmed.strip_prefix("<bbox>") {
            let (boxes, after) = take_boxes(b, image_wh);
            span.boxes = boxes;
            rest = after;
        }
        spans.push(span);
    }
    spans
}

/// Boxes up to `</bbox>` (or the end), separated by `<delim>`; the rest of the text after it.
fn take_boxes(s: &str, image_wh: Option<(u32, u32)>) -> (Vec<BoxCoords>, &str) {
    let (body, rest) = match s.find("</bbox>") {
        Some(j) => (&s[..j], &s[j + "</bbox>".len()..]),
        None => {
            // truncated: up to the next tag that is not a <delim>
            let mut j = 0;
            while let Some(k) = s[j..].find('<') {
                if s[j + k..].starts_with("<delim>") {
                    j += k + "<delim>".len();
                } else {
                    j += k;
                    break;
                }
            }
            let j = if s[j..].starts_with('<') { j } else { s.len() };
            (&s[..j], &s[j..])
        }
    };
    let boxes = body.split("<delim>").filter_map(|b| parse_box(b, image_wh)).collect();
    (boxes, rest)
}

fn parse_box(s: &str, image_wh: Option<(u32, u32)>) -> Option<BoxCoords> {
    let v: Vec<f32> = s.split(',').map(|t| t.trim().parse::<f32>()).collect::<Result<_, _>>().ok()?;
    if v.len() != 4 || v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let pixels = image_wh.map(|(w, h)| [v[0] * w as f32, v[1] * h as f32, v[2] * w as f32, v[3] * h as f32]);
    Some(BoxCoords { x1: v[0], y1: v[1], x2: v[2], y2: v[3], pixels })
}

/// A coordinate as the model writes it: up to three decimals, trailing zeros dropped (`0.51`, `0`, `1`).
pub fn format_coord(v: f32) -> String {
    let s = format!("{:.3}", v.clamp(0.0, 1.0));
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".into()
    } else {
        s.into()
    }
}

/// `x1, y1, x2, y2` in the model's number format.
pub fn format_box(b: [f32; 4]) -> String {
    b.iter().map(|&v| format_coord(v)).collect::<Vec<_>>().join(", ")
}

/// The prompt texts of the model card's tasks (the image goes before them in the message).
pub mod prompts {
    use super::format_box;

    pub fn describe() -> String {
        "Describe this image.".into()
    }

    /// Grounding: every object the answer mentions comes with its boxes.
    pub fn ground(phrase: Option<&str>) -> String {
        match phrase {
            Some(p) => format!("<gro>\nFind {p}."),
            None => "<gro>\nDescribe the image in detail.".into(),
        }
    }

    /// The task prompts in Korean (the model answers in the language it is asked in).
    pub mod ko {
        pub fn describe() -> String {
            "이 이미지를 설명해 주세요.".into()
        }

        pub fn ground(phrase: Option<&str>) -> String {
            match phrase {
                Some(p) => format!("<gro>\n이미지에서 {p} 찾아 주세요."),
                None => "<gro>\n이미지를 자세히 설명해 주세요.".into(),
            }
        }

        /// Referring's label for the region ("this thing"); the question follows it directly, as Korean
        /// particles attach to it (`이 물건은 …`).
        pub const REFER_LABEL: &str = "이 물건";
    }

    /// Referring: a question about the region `b` (0..1 corners), called `label` in the question.
    pub fn refer(label: &str, b: [f32; 4], question: &str) -> String {
        format!("<obj>{label}</obj><bbox>{}</bbox>{question}", format_box(b))
    }

    /// OCR: every piece of text with its box.
    pub fn ocr() -> String {
        "<ocr>".into()
    }
}
