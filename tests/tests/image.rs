//! The image pipeline against transformers' fixtures: token counts for 400 sizes, Pillow-equivalent tiles,
//! channel means of every case; decoding of bad and oriented inputs.
#![cfg(not(target_arch = "wasm32"))]

use candle_core::DType;
use varco_tests::fixtures;
use varco_tests::harness::Rng;
use varco_web::image::{decode, normalize, tiles, AnyresConfig, DecodeLimits};

#[test]
fn token_counts_match_all_400_sizes() {
    let cfg = AnyresConfig::default();
    let sizes = fixtures::json("image_token_counts.json");
    let sizes = sizes.as_array().unwrap();
    assert_eq!(sizes.len(), 400);
    for s in sizes {
        let u = |k: &str| s[k].as_u64().unwrap() as u32;
        let plan = cfg.plan(u("w"), u("h"));
        assert_eq!(plan.grid_wh, (u("tiles_w"), u("tiles_h")), "{s}");
        assert_eq!(plan.rows_cols, (u("rows"), u("cols")), "{s}");
        assert_eq!(plan.n_tokens, u("n_image_tokens"), "{s}");
    }
}

#[test]
fn documented_examples() {
    let cfg = AnyresConfig::default();
    for (w, h, n) in [(640, 480, 2929), (480, 640, 2943), (1024, 768, 4725), (1920, 1080, 7269), (954, 1160, 8765), (384, 1, 757), (3000, 100, 1544), (1647, 1281, 7332)] {
        assert_eq!(cfg.plan(w, h).n_tokens, n, "{w}x{h}");
    }
}

/// Every case: the plan agrees with case.json; the tiles' channel means agree within 2e-3; where the fixture
/// has the tiles themselves, they agree with Pillow within ±1 on ≥ 99.9 % of values.
#[test]
fn tiles_match_transformers() {
    let cfg = AnyresConfig::default();
    let mut checked_tiles = 0;
    for case in fixtures::cases() {
        let meta = fixtures::json(&format!("cases/{case}/case.json"));
        if meta["image"].is_null() {
            continue;
        }
        let img = decode(&fixtures::read(&format!("cases/{case}/image.png")), DecodeLimits::default()).unwrap();
        let wh = meta["image_size_wh"].as_array().unwrap();
        assert_eq!((img.width() as u64, img.height() as u64), (wh[0].as_u64().unwrap(), wh[1].as_u64().unwrap()));
        let (plan, ts) = tiles(&img, &cfg).unwrap();
        assert_eq!(plan.n_tokens as u64, meta["n_image_tokens"].as_u64().unwrap(), "{case}");
        let g = meta["grid_tiles_wh"].as_array().unwrap();
        assert_eq!((plan.grid_wh.0 as u64, plan.grid_wh.1 as u64), (g[0].as_u64().unwrap(), g[1].as_u64().unwrap()), "{case}");
        let rc = meta["feature_rows_cols"].as_array().unwrap();
        assert_eq!((plan.rows_cols.0 as u64, plan.rows_cols.1 as u64), (rc[0].as_u64().unwrap(), rc[1].as_u64().unwrap()), "{case}");

        let exp = fixtures::expected(&case);
        let means = exp["tiles_channel_mean"].to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(means.len(), ts.len(), "{case}: tile count");
        let px = normalize(&ts);
        let n = 384 * 384;
        for (t, m) in means.iter().enumerate() {
            for c in 0..3 {
                let ours = px[(t * 3 + c) * n..(t * 3 + c + 1) * n].iter().map(|&v| v as f64).sum::<f64>() / n as f64;
                assert!((ours - m[c] as f64).abs() <= 2e-3, "{case} tile {t} channel {c}: mean {ours} vs {}", m[c]);
            }
        }
        if let Some(want) = exp.get("tiles_rgb_u8") {
            let want = want.flatten_all().unwrap().to_vec1::<u8>().unwrap();
            let got: Vec<u8> = ts.iter().flat_map(|t| t.as_raw().iter().copied()).collect();
            assert_eq!(got.len(), want.len());
            let off = got.iter().zip(&want).filter(|(a, b)| a.abs_diff(**b) > 1).count();
            let max = got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            let frac = off as f64 / got.len() as f64;
            eprintln!("{case}: {:.4} % of tile values differ from Pillow by more than 1; largest difference {max}", frac * 100.0);
            assert!(frac <= 1e-3, "{case}: {:.4} % of values off by more than 1 (max {max})", frac * 100.0);
            // the resampler is a bit-exact port of Pillow's: hold it to that
            assert_eq!(max, 0, "{case}: tiles differ from Pillow's by up to {max}");
            checked_tiles += 1;
        }
    }
    assert!(checked_tiles >= 1, "no case carried tiles_rgb_u8");
}

fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 3) as u8, ((x + y) * 5) as u8]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

