//! The image pipeline of LLaVA-NeXT's `anyres_max_9` (docs: MODEL.md §2), pure and deterministic:
//! bytes → decoded RGB (EXIF orientation applied, RGBA composited over white as transformers does, grayscale
//! expanded) → the best grid of 384-pixel tiles → Pillow-equivalent bicubic resize, black padding, the
//! tiles, and the squashed 384×384 base image first → normalised pixels `x/127.5 − 1`, CHW.
//! Also the image-token count and the feature grid after unpadding and the bilinear shrink.

use std::io::Cursor;

use fast_image_resize::images::Image as FirImage;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::{Error, Result};

/// Side of a tile in pixels, and of SigLIP's input.
pub const TILE: u32 = 384;

/// The anyres settings of a checkpoint (from its config).
#[derive(Clone, Debug)]
pub struct AnyresConfig {
    /// Candidate canvases as (width, height) in pixels.
    pub pinpoints: Vec<(u32, u32)>,
    pub tile: u32,
    /// Feature cells per tile side (image 384 / patch 14 = 27).
    pub cells: u32,
    /// The `N` of `anyres_max_N`.
    pub max_patches: u32,
}

impl Default for AnyresConfig {
    /// VARCO-VISION-14B: all 36 canvases of {384, …, 2304}², 27 cells a tile, anyres_max_9.
    fn default() -> Self {
        let sides = [384, 768, 1152, 1536, 1920, 2304];
        let pinpoints = sides.iter().flat_map(|&a| sides.iter().map(move |&b| (a, b))).collect();
        AnyresConfig { pinpoints, tile: TILE, cells: 27, max_patches: 9 }
    }
}

/// How one image is laid out: canvas, tile grid, feature grid and token count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnyresPlan {
    pub image_wh: (u32, u32),
    /// The chosen canvas (width, height).
    pub canvas_wh: (u32, u32),
    /// Tiles across and down.
    pub grid_wh: (u32, u32),
    /// Feature rows and columns after unpadding (before the shrink).
    pub unpadded_rows_cols: (u32, u32),
    /// Feature rows and columns that reach the LLM (after the bilinear shrink, if any).
    pub rows_cols: (u32, u32),
    /// cells² (base image) + rows · (cols + 1) (a newline after every row).
    pub n_tokens: u32,
}

/// LLaVA-NeXT `select_best_resolution`: the canvas that keeps the most original pixels, then wastes least;
/// first in list order on ties.
pub fn select_best_resolution(w: u32, h: u32, pinpoints: &[(u32, u32)]) -> (u32, u32) {
    let (wf, hf) = (w as f64, h as f64);
    let mut best = pinpoints[0];
    let (mut best_eff, mut best_waste) = (0i64, i64::MAX);
    for &(pw, ph) in pinpoints {
        let s = (pw as f64 / wf).min(ph as f64 / hf);
        let (dw, dh) = ((wf * s) as i64, (hf * s) as i64);
        let eff = (dw * dh).min(w as i64 * h as i64);
        let waste = pw as i64 * ph as i64 - eff;
        if eff > best_eff || (eff == best_eff && waste < best_waste) {
            best = (pw, ph);
            best_eff = eff;
            best_waste = waste;
        }
    }
    best
}

impl AnyresConfig {
    pub fn plan(&self, w: u32, h: u32) -> AnyresPlan {
        let canvas = select_best_resolution(w, h, &self.pinpoints);
        let grid = (canvas.0 / self.tile, canvas.1 / self.tile);
        let (mut rows, mut cols) = (self.cells * grid.1, self.cells * grid.0);
        // unpad_image, with LLaVA-NeXT's float expression order
        let (wf, hf) = (w as f64, h as f64);
        if wf / hf > cols as f64 / rows as f64 {
            let new_h = (hf * (cols as f64 / wf)) as u32;
            rows -= 2 * ((rows - new_h) / 2);
        } else {
            let new_w = (wf * (rows as f64 / hf)) as u32;
            cols -= 2 * ((cols - new_w) / 2);
        }
        let unpadded = (rows, cols);
        let times = ((rows * cols) as f64 / (self.max_patches * self.cells * self.cells) as f64).sqrt();
        if times > 1.1 {
            rows = py_floordiv(rows as f64, times) as u32;
            cols = py_floordiv(cols as f64, times) as u32;
        }
        AnyresPlan {
            image_wh: (w, h),
            canvas_wh: canvas,
            grid_wh: grid,
            unpadded_rows_cols: unpadded,
            rows_cols: (rows, cols),
            n_tokens: self.cells * self.cells + rows * (cols + 1),
        }
    }
}

