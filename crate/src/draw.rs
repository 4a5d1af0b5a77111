//! `--draw`: the image with each span's boxes outlined and labelled with its text, one colour per span.
//! Labels are rendered with a TrueType font (Hangul needs one that has it, e.g. Debian's fonts-nanum).

use ab_glyph::{Font, FontVec, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

use crate::answer::Span;
use crate::{Error, Result};

/// Fonts tried when none is given: ones with Hangul first.
pub const DEFAULT_FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/nanum/NanumGothic.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/AppleSDGothicNeo.ttc",
    "C:\\\\Windows\\\\Fonts\\\\malgun.ttf",
];

pub fn load_font(path: Option<&std::path::Path>) -> Result<FontVec> {
    let candidates: Vec<std::path::PathBuf> = match path {
        Some(p) => vec![p.to_path_buf()],
        None => DEFAULT_FONTS.iter().map(std::path::PathBuf::from).collect(),
    };
    for p in &candidates {
        if let Ok(bytes) = std::fs::read(p) {
            return FontVec::try_from_vec(bytes).map_err(|e| Error::Image(format!("{}: not a usable font ({e})", p.display())));
        }
    }
    Err(Error::Image(format!("no font for the labels: tried {} (install fonts-nanum, or pass --font)", candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))))
}

const PALETTE: [[u8; 3]; 8] = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [128, 128, 0]];

/// The colour of span `i`.
pub fn colour(i: usize) -> [u8; 3] {
    PALETTE[i % PALETTE.len()]
}

fn fill(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    for y in y0.max(0)..y1.min(h) {
        for x in x0.max(0)..x1.min(w) {
            img.put_pixel(x as u32, y as u32, Rgb(c));
        }
    }
}

/// Draws every span's boxes (pixel coordinates required) and labels onto a copy of `img`.
pub fn draw(img: &RgbImage, spans: &[Span], font: &FontVec) -> RgbImage {
    let mut out = img.clone();
    let t = ((img.width().min(img.height()) / 200).max(1) + 1) as i64;
    let scale = PxScale::from((img.height() as f32 / 30.0).clamp(12.0, 48.0));
    let sf = font.as_scaled(scale);
    for (i, span) in spans.iter().enumerate() {
        let c = colour(i);
        for b in &span.boxes {
            let Some([x1, y1, x2, y2]) = b.pixels else { continue };
            let (x1, y1, x2, y2) = (x1.round() as i64, y1.round() as i64, x2.round() as i64, y2.round() as i64);
            fill(&mut out, x1, y1, x2, y1 + t, c);
            fill(&mut out, x1, y2 - t, x2, y2, c);
            fill(&mut out, x1, y1, x1 + t, y2, c);
            fill(&mut out, x2 - t, y1, x2, y2, c);
            if span.text.is_empty() {
                continue;
            }
            // label: white text on the span's colour, above the box (inside it at the top edge)
            let width: f32 = span.text.chars().map(|ch| sf.h_advance(font.glyph_id(ch))).sum();
            let lh = sf.height().ceil() as i64;
            let top = if y1 - lh >= 0 { y1 - lh } else { y1 };
            fill(&mut out, x1, top, x1 + width.ceil() as i64 + 4, top + lh, c);
            let mut pen = x1 as f32 + 2.0;
            for ch in span.text.chars() {
                let gid = font.glyph_id(ch);
                let glyph = gid.with_scale_and_position(scale, ab_glyph::point(pen, top as f32 + sf.ascent()));
                pen += sf.h_advance(gid);
                if let Some(outlined) = font.outline_glyph(glyph) {
                    let bb = outlined.px_bounds();
                    outlined.draw(|gx, gy, cov| {
                        let (x, y) = (bb.min.x as i64 + gx as i64, bb.min.y as i64 + gy as i64);
                        if x >= 0 && y >= 0 && x < out.width() as i64 && y < out.height() as i64 && cov > 0.0 {
                            let p = out.get_pixel_mut(x as u32, y as u32);
                            for k in 0..3 {
                                p[k] = (p[k] as f32 * (1.0 - cov) + 255.0 * cov).round() as u8;
                            }
                        }
                    });
                }
            }
        }
    }
    out
}
