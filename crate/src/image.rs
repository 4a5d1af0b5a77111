//! The image pipeline of LLaVA-NeXT's `anyres_max_9` (docs: MODEL.md §2), pure and deterministic:
//! bytes → decoded RGB (EXIF orientation applied, RGBA composited over white as transformers does, grayscale
//! expanded) → the best grid of 384-pixel tiles → Pillow-equivalent bicubic resize, black padding, the
//! tiles, and the squashed 384×384 base image first (Pillow's resampler ported bit for bit) → normalised pixels `x/127.5 − 1`, CHW.
//! Also the image-token count and the feature grid after unpadding and the bilinear shrink.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::{Error, Result};

/// Side of a tile in pixels, and of SigLIP's input.
pub const TILE: u32 = 384;

/// The anyres settings of a checkpoint (from its config).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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

impl AnyresPlan {
    /// Tiles the vision tower encodes: the base image and the grid's.
    pub fn tiles(&self) -> usize {
        1 + (self.grid_wh.0 * self.grid_wh.1) as usize
    }
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

/// Pillow's `Image.resize(size, BICUBIC)`, bit for bit (libImaging/Resample.c): Keys cubic a = −0.5 with
/// support 2·max(1, in/out) (antialiased when shrinking), weights normalised to sum 1 then rounded to 22-bit
/// fixed point, horizontal pass first with an 8-bit intermediate, then vertical. (fast_image_resize's
/// Catmull-Rom was off by more than one level on 0.003–0.02 % of the fixtures' tile values, by up to 10,
/// which moved the model's logits by up to 1.7e-3; this matches Pillow exactly.)
pub fn resize(img: &RgbImage, w: u32, h: u32) -> Result<RgbImage> {
    if w == 0 || h == 0 {
        return Err(Error::Image(format!("cannot resize to {w}×{h}")));
    }
    let (iw, ih) = img.dimensions();
    if (iw, ih) == (w, h) {
        return Ok(img.clone());
    }
    let src = img.as_raw();
    // horizontal
    let mid: Vec<u8> = if iw != w {
        let (bounds, kk, ksize) = coeffs(iw, w);
        let mut out = vec![0u8; (w * ih * 3) as usize];
        for y in 0..ih as usize {
            let row = &src[y * iw as usize * 3..(y + 1) * iw as usize * 3];
            for x in 0..w as usize {
                let (xmin, n) = bounds[x];
                let k = &kk[x * ksize..x * ksize + n];
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (j, &kv) in k.iter().enumerate() {
                        ss += row[(xmin + j) * 3 + c] as i64 * kv as i64;
                    }
                    out[(y * w as usize + x) * 3 + c] = clip8(ss);
                }
            }
        }
        out
    } else {
        src.clone()
    };
    // vertical
    let out: Vec<u8> = if ih != h {
        let (bounds, kk, ksize) = coeffs(ih, h);
        let mut out = vec![0u8; (w * h * 3) as usize];
        let stride = w as usize * 3;
        for y in 0..h as usize {
            let (ymin, n) = bounds[y];
            let k = &kk[y * ksize..y * ksize + n];
            for i in 0..stride {
                let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                for (j, &kv) in k.iter().enumerate() {
                    ss += mid[(ymin + j) * stride + i] as i64 * kv as i64;
                }
                out[y * stride + i] = clip8(ss);
            }
        }
        out
    } else {
        mid
    };
    RgbImage::from_raw(w, h, out).ok_or_else(|| Error::Image("resize: bad buffer".into()))
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn clip8(ss: i64) -> u8 {
    if ss >= (1i64 << PRECISION_BITS) << 8 {
        255
    } else if ss <= 0 {
        0
    } else {
        (ss >> PRECISION_BITS) as u8
    }
}

fn bicubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel (first input, count) and the
/// fixed-point weights, `ksize` per pixel.
fn coeffs(in_size: u32, out_size: u32) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut kk = vec![0i32; out_size as usize * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size as usize {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for x in 0..xmax {
            w[x] = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            ww += w[x];
        }
        for x in 0..xmax {
            let v = if ww != 0.0 { w[x] / ww } else { w[x] };
            let f = v * (1u64 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if v < 0.0 { (-0.5 + f).trunc() as i32 } else { (0.5 + f).trunc() as i32 };
        }
        bounds.push((xmin, xmax));
    }
    (bounds, kk, ksize)
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
