//! The Qwen2 decoder (docs: MODEL.md §5.1) on the GPU: RMSNorm → fused q/k/v (+ bias) → RoPE → KV cache →
//! causal GQA attention → o_proj → residual; RMSNorm → fused gate/up → SiLU·up → down → residual; final norm
//! and lm_head. Prefill runs in chunks against the cache, so memory stays bounded for 9k-token prompts.

use crate::gpu::tensor::Weight;
use crate::gpu::{Context, DType, Recorder, Tensor};
use crate::kernels::attention::{self, AttnArgs, KvLayout};
use crate::kernels::rope::Rope;
use crate::kernels::{elementwise, embed, kv_cache, linear, norm};
use crate::model::config::TextConfig;
use crate::quant::{QFormat, QMatrix};
use crate::weights::WeightSource;
use crate::{Error, Result};

/// How weights and activations are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32 activations on the checkpoint's 16-bit weights: the exact path.
    F32,
    /// f16 activations on 16-bit weights (needs shader-f16).
    F16,
    /// 4-bit weights (quantized at load), f16 activations where the device has shader-f16, else f32.
    Q4,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "q4" => Ok(Precision::Q4),
            _ => Err(Error::Checkpoint(format!("precision {s:?}: expected f32, f16 or q4"))),
        }
    }

    /// The activation type on this device.
    pub fn act(self, ctx: &Context) -> Result<DType> {
        match self {
            Precision::F32 => Ok(DType::F32),
            Precision::F16 if !ctx.caps.f16 => Err(Error::Device("f16 activations need shader-f16, which this GPU lacks".into())),
            Precision::F16 => Ok(DType::F16),
            Precision::Q4 => Ok(if ctx.caps.f16 { DType::F16 } else { DType::F32 }),
        }
    }

    /// A weight `(n, k)` from row-major f32 values.
    fn weight(self, ctx: &Context, values: &[f32], n: usize, k: usize) -> Result<Weight> {
        match self {
            Precision::Q4 => Weight::from_q(ctx, &QMatrix::quantize(QFormat::Q4, values, n, k)),
            _ => {
                let h: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
                Weight::from_f16(ctx, &h, n, k)
            }
        }
    }
}

struct Layer {
    in_norm: Tensor,
    qkv: Weight,
    qkv_b: Tensor,
    o: Weight,
    post_norm: Tensor,
    gate_up: Weight,
    down: Weight,
}

/// Rows of several checkpoint tensors stacked into one matrix.
fn stacked(w: &WeightSource, names: &[(String, usize)], k: usize) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for (name, n) in names {
        out.extend(w.f32(name, &[*n, k])?);
    }
    Ok(out)
}

pub struct Llm {
    pub cfg: TextConfig,
    pub precision: Precision,
    pub act: DType,
    embed: Weight,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Weight,
    rope: Rope,
}

/// Keys and values of every layer, head-major `(kv_heads, capacity, head_dim)`.
pub struct KvCache {
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    /// Positions filled.
    pub len: usize,
    pub capacity: usize,
}

impl Llm {
    pub fn load(ctx: &Context, w: &WeightSource, cfg: &TextConfig, precision: Precision) -> Result<Self> {
        let act = precision.act(ctx)?;
        let (h, d) = (cfg.hidden, cfg.head_dim);
        let (qn, kvn, ffn) = (cfg.heads * d, cfg.kv_heads * d, cfg.intermediate);
        let vec = |name: &str, n: usize| -> Result<Tensor> { Tensor::from_f32(ctx, &w.f32(name, &[n])?, &[n], DType::F32) };
        let mut layers = Vec::new();
        for i in 0..cfg.layers {
            let p = format!("language_model.model.layers.{i}");
            let a = format!("{p}.self_attn");
            let qkv = stacked(w, &[(format!("{a}.q_proj.weight"), qn), (format!("{a}.k_proj.weight"), kvn), (format!("{a}.v_proj.weight"), kvn)], h)?;
            let mut qkv_b = w.f32(&format!("{a}.q_proj.bias"), &[qn])?;
            qkv_b.extend(w.f32(&format!("{a}.k_proj.bias"), &[kvn])?);
            qkv_b.extend(w.f32(&format!("{a}.v_proj.bias"), &[kvn])?);
            let m = format!("{p}.mlp");
            let gate_up = stacked(w, &[(format!("{m}.gate_proj.weight"), ffn), (format!("{m}.up_proj.weight"), ffn)], h)?;
            layers.push(Layer {
                in_norm: vec(&format!("{p}.input_layernorm.weight"), h)?,
                qkv: precision.weight(ctx, &qkv, qn + 2 * kvn, h)?,
                qkv_b: Tensor::from_f32(ctx, &qkv_b, &[qn + 2 * kvn], DType::F32)?,
                o: precision.weight(ctx, &w.f32(&format!("{a}.o_proj.weight"), &[h, qn])?, h, qn)?,
                post_norm: vec(&format!("{p}.post_attention_layernorm.weight"), h)?,
                gate_up: precision.weight(ctx, &gate_up, 2 * ffn, h)?,
                down: precision.weight(ctx, &w.f32(&format!("{m}.down_proj.weight"), &[h, ffn])?, h, ffn)?,
            });
        }
        let embed_name = "language_model.model.embed_tokens.weight";
        let embed_values = w.f32(embed_name, &[cfg.vocab, h])?;
        let embed = precision.weight(ctx, &embed_values, cfg.vocab, h)?;
        let lm_head = if cfg.tie_word_embeddings && !w.contains("language_model.lm_head.weight") {
            embed.clone()
        } else {
            precision.weight(ctx, &w.f32("language_model.lm_head.weight", &[cfg.vocab, h])?, cfg.vocab, h)?
        };
        Ok(Llm {
            cfg: cfg.clone(),
            precision,
            act,
            embed,
            layers,
            norm: vec("language_model.model.norm.weight", h)?,
            lm_head,
            rope: Rope::new(ctx, d as u32, cfg.rope_theta)?,
        })
    }

