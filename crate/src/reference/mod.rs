//! The same model on candle-core, on the CPU, in f32: slow and plain, sharing no code with the GPU kernels
//! (its image merge and RoPE are written out here too). Used by the tests and by `varco run --check`.
//! Weights are read from the checkpoint as each layer needs them, so memory holds one layer at a time; for
//! the 14B model this is still far too slow for real prompts: it is meant for small models and prompts.

use candle_core::{Device, Tensor, D};

use crate::image::AnyresPlan;
use crate::model::config::ModelConfig;
use crate::weights::WeightSource;
use crate::{Error, Result};

fn ce(e: candle_core::Error) -> Error {
    Error::Checkpoint(format!("CPU reference: {e}"))
}

pub struct Reference<'w> {
    pub cfg: ModelConfig,
    w: &'w WeightSource,
}

type R<T> = std::result::Result<T, candle_core::Error>;

impl<'w> Reference<'w> {
    pub fn new(w: &'w WeightSource, cfg: &ModelConfig) -> Self {
        Reference { cfg: cfg.clone(), w }
    }

    fn t(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(self.w.f32(name, shape)?, shape, &Device::Cpu).map_err(ce)
    }

    /// `x · Wᵀ + b` with W `(n, k)` from the checkpoint.
    fn linear(&self, x: &Tensor, name: &str, n: usize, k: usize, bias: bool) -> Result<Tensor> {
        let w = self.t(&format!("{name}.weight"), &[n, k])?;
        let y = x.broadcast_matmul(&w.t().map_err(ce)?).map_err(ce)?;
        if bias {
            y.broadcast_add(&self.t(&format!("{name}.bias"), &[n])?).map_err(ce)
        } else {
            Ok(y)
        }
    }

    /// Normalised pixels `(tiles, 3, s, s)` → SigLIP's last hidden state `(tiles · cells², hidden)`.
    pub fn vision(&self, pixels: &[f32], tiles: usize) -> Result<Tensor> {
        let v = &self.cfg.vision;
        let (s, p, g, h) = (v.image_size, v.patch_size, v.cells(), v.hidden);
        // the stride-p convolution as patches · Wᵀ
        let mut cols = Vec::with_capacity(tiles * g * g * 3 * p * p);
        for t in 0..tiles {
            for py in 0..g {
                for px in 0..g {
                    for c in 0..3 {
                        for ky in 0..p {
                            for kx in 0..p {
                                cols.push(pixels[((t * 3 + c) * s + py * p + ky) * s + px * p + kx]);
                            }
                        }
                    }
                }
            }
        }
        let cols = Tensor::from_vec(cols, (tiles * g * g, 3 * p * p), &Device::Cpu).map_err(ce)?;
        let pw = self.t("vision_tower.embeddings.patch_embedding.weight", &[h, 3, p, p])?.reshape((h, 3 * p * p)).map_err(ce)?;
        let pb = self.t("vision_tower.embeddings.patch_embedding.bias", &[h])?;
        let pos = self.t("vision_tower.embeddings.position_embedding.weight", &[g * g, h])?;
        let x = cols.matmul(&pw.t().map_err(ce)?).and_then(|x| x.broadcast_add(&pb)).map_err(ce)?;
        let mut x = x.reshape((tiles, g * g, h)).and_then(|x| x.broadcast_add(&pos)).map_err(ce)?;
        for i in 0..v.layers {
            let pfx = format!("vision_tower.encoder.layers.{i}");
            let y = self.layer_norm(&x, &format!("{pfx}.layer_norm1"), h, v.ln_eps)?;
            let q = self.linear(&y, &format!("{pfx}.self_attn.q_proj"), h, h, true)?;
            let k = self.linear(&y, &format!("{pfx}.self_attn.k_proj"), h, h, true)?;
            let vv = self.linear(&y, &format!("{pfx}.self_attn.v_proj"), h, h, true)?;
            let att = attention(&q, &k, &vv, v.heads, v.heads, v.head_dim, None).map_err(ce)?;
            x = (x + self.linear(&att, &format!("{pfx}.self_attn.out_proj"), h, h, true)?).map_err(ce)?;
            let y = self.layer_norm(&x, &format!("{pfx}.layer_norm2"), h, v.ln_eps)?;
            let m = self.linear(&y, &format!("{pfx}.mlp.fc1"), v.intermediate, h, true)?.gelu().map_err(ce)?;
            x = (x + self.linear(&m, &format!("{pfx}.mlp.fc2"), h, v.intermediate, true)?).map_err(ce)?;
        }
        x.reshape((tiles * g * g, h)).map_err(ce)
    }

