//! The Qwen2 decoder (docs: MODEL.md §5.1) on the GPU: RMSNorm → fused q/k/v (+ bias) → RoPE → KV cache →
//! causal GQA attention → o_proj → residual; RMSNorm → fused gate/up → SiLU·up → down → residual; final norm
//! and lm_head. Prefill runs in chunks against the cache, so memory stays bounded for 9k-token prompts.

use crate::gpu::tensor::Weight;
use crate::gpu::{Context, DType, Recorder, Tensor};
use crate::kernels::attention::{self, AttnArgs, KvLayout};
use crate::kernels::rope::Rope;
use crate::kernels::{elementwise, embed, kv_cache, linear, norm};
use crate::model::config::TextConfig;
use crate::loader::plan::QuantPlan;
use crate::loader::Tensors;
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

    /// How the checkpoint's matrices are stored when loaded directly.
    pub fn plan(self) -> QuantPlan {
        match self {
            Precision::F32 | Precision::F16 => QuantPlan::F16,
            Precision::Q4 => QuantPlan::DEFAULT,
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

pub struct Llm {
    pub cfg: TextConfig,
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
    /// Takes the LLM's tensors ([`crate::loader::plan::specs`]) out of `t`; activations in `act`.
    pub fn new(ctx: &Context, t: &mut Tensors, cfg: &TextConfig, act: DType) -> Result<Self> {
        let (h, d) = (cfg.hidden, cfg.head_dim);
        let (qn, kvn, ffn) = (cfg.heads * d, cfg.kv_heads * d, cfg.intermediate);
        let mut layers = Vec::new();
        for i in 0..cfg.layers {
            let p = format!("llm.{i}");
            layers.push(Layer {
                in_norm: t.vector(&format!("{p}.in_norm"), h)?,
                qkv: t.matrix(&format!("{p}.qkv"), qn + 2 * kvn, h)?,
                qkv_b: t.vector(&format!("{p}.qkv_bias"), qn + 2 * kvn)?,
                o: t.matrix(&format!("{p}.o"), h, qn)?,
                post_norm: t.vector(&format!("{p}.post_norm"), h)?,
                gate_up: t.matrix(&format!("{p}.gate_up"), 2 * ffn, h)?,
                down: t.matrix(&format!("{p}.down"), h, ffn)?,
            });
        }
        let embed = t.matrix("llm.embed", cfg.vocab, h)?;
        // absent: a tied lm_head stored once, as the embedding table
        let lm_head = if t.contains("llm.lm_head") { t.matrix("llm.lm_head", cfg.vocab, h)? } else { embed.clone() };
        Ok(Llm {
            cfg: cfg.clone(),
            act,
            embed,
            layers,
            norm: t.vector("llm.norm", h)?,
            lm_head,
            rope: Rope::new(ctx, d as u32, cfg.rope_theta)?,
        })
    }

    /// Bytes a decode step reads at `context` tokens: every layer's weights and norms, lm_head, one embedding
    /// row, and the KV cache (the roofline of `varco bench model`).
    pub fn decode_read_bytes(&self, context: usize) -> u64 {
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| l.qkv.gpu_bytes() + l.o.gpu_bytes() + l.gate_up.gpu_bytes() + l.down.gpu_bytes() + 4 * (l.qkv_b.len() + 2 * self.cfg.hidden) as u64)
            .sum();
        let embed_row = self.embed.gpu_bytes() / self.cfg.vocab as u64;
        let kv = (self.cfg.layers * 2 * self.cfg.kv_heads * context * self.cfg.head_dim * self.act.size()) as u64;
        layers + self.lm_head.gpu_bytes() + embed_row + kv
    }

    /// Bytes of every weight on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        let layers: u64 = self.layers.iter().map(|l| l.qkv.gpu_bytes() + l.o.gpu_bytes() + l.gate_up.gpu_bytes() + l.down.gpu_bytes()).sum();
        layers + self.lm_head.gpu_bytes() + self.embed.gpu_bytes()
    }

    /// Buffers holding the largest matrix (more than one where it exceeds the binding limit).
    pub fn weight_parts(&self) -> usize {
        self.lm_head.parts.len().max(self.embed.parts.len())
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
        self.embed_ids(rec, &t, out)
    }

    /// As [`Llm::embed`], the ids already on the GPU (a u32 tensor: a sampler's output).
    pub fn embed_ids(&self, rec: &mut Recorder, ids: &Tensor, out: &Tensor) -> Result<()> {
        embed::embed(rec, ids, &self.embed, out)
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
            // q and k heads are adjacent in the fused row: one RoPE dispatch rotates both
            self.rope.apply(rec, &qkv, t as u32, (c.heads + c.kv_heads) as u32, 0, pos as u32)?;
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