    pub fn new_cache(&self, ctx: &Context, capacity: usize) -> Result<KvCache> {
        if capacity > self.cfg.max_positions {
            return Err(Error::Checkpoint(format!("{capacity} positions exceed the model's context of {}", self.cfg.max_positions)));
        }
        let shape = [self.cfg.kv_heads, capacity, self.cfg.head_dim];
        let mk = || (0..self.cfg.layers).map(|_| Tensor::empty(ctx, &shape, self.act)).collect::<Result<Vec<_>>>();
        Ok(KvCache { k: mk()?, v: mk()?, len: 0, capacity })
    }

    /// Embeddings of `ids` into `out` `(ids.len(), hidden)`; ids ≥ vocab (image positions) are left as they are.
    pub fn embed(&self, rec: &mut Recorder, ids: &[u32], out: &Tensor) -> Result<()> {
        let t = Tensor::from_u32(rec.ctx, ids, &[ids.len()])?;
        embed::embed(rec, &t, &self.embed, out)
    }

    /// Runs `x` `(T, hidden)` through every layer at positions `cache.len ..`, appending to the cache; `x`
    /// becomes the last layer's output (before the final norm).
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, cache: &mut KvCache) -> Result<()> {
        let c = &self.cfg;
        let ctx = rec.ctx;
        let t = x.len() / c.hidden;
        let pos = cache.len;
        if pos + t > cache.capacity {
            return Err(Error::Checkpoint(format!("the prompt and answer need {} positions; the cache holds {}", pos + t, cache.capacity)));
        }
        let (d, qn, kvn) = (c.head_dim, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let width = qn + 2 * kvn;
        let y = Tensor::empty(ctx, &[t, c.hidden], self.act)?;
        let qkv = Tensor::empty(ctx, &[t, width], self.act)?;
        let att = Tensor::empty(ctx, &[t, qn], self.act)?;
        let gu = Tensor::empty(ctx, &[t, 2 * c.intermediate], self.act)?;
        let mid = Tensor::empty(ctx, &[t, c.intermediate], self.act)?;
        let scratch = Tensor::empty(ctx, &[attention::decode_scratch_len(c.heads as u32, c.kv_heads as u32, d as u32, (pos + t) as u32)], DType::F32)?;
        let eps = c.rms_eps as f32;
        for (i, l) in self.layers.iter().enumerate() {
            norm::rms_norm(rec, x, &l.in_norm, &y, eps)?;
            linear::linear(rec, &y, &l.qkv, Some(&l.qkv_b), &qkv)?;
            self.rope.apply(rec, &qkv, t as u32, c.heads as u32, 0, pos as u32)?;
            self.rope.apply(rec, &qkv, t as u32, c.kv_heads as u32, qn as u32, pos as u32)?;
            kv_cache::append(rec, &qkv, &cache.k[i], &cache.v[i], t as u32, pos as u32, qn as u32, (qn + kvn) as u32)?;
            let lay = KvLayout { offset: 0, head_stride: (cache.capacity * d) as u32, seq_stride: d as u32 };
            let args = AttnArgs {
                n_q: t as u32,
                n_kv: (pos + t) as u32,
                n_heads: c.heads as u32,
                n_kv_heads: c.kv_heads as u32,
                head_dim: d as u32,
                q_stride: width as u32,
                q_offset: 0,
                o_stride: qn as u32,
                o_offset: 0,
                k: lay,
                v: lay,
                pos_offset: pos as u32,
                causal: true,
                scale: 1.0 / (d as f32).sqrt(),
            };
            if t == 1 {
                attention::attention_decode(rec, &qkv, &cache.k[i], &cache.v[i], &att, &scratch, &args)?;
            } else {
                attention::attention(rec, &qkv, &cache.k[i], &cache.v[i], &att, &args)?;
            }
            linear::linear(rec, &att, &l.o, None, &y)?;
            elementwise::add(rec, x, &y)?;
            norm::rms_norm(rec, x, &l.post_norm, &y, eps)?;
            linear::linear(rec, &y, &l.gate_up, None, &gu)?;
            elementwise::silu_mul(rec, &gu, &mid)?;
            linear::linear(rec, &mid, &l.down, None, &y)?;
            elementwise::add(rec, x, &y)?;
        }
        cache.len = pos + t;
        Ok(())
    }

    /// Logits `(1, vocab)` of row `row` of `x` (a forward output).
    pub fn logits(&self, rec: &mut Recorder, x: &Tensor, row: usize) -> Result<Tensor> {
        let h = self.cfg.hidden;
        let size = (h * self.act.size()) as u64;
        let last = Tensor::empty(rec.ctx, &[1, h], self.act)?;
        rec.copy(&x.buffer, row as u64 * size, &last.buffer, 0, size);
        let y = Tensor::empty(rec.ctx, &[1, h], self.act)?;
        norm::rms_norm(rec, &last, &self.norm, &y, self.cfg.rms_eps as f32)?;
        let logits = Tensor::empty(rec.ctx, &[1, self.cfg.vocab], self.act)?;
        linear::linear(rec, &y, &self.lm_head, None, &logits)?;
        Ok(logits)
    }
}