    fn layer_norm(&self, x: &Tensor, name: &str, n: usize, eps: f64) -> Result<Tensor> {
        let f = || -> R<Tensor> {
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            xc.broadcast_div(&(var + eps)?.sqrt()?)
        };
        let (w, b) = (self.t(&format!("{name}.weight"), &[n])?, self.t(&format!("{name}.bias"), &[n])?);
        f().and_then(|y| y.broadcast_mul(&w)?.broadcast_add(&b)).map_err(ce)
    }

    fn rms_norm(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        let h = self.cfg.text.hidden;
        let y = x.sqr().and_then(|s| s.mean_keepdim(D::Minus1)).and_then(|m| (m + self.cfg.text.rms_eps)?.sqrt()).and_then(|r| x.broadcast_div(&r)).map_err(ce)?;
        y.broadcast_mul(&self.t(&format!("{name}.weight"), &[h])?).map_err(ce)
    }

    /// Vision features → projector → LLaVA-NeXT's merge (base, unpadded grid, bilinear shrink, newlines).
    pub fn image_features(&self, pixels: &[f32], plan: &AnyresPlan) -> Result<Tensor> {
        let tiles = 1 + (plan.grid_wh.0 * plan.grid_wh.1) as usize;
        let (hv, ht) = (self.cfg.vision.hidden, self.cfg.text.hidden);
        let f = self.vision(pixels, tiles)?;
        let f = self.linear(&f, "multi_modal_projector.linear_1", ht, hv, true)?.gelu_erf().map_err(ce)?;
        let f = self.linear(&f, "multi_modal_projector.linear_2", ht, ht, true)?;
        let f: Vec<Vec<f32>> = f.to_vec2().map_err(ce)?;
        let g = self.cfg.vision.cells();
        let (gw, gh) = (plan.grid_wh.0 as usize, plan.grid_wh.1 as usize);
        let (ru, cu) = (plan.unpadded_rows_cols.0 as usize, plan.unpadded_rows_cols.1 as usize);
        let (pr, pc) = ((g * gh - ru) / 2, (g * gw - cu) / 2);
        let cell = |r: usize, c: usize| -> &Vec<f32> {
            let (gr, gc) = (r + pr, c + pc);
            &f[(1 + (gr / g) * gw + gc / g) * g * g + (gr % g) * g + gc % g]
        };
        let (rows, cols) = (plan.rows_cols.0 as usize, plan.rows_cols.1 as usize);
        let src = |dst: usize, n_in: usize, n_out: usize| {
            let s = ((dst as f32 + 0.5) * (n_in as f32 / n_out as f32) - 0.5).max(0.0);
            let i0 = (s.floor() as usize).min(n_in - 1);
            (i0, (i0 + 1).min(n_in - 1), s - i0 as f32)
        };
        let newline = self.w.f32("image_newline", &[ht])?;
        let mut out: Vec<f32> = f[..g * g].iter().flatten().copied().collect();
        for r in 0..rows {
            let (y0, y1, ly) = src(r, ru, rows);
            for c in 0..cols {
                let (x0, x1, lx) = src(c, cu, cols);
                for ch in 0..ht {
                    let top = cell(y0, x0)[ch] * (1.0 - lx) + cell(y0, x1)[ch] * lx;
                    let bot = cell(y1, x0)[ch] * (1.0 - lx) + cell(y1, x1)[ch] * lx;
                    out.push(top * (1.0 - ly) + bot * ly);
                }
            }
            out.extend_from_slice(&newline);
        }
        Tensor::from_vec(out, (plan.n_tokens as usize, ht), &Device::Cpu).map_err(ce)
    }

