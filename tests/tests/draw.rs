//! `--draw`: boxes where the parsed coordinates say, labels rendered (Hangul included).
#![cfg(not(target_arch = "wasm32"))]

use ab_glyph::Font;
use varco_web::answer::parse;
use varco_web::draw::{colour, draw, load_font};

#[test]
fn boxes_and_hangul_labels_are_drawn() {
    let font = load_font(None).expect("a font with Hangul (fonts-nanum; scripts/setup.sh installs it)");
    assert_ne!(font.glyph_id('편').0, 0, "the label font has no Hangul");
    let img = image::RgbImage::from_pixel(200, 100, image::Rgb([0, 0, 0]));
    let spans = parse("<char>편의점</char><bbox>0.25, 0.4, 0.75, 0.9</bbox><obj>cat</obj><bbox>0.05, 0.05, 0.2, 0.3</bbox>", Some((200, 100)));
    let out = draw(&img, &spans, &font);
    if let Some(p) = std::env::var_os("VARCO_DRAW_OUT") {
        out.save(p).unwrap();
    }
    // the first box's edges (x 50..150, y 40..90) carry the first span's colour, its inside stays black
    assert_eq!(out.get_pixel(100, 89).0, colour(0), "bottom edge");
    assert_eq!(out.get_pixel(50, 60).0, colour(0), "left edge");
    assert_eq!(out.get_pixel(100, 65).0, [0, 0, 0], "inside");
    assert_eq!(out.get_pixel(39, 20).0, colour(1), "second span's right edge (x 10..40, 2 px thick)");
    // the label above the first box: its colour with white glyph pixels in it
    let label: Vec<[u8; 3]> = (40 - 12..40).flat_map(|y| (52..100).map(move |x| (x, y))).map(|(x, y)| out.get_pixel(x, y).0).collect();
    assert!(label.iter().any(|p| *p == colour(0)), "label background");
    // glyph pixels are the background blended towards white: the green channel rises well above its 25
    assert!(label.iter().filter(|p| p[1] > 100).count() > 20, "label glyphs");
    // outside every box and label nothing changed
    assert_eq!(out.get_pixel(195, 5).0, [0, 0, 0]);
}