/// Python's `a // b` for floats (CPython `float_divmod`): through `fmod`, so 50 // 1.1111111111111112 is 44
/// where `floor(50 / 1.1111111111111112)` is 45 (it decides 2043×636, among others).
pub fn py_floordiv(a: f64, b: f64) -> f64 {
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div == 0.0 {
        return 0.0;
    }
    let f = div.floor();
    if div - f > 0.5 {
        f + 1.0
    } else {
        f
    }
}

/// Limits on what [`decode`] accepts.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Largest width × height, checked from the header before any pixel is decoded.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_pixels: 64 << 20 }
    }
}

/// Decodes JPEG, PNG, WebP, GIF (first frame) or BMP into RGB: EXIF orientation applied, alpha composited
/// over white (Pillow's `alpha_composite` arithmetic, as transformers' `convert_to_rgb`), gray expanded.
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::Image("the image is empty (0 bytes)".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Image(format!("cannot read the image: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::Image("not a supported image (JPEG, PNG, WebP, GIF or BMP)".into()));
    }
    let mut decoder = reader.into_decoder().map_err(|e| Error::Image(format!("cannot decode the image: {e}")))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::Image(format!("the image has no pixels ({w}×{h})")));
    }
    if w as u64 * h as u64 > limits.max_pixels {
        return Err(Error::Image(format!(
            "the image is {w}×{h} = {} pixels; the limit is {} (refused before decoding)",
            w as u64 * h as u64,
            limits.max_pixels
        )));
    }
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| Error::Image(format!("cannot decode the image: {e}")))?;
    img.apply_orientation(orientation);
    Ok(to_rgb(img))
}

/// RGB of any decoded image; alpha over white with Pillow's integer formula (PRECISION_BITS 7).
pub fn to_rgb(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba = img.to_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = p[3] as u32;
        for c in 0..3 {
            let tmp = 128 * (p[c] as u32 * a + 255 * (255 - a)) + (0x80 << 7);
            o[c] = ((((tmp >> 8) + tmp) >> 8) >> 7).min(255) as u8;
        }
    }
    out
}

/// Pillow's BICUBIC (Keys a = −0.5, antialiased when shrinking, 8-bit between the passes).
pub fn resize(img: &RgbImage, w: u32, h: u32) -> Result<RgbImage> {
    if img.dimensions() == (w, h) {
        return Ok(img.clone());
    }
    let src = FirImage::from_vec_u8(img.width(), img.height(), img.as_raw().clone(), PixelType::U8x3)
        .map_err(|e| Error::Image(format!("resize: {e}")))?;
    let mut dst = FirImage::new(w, h, PixelType::U8x3);
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    Resizer::new().resize(&src, &mut dst, &opts).map_err(|e| Error::Image(format!("resize: {e}")))?;
    RgbImage::from_raw(w, h, dst.into_vec()).ok_or_else(|| Error::Image("resize: bad buffer".into()))
}

/// The tiles SigLIP sees, in order: the whole image squashed to tile × tile, then the canvas tiles row by row
/// (the image resized to fit the canvas, centred on black).
pub fn tiles(img: &RgbImage, cfg: &AnyresConfig) -> Result<(AnyresPlan, Vec<RgbImage>)> {
    let (w, h) = img.dimensions();
    let plan = cfg.plan(w, h);
    let (cw, ch) = plan.canvas_wh;
    let (sw, sh) = (cw as f64 / w as f64, ch as f64 / h as f64);
    let (nw, nh) = if sw < sh {
        (cw, ((h as f64 * sw).ceil() as u32).min(ch))
    } else {
        (((w as f64 * sh).ceil() as u32).min(cw), ch)
    };
    let resized = resize(img, nw, nh)?;
    let mut canvas = RgbImage::new(cw, ch);
    image::imageops::replace(&mut canvas, &resized, ((cw - nw) / 2) as i64, ((ch - nh) / 2) as i64);
    let mut out = vec![resize(img, cfg.tile, cfg.tile)?];
    for ty in 0..plan.grid_wh.1 {
        for tx in 0..plan.grid_wh.0 {
            out.push(image::imageops::crop_imm(&canvas, tx * cfg.tile, ty * cfg.tile, cfg.tile, cfg.tile).to_image());
        }
    }
    Ok((plan, out))
}

/// Normalised pixels of the tiles, `(tiles, 3, tile, tile)`: `x / 255` then `(x − 0.5) / 0.5`, each in f32 as
/// the SigLIP processor computes it.
pub fn normalize(tiles: &[RgbImage]) -> Vec<f32> {
    let mut out = Vec::new();
    for t in tiles {
        let (w, h) = t.dimensions();
        let n = (w * h) as usize;
        let base = out.len();
        out.resize(base + 3 * n, 0.0);
        for (i, p) in t.pixels().enumerate() {
            for c in 0..3 {
                let x = (p[c] as f64 * (1.0 / 255.0)) as f32;
                out[base + c * n + i] = (x - 0.5) / 0.5;
            }
        }
    }
    out
}