    /// The logits `(vocab)` after the last token of a prompt (LLaVA-NeXT ids, −200 for `image`).
    pub fn logits(&self, ids: &[i64], image: Option<&Tensor>) -> Result<Vec<f32>> {
        let c = &self.cfg.text;
        let (h, d) = (c.hidden, c.head_dim);
        let embed = self.t("language_model.model.embed_tokens.weight", &[c.vocab, h])?;
        let mut rows = Vec::new();
        for &id in ids {
            if id == crate::chat::IMAGE_PLACEHOLDER {
                rows.push(image.ok_or_else(|| Error::Checkpoint("an image placeholder without an image".into()))?.clone());
            } else {
                rows.push(embed.narrow(0, id as usize, 1).map_err(ce)?);
            }
        }
        let mut x = Tensor::cat(&rows, 0).map_err(ce)?;
        let n = x.dim(0).map_err(ce)?;
        // RoPE tables as transformers computes them: inv_freq = 1 / base ** (arange(0, d, 2) / d) in f32,
        // f32 angles
        let inv: Vec<f32> = (0..d).step_by(2).map(|i| 1.0 / (c.rope_theta as f32).powf(i as f32 / d as f32)).collect();
        let mut cos = Vec::with_capacity(n * d / 2);
        let mut sin = Vec::with_capacity(n * d / 2);
        for p in 0..n {
            for &f in &inv {
                let a = (p as f32 * f) as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        let cos = Tensor::from_vec(cos, (n, d / 2), &Device::Cpu).map_err(ce)?;
        let sin = Tensor::from_vec(sin, (n, d / 2), &Device::Cpu).map_err(ce)?;
        let mask = Tensor::from_vec((0..n * n).map(|i| if i % n > i / n { f32::NEG_INFINITY } else { 0.0 }).collect::<Vec<_>>(), (n, n), &Device::Cpu).map_err(ce)?;
        for i in 0..c.layers {
            let p = format!("language_model.model.layers.{i}");
            let y = self.rms_norm(&x, &format!("{p}.input_layernorm"))?;
            let q = self.linear(&y, &format!("{p}.self_attn.q_proj"), c.heads * d, h, true)?;
            let k = self.linear(&y, &format!("{p}.self_attn.k_proj"), c.kv_heads * d, h, true)?;
            let v = self.linear(&y, &format!("{p}.self_attn.v_proj"), c.kv_heads * d, h, true)?;
            let q = rope(&q, c.heads, d, &cos, &sin).map_err(ce)?;
            let k = rope(&k, c.kv_heads, d, &cos, &sin).map_err(ce)?;
            let att = attention(&q.unsqueeze(0).map_err(ce)?, &k.unsqueeze(0).map_err(ce)?, &v.unsqueeze(0).map_err(ce)?, c.heads, c.kv_heads, d, Some(&mask)).map_err(ce)?;
            let att = att.squeeze(0).map_err(ce)?;
            x = (x + self.linear(&att, &format!("{p}.self_attn.o_proj"), h, c.heads * d, false)?).map_err(ce)?;
            let y = self.rms_norm(&x, &format!("{p}.post_attention_layernorm"))?;
            let gate = self.linear(&y, &format!("{p}.mlp.gate_proj"), c.intermediate, h, false)?.silu().map_err(ce)?;
            let up = self.linear(&y, &format!("{p}.mlp.up_proj"), c.intermediate, h, false)?;
            let m = (gate * up).map_err(ce)?;
            x = (x + self.linear(&m, &format!("{p}.mlp.down_proj"), h, c.intermediate, false)?).map_err(ce)?;
        }
        let last = x.narrow(0, n - 1, 1).map_err(ce)?;
        let y = self.rms_norm(&last, "language_model.model.norm")?;
        let head = if self.w.contains("language_model.lm_head.weight") { "language_model.lm_head" } else { "language_model.model.embed_tokens" };
        let l = self.linear(&y, head, c.vocab, h, false)?;
        l.flatten_all().and_then(|l| l.to_vec1()).map_err(ce)
    }
}

/// Rotate-half RoPE on `(n, heads·d)` with cos/sin `(n, d/2)`.
fn rope(x: &Tensor, heads: usize, d: usize, cos: &Tensor, sin: &Tensor) -> R<Tensor> {
    let n = x.dim(0)?;
    let x = x.reshape((n, heads, d))?;
    let x1 = x.narrow(2, 0, d / 2)?;
    let x2 = x.narrow(2, d / 2, d / 2)?;
    let (c, s) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?);
    let a = (x1.broadcast_mul(&c)? - x2.broadcast_mul(&s)?)?;
    let b = (x2.broadcast_mul(&c)? + x1.broadcast_mul(&s)?)?;
    Tensor::cat(&[a, b], 2)?.reshape((n, heads * d))
}

/// softmax(q·kᵀ/√d + mask)·v for `(batch, n, heads·d)` inputs, GQA by repeating KV heads.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, kv_heads: usize, d: usize, mask: Option<&Tensor>) -> R<Tensor> {
    let (b, n, _) = q.dims3()?;
    let split = |x: &Tensor, hh: usize| -> R<Tensor> { x.reshape((b, n, hh, d))?.transpose(1, 2)?.contiguous() };
    let q = split(q, heads)?;
    let rep = |x: Tensor| -> R<Tensor> {
        if heads == kv_heads {
            return Ok(x);
        }
        let r = heads / kv_heads;
        x.unsqueeze(2)?.repeat((1, 1, r, 1, 1))?.reshape((b, heads, n, d))
    };
    let k = rep(split(k, kv_heads)?)?;
    let v = rep(split(v, kv_heads)?)?;
    let mut s = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? / (d as f64).sqrt())?;
    if let Some(m) = mask {
        s = s.broadcast_add(m)?;
    }
    let e = s.broadcast_sub(&s.max_keepdim(D::Minus1)?)?.exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    p.matmul(&v)?.transpose(1, 2)?.reshape((b, n, heads * d))
}