#[test]
fn bad_images_are_clear_errors() {
    let lim = DecodeLimits::default();
    let err = |b: &[u8]| decode(b, lim).unwrap_err().to_string();
    assert!(err(&[]).contains("empty"));
    assert!(err(b"this is not an image at all").contains("not a supported image"));
    let png = png_bytes(40, 30);
    assert!(!err(&png[..png.len() / 2]).is_empty(), "a truncated PNG must fail");
    // A 50,000 × 50,000 PNG: only the header is real; it must be refused before any decoding.
    let mut huge = png.clone();
    huge[16..20].copy_from_slice(&50_000u32.to_be_bytes());
    huge[20..24].copy_from_slice(&50_000u32.to_be_bytes());
    let crc = crc32(&huge[12..29]);
    huge[29..33].copy_from_slice(&crc.to_be_bytes());
    let e = err(&huge);
    assert!(e.contains("50000×50000") && e.contains("refused before decoding"), "{e}");
}

#[test]
fn mutated_images_never_panic() {
    let png = png_bytes(23, 17);
    let mut jpg = Vec::new();
    image::RgbImage::from_fn(23, 17, |x, y| image::Rgb([x as u8 * 9, y as u8 * 9, 77]))
        .write_to(&mut std::io::Cursor::new(&mut jpg), image::ImageFormat::Jpeg)
        .unwrap();
    let mut rng = Rng::new(5);
    for base in [&png, &jpg] {
        for _ in 0..300 {
            let mut b = base.clone();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len() as u64) as usize;
                b[i] = rng.next_u64() as u8;
            }
            if rng.below(4) == 0 {
                b.truncate(rng.below(b.len() as u64) as usize);
            }
            // Ok or a clear Err: anything but a panic.
            let _ = decode(&b, DecodeLimits { max_pixels: 1 << 20 });
        }
    }
}

#[test]
fn exif_orientation_is_applied() {
    // 4×2 image, left half red, right half blue; EXIF orientation 6 (rotate 90° clockwise) → 2×4, red on top.
    let img = image::RgbImage::from_fn(16, 8, |x, _| if x < 8 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) });
    let mut jpg = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut jpg), image::ImageFormat::Jpeg).unwrap();
    let mut tiff = b"Exif\0\0II*\0\x08\0\0\0\x01\0".to_vec();
    tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((tiff.len() + 2) as u16).to_be_bytes());
    app1.extend_from_slice(&tiff);
    let mut with_exif = jpg[..2].to_vec();
    with_exif.extend_from_slice(&app1);
    with_exif.extend_from_slice(&jpg[2..]);
    let out = decode(&with_exif, DecodeLimits::default()).unwrap();
    assert_eq!(out.dimensions(), (8, 16), "orientation 6 swaps width and height");
    let top = out.get_pixel(4, 2);
    let bottom = out.get_pixel(4, 13);
    assert!(top[0] > 200 && top[2] < 60, "top should be red, is {top:?}");
    assert!(bottom[2] > 200 && bottom[0] < 60, "bottom should be blue, is {bottom:?}");
    // without the EXIF block it stays as it was
    assert_eq!(decode(&jpg, DecodeLimits::default()).unwrap().dimensions(), (16, 8));
}

#[test]
fn alpha_is_composited_over_white_like_pillow() {
    let mut rgba = image::RgbaImage::new(3, 1);
    rgba.put_pixel(0, 0, image::Rgba([10, 20, 30, 0]));
    rgba.put_pixel(1, 0, image::Rgba([10, 20, 30, 255]));
    rgba.put_pixel(2, 0, image::Rgba([0, 0, 0, 128]));
    let rgb = varco_web::image::to_rgb(image::DynamicImage::ImageRgba8(rgba));
    assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
    assert_eq!(rgb.get_pixel(1, 0).0, [10, 20, 30]);
    // Pillow: Image.alpha_composite(white, (0,0,0,128)) → (127, 127, 127)
    assert_eq!(rgb.get_pixel(2, 0).0, [127, 127, 127]);
}

#[test]
fn every_advertised_format_decodes() {
    let img = image::RgbImage::from_fn(13, 7, |x, y| image::Rgb([(x * 19) as u8, (y * 31) as u8, 200]));
    for fmt in [image::ImageFormat::Png, image::ImageFormat::Jpeg, image::ImageFormat::Gif, image::ImageFormat::Bmp, image::ImageFormat::WebP] {
        let mut bytes = Vec::new();
        let dynimg = if fmt == image::ImageFormat::Gif || fmt == image::ImageFormat::WebP {
            image::DynamicImage::ImageRgba8(image::DynamicImage::ImageRgb8(img.clone()).to_rgba8())
        } else {
            image::DynamicImage::ImageRgb8(img.clone())
        };
        dynimg.write_to(&mut std::io::Cursor::new(&mut bytes), fmt).unwrap();
        let out = decode(&bytes, DecodeLimits::default()).unwrap_or_else(|e| panic!("{fmt:?}: {e}"));
        assert_eq!(out.dimensions(), (13, 7), "{fmt:?}");
        if fmt != image::ImageFormat::Jpeg && fmt != image::ImageFormat::Gif {
            assert_eq!(out, img, "{fmt:?} is lossless");
        }
    }
}
