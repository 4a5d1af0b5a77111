//! The Qwen2 decoder (docs: MODEL.md §5.1) on the GPU: RMSNorm → fused q/k/v (+ bias) → RoPE → KV cache →
//! causal GQA attention → o_proj → residual; RMSNorm → fused gate/up → SiLU·up → down → residual; final norm
//! and lm_head. Prefill runs in chunks against the cache, so memory stays bounded for 9k-token prompts.

use crate::gpu::tensor::Weight;
use crate::gpu::{Context, DType, Recorder, Tensor};
use crate::kernels::attention::{self, AttnArgs};
use crate::kernels::rope::Rope;
use crate::kernels::{elementwise, embed, kv_cache, linear, norm};
use crate::model::config::TextConfig;
use crate::model::Tensors;
use crate::{Error, Result};

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

/// Tokens up to which a pass attends with the split decode kernel (each query token's keys read on their
/// own, many workgroups over a long cache) rather than the tiled prefill kernel (a block of queries shares
/// each key, few workgroups when the queries are few).
pub const SHORT_ROWS: usize = 64;

/// Keys and values of every layer, head-major `(kv_heads, capacity, head_dim)`.
pub struct KvCache {
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    /// Positions filled.
    pub len: usize,
    pub capacity: usize,
}

/// The activations the layers work in for up to `rows` tokens at once (shared by all layers): the normed
/// rows, q/k/v, the attention output, gate/up and SiLU·up; for a decode step or a short prompt
/// ([`SHORT_ROWS`] tokens at most) also the split attention's partials, sized for the whole cache.
pub struct LayerBuffers {
    rows: usize,
    y: Tensor,
    qkv: Tensor,
    att: Tensor,
    gu: Tensor,
    mid: Tensor,
    decode_scratch: Option<Tensor>,
}

impl LayerBuffers {
    /// For `rows` tokens a pass over a cache of `capacity` positions.
    pub fn new(ctx: &Context, c: &TextConfig, act: DType, rows: usize, capacity: usize) -> Result<Self> {
        let (qn, kvn) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let decode_scratch = if rows <= SHORT_ROWS {
            let n = attention::decode_scratch_len(rows as u32, c.heads as u32, c.kv_heads as u32, c.head_dim as u32, capacity as u32);
            Some(Tensor::empty(ctx, &[n], DType::F32)?)
        } else {
            None
        };
        Ok(LayerBuffers {
            rows,
            y: Tensor::empty(ctx, &[rows, c.hidden], act)?,
            qkv: Tensor::empty(ctx, &[rows, qn + 2 * kvn], act)?,
            att: Tensor::empty(ctx, &[rows, qn], act)?,
            gu: Tensor::empty(ctx, &[rows, 2 * c.intermediate], act)?,
            mid: Tensor::empty(ctx, &[rows, c.intermediate], act)?,
            decode_scratch,
        })
    }

    /// Bytes of these buffers for `rows` tokens over `capacity` positions (the memory plan's figure).
    pub fn bytes(c: &TextConfig, act: DType, rows: usize, capacity: usize) -> u64 {
        let (qn, kvn) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let scratch = if rows <= SHORT_ROWS { 4 * attention::decode_scratch_len(rows as u32, c.heads as u32, c.kv_heads as u32, c.head_dim as u32, capacity as u32) } else { 0 };
        (rows * (c.hidden + qn + 2 * kvn + qn + 3 * c.intermediate) * act.size() + scratch) as u64
    }
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
            return Err(Error::request(format!("{capacity} positions exceed the model's context of {}", self.cfg.max_positions)));
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
    /// becomes the last layer's output (before the final norm). `b` holds at least T rows.
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor, cache: &mut KvCache, b: &LayerBuffers) -> Result<()> {
        let c = &self.cfg;
        let t = x.len() / c.hidden;
        let pos = cache.len;
        if pos + t > cache.capacity {
            return Err(Error::request(format!("the prompt and answer need {} positions; the cache holds {}", pos + t, cache.capacity)));
        }
        if t > b.rows {
            return Err(Error::kernel("llm", format!("{t} rows do not fit layer buffers of {}", b.rows)));
        }
        let (qn, kvn) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let (y, qkv, att, gu, mid) = (b.y.rows(t), b.qkv.rows(t), b.att.rows(t), b.gu.rows(t), b.mid.rows(t));
        let eps = c.rms_eps as f32;
        let args = AttnArgs::over_cache(c.heads as u32, c.kv_heads as u32, c.head_dim as u32, cache.capacity as u32, t as u32, pos as u32)
            .with_q(qkv.shape[1] as u32, 0);
        for (i, l) in self.layers.iter().enumerate() {
            norm::rms_norm(rec, x, &l.in_norm, &y, eps)?;
            linear::linear(rec, &y, &l.qkv, Some(&l.qkv_b), &qkv)?;
            // q and k heads are adjacent in the fused row: one RoPE dispatch rotates both
            self.rope.apply(rec, &qkv, t as u32, (c.heads + c.kv_heads) as u32, 0, pos as u32)?;
            kv_cache::append(rec, &qkv, &cache.k[i], &cache.v[i], t as u32, pos as u32, qn as u32, (qn + kvn) as u32)?;
            match &b.decode_scratch {
                Some(scratch) => attention::attention_decode(rec, &qkv, &cache.k[i], &cache.v[i], &att, scratch, &args)?,
                None => attention::attention(rec, &qkv, &cache.k[i], &cache.v[i], &att, &args)?,
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

    /// Logits `(1, vocab)` into `logits` of `row` (1, hidden), a forward output's last row; `normed` (1,
    /// hidden) is scratch.
    pub fn logits(&self, rec: &mut Recorder, row: &Tensor, normed: &Tensor, logits: &Tensor) -> Result<()> {
        norm::rms_norm(rec, row, &self.norm, normed, self.cfg.rms_eps as f32)?;
        linear::linear(rec, normed, &self.lm_head, None, logits)
    }
}
