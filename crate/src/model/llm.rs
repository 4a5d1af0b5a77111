//! The Qwen2 decoder (docs: MODEL.md §5.1) on the GPU: RMSNorm → fused q/k/v (+ bias) → RoPE → KV cache →
//! causal GQA attention → o_proj → residual; RMSNorm → fused gate/up → SiLU·up → down → residual; final norm
//! and lm_head. Prefill runs in chunks against the cache, so memory stays bounded for 9k-token prompts.
//!
//! Quantized q/k/v and gate/up matrices (and an lm_head of its own) carry their RMSNorm's weight in their
//! columns ([`norm_folded`]): prefill normalises rows without it, and the decode step runs each layer as
//! five fused dispatches (matvec_fused.wgsl): norm + q/k/v + bias + RoPE + KV append, attention (split and
//! merge), o_proj + residual, norm + gate/up + SiLU·up, down + residual. With `DecodeShapes::prepare` (8-bit
//! integer products only) o, gate/up and down also write their output's 8-bit codes, which the next matrix
//! reads instead of quantizing x in each of its workgroups.

use crate::gpu::tensor::{Weight, WeightFormat};
use crate::gpu::{Context, DType, Recorder, Tensor};
use crate::kernels::attention::{self, AttnArgs};
use crate::kernels::rope::Rope;
use crate::kernels::linear::{DecodeShapes, Fused, Prep, Prepare, PreparedX};
use crate::kernels::{elementwise, embed, kv_cache, linear, norm};
use crate::model::config::TextConfig;
use crate::model::Tensors;
use crate::{Error, Result};

/// Whether a matrix of `format` after an RMSNorm carries the norm's weight in its columns: the quantized
/// formats (the converter and the direct loader fold it in, loader/plan.rs; f16 matrices, the exact paths,
/// keep it apart).
pub fn norm_folded(format: WeightFormat) -> bool {
    format.quant().is_some()
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
    /// lm_head is a matrix of its own with the final norm's weight folded in.
    lm_head_folded: bool,
    /// Ones `(hidden)`: the norm's weight where the following matrix carries the real one.
    ones: Tensor,
    rope: Rope,
    /// The fused kernel's shape for each decode-step matrix (`linear::fused_shape` of layer 0's matrices
    /// and of lm_head; the benchmark replaces them to compare). lm_head's is used only where lm_head is a
    /// matrix of its own with the final norm folded in; a tied head goes through `linear::linear`.
    pub decode_shapes: DecodeShapes,
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
    pub(crate) rows: usize,
    y: Tensor,
    qkv: Tensor,
    att: Tensor,
    gu: Tensor,
    mid: Tensor,
    decode_scratch: Option<Tensor>,
    /// A one-token pass's rows prepared for the next matrix (`DecodeShapes::prepare`), where the sizes are
    /// whole blocks of 32.
    prepared: Option<Prepared>,
    /// A one-token pass's sinks of the warming beside decode attention (`DecodeShapes::warm`), two a layer
    /// (o's, gate/up's) so that no two dispatches of a step share one (a shared sink would put a barrier
    /// between them).
    warm_sinks: Vec<Tensor>,
}

/// u32 elements of a warming's sink (never written in practice; see `bandwidth::warm`).
const WARM_SINK: usize = 4;

/// The rows a decode step prepares once for the matrices that read them.
struct Prepared {
    /// The residual stream's (written by o and down, read by q/k/v and gate/up).
    x: PreparedX,
    /// SiLU·up's (written by gate/up, read by down).
    mid: PreparedX,
    /// The attention output's (written by decode attention's merge, read by o), where a head is whole
    /// blocks of 32.
    att: Option<PreparedX>,
}

impl Prepared {
    fn new(ctx: &Context, c: &TextConfig) -> Result<Option<Self>> {
        if !prepared_fits(c) {
            return Ok(None);
        }
        let att = Self::att_len(c).map(|n| PreparedX::new(ctx, n)).transpose()?;
        Ok(Some(Prepared { x: PreparedX::new(ctx, c.hidden)?, mid: PreparedX::new(ctx, c.intermediate)?, att }))
    }

    fn bytes(c: &TextConfig) -> u64 {
        if !prepared_fits(c) {
            return 0;
        }
        PreparedX::bytes(c.hidden) + PreparedX::bytes(c.intermediate) + Self::att_len(c).map_or(0, PreparedX::bytes)
    }

    /// The attention output's values, where the merge can prepare them: a head in whole blocks of 32.
    fn att_len(c: &TextConfig) -> Option<usize> {
        (c.head_dim % 32 == 0).then_some(c.heads * c.head_dim)
    }
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
            prepared: Prepared::new(ctx, c)?,
            warm_sinks: match decode_scratch {
                Some(_) => (0..2 * c.layers).map(|_| Tensor::empty(ctx, &[WARM_SINK], DType::U32)).collect::<Result<_>>()?,
                None => Vec::new(),
            },
            decode_scratch,
        })
    }

    /// Bytes of these buffers for `rows` tokens over `capacity` positions (the memory plan's figure).
    pub fn bytes(c: &TextConfig, act: DType, rows: usize, capacity: usize) -> u64 {
        let (qn, kvn) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let scratch = if rows <= SHORT_ROWS { 4 * attention::decode_scratch_len(rows as u32, c.heads as u32, c.kv_heads as u32, c.head_dim as u32, capacity as u32) + 8 * WARM_SINK * c.layers } else { 0 };
        (rows * (c.hidden + qn + 2 * kvn + qn + 3 * c.intermediate) * act.size() + scratch) as u64 + Prepared::bytes(c)
    }
}

/// Whether layer buffers hold prepared rows: where the rows are whole blocks of 32. Prefill's too (a few KB),
/// since a prompt's last chunk of one token runs as a decode step.
fn prepared_fits(c: &TextConfig) -> bool {
    c.hidden % 32 == 0 && c.intermediate % 32 == 0
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
        // absent: a tied lm_head stored once, as the embedding table (which never carries a norm)
        let (lm_head, lm_head_folded) = match t.contains("llm.lm_head") {
            true => {
                let w = t.matrix("llm.lm_head", cfg.vocab, h)?;
                let folded = norm_folded(w.format);
                (w, folded)
            }
            false => (embed.clone(), false),
        };
        for l in &layers {
            if norm_folded(l.qkv.format) != norm_folded(l.gate_up.format) {
                return Err(Error::Checkpoint("q/k/v and gate/up of a layer are stored in formats that treat the norms differently".into()));
            }
        }
        let l0 = layers.first().ok_or_else(|| Error::Checkpoint("the language model has no layers".into()))?;
        let mut decode_shapes = DecodeShapes {
            qkv: linear::fused_shape(ctx, &l0.qkv),
            o: linear::fused_shape(ctx, &l0.o),
            gate_up: linear::fused_shape(ctx, &l0.gate_up),
            down: linear::fused_shape(ctx, &l0.down),
            lm_head: linear::fused_shape(ctx, &lm_head),
            prepare: Prepare::Off,
            warm: 0,
            warm_gate_up_mib: 0,
            warm_workgroups: crate::kernels::bandwidth::WARM_WORKGROUPS,
            greedy_in_lm_head: false,
        };
        let ffn_fits = prepared_fits(cfg)
            && decode_shapes.can_prepare_ffn(ctx.caps.max_invocations)
            && layers.iter().all(|l| l.gate_up.parts.len() == 1 && linear::quantizes_x(&l.gate_up, decode_shapes.gate_up, false) && linear::quantizes_x(&l.down, decode_shapes.down, true));
        if ffn_fits {
            decode_shapes.prepare = Prepare::measured(act, ctx.caps.subgroups);
        }
        Ok(Llm {
            decode_shapes,
            cfg: cfg.clone(),
            act,
            embed,
            layers,
            norm: t.vector("llm.norm", h)?,
            lm_head,
            lm_head_folded,
            ones: Tensor::from_f32(ctx, &vec![1.0; h], &[h], DType::F32)?,
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
        if t == 1 && self.fused_decode() {
            return self.decode_layers(rec, x, cache, b);
        }
        for (i, l) in self.layers.iter().enumerate() {
            let (in_norm, post_norm) = if norm_folded(l.qkv.format) { (&self.ones, &self.ones) } else { (&l.in_norm, &l.post_norm) };
            norm::rms_norm(rec, x, in_norm, &y, eps)?;
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
            norm::rms_norm(rec, x, post_norm, &y, eps)?;
            linear::linear(rec, &y, &l.gate_up, None, &gu)?;
            elementwise::silu_mul(rec, &gu, &mid)?;
            linear::linear(rec, &mid, &l.down, None, &y)?;
            elementwise::add(rec, x, &y)?;
        }
        cache.len = pos + t;
        Ok(())
    }

    /// Whether a one-token pass runs as fused dispatches: the norms are folded into q/k/v and gate/up, and
    /// those are one binding each (the fused kernel pairs rows across them).
    fn fused_decode(&self) -> bool {
        self.layers.iter().all(|l| norm_folded(l.qkv.format) && l.qkv.parts.len() == 1 && l.gate_up.parts.len() == 1)
    }

    /// Slots of the greedy choice's first pass that lm_head writes ([`Llm::logits`]'s `maxima`): where the
    /// decode shapes ask for it (`DecodeShapes::greedy_in_lm_head`) and lm_head is one fused dispatch (the
    /// final norm folded in, so not a tied head) over rows longer than SHORT's; None elsewhere (the sampler
    /// then makes both passes over the logits). A workspace sizes its maxima by this when made.
    pub fn argmax_slots(&self) -> Option<usize> {
        (self.decode_shapes.greedy_in_lm_head && self.lm_head_folded && self.cfg.hidden > linear::SHORT_MAX_K).then(|| linear::argmax_slots(&self.lm_head, self.decode_shapes.lm_head))
    }

    /// What decode attention warms of layer `l` beside its split (`DecodeShapes::warm`): o's codes and scales,
    /// and gate/up's first rows where asked; `sinks` the layer's two. None where o is not one part with scales.
    fn warm_reads<'a>(&self, l: &'a Layer, sinks: &'a [Tensor]) -> Option<attention::Warm<'a>> {
        let s = self.decode_shapes;
        let ([o], [so, sg, ..]) = (&l.o.parts[..], sinks) else { return None };
        if s.warm == 0 {
            return None;
        }
        let scales = o.scales.as_ref()?;
        let o_read = attention::WarmRead { a: (&o.data, 0..o.data.size()), b: (scales, 0..scales.size()), sink: so };
        let gu_read = match &l.gate_up.parts[..] {
            [gu] if s.warm_gate_up_mib > 0 => {
                let (ffn, row) = (l.gate_up.n / 2, l.gate_up.format.row_bytes(l.gate_up.k));
                let rows = ((s.warm_gate_up_mib as u64) << 19).div_ceil(row).min(ffn as u64);
                let (len, up) = ((rows * row) & !15, (ffn as u64 * row) & !15);
                Some(attention::WarmRead { a: (&gu.data, 0..len), b: (&gu.data, up..(up + len).min(gu.data.size())), sink: sg })
            }
            _ => None,
        };
        Some(attention::Warm { reads: [Some(o_read), gu_read], max_workgroups: s.warm, workgroups: s.warm_workgroups })
    }

    /// One token `x` `(1, hidden)` through every layer as fused dispatches (the module header).
    fn decode_layers(&self, rec: &mut Recorder, x: &Tensor, cache: &mut KvCache, b: &LayerBuffers) -> Result<()> {
        let c = &self.cfg;
        let pos = cache.len;
        let eps = Some(c.rms_eps as f32);
        let scratch = b.decode_scratch.as_ref().ok_or_else(|| Error::kernel("llm", "decode without the attention's scratch"))?;
        let (qkv, att, mid) = (b.qkv.rows(1), b.att.rows(1), b.mid.rows(1));
        let (heads, kv_heads, d) = (c.heads as u32, c.kv_heads as u32, c.head_dim as u32);
        let args = AttnArgs::over_cache(heads, kv_heads, d, cache.capacity as u32, 1, pos as u32).with_q(qkv.shape[1] as u32, 0);
        let s = self.decode_shapes;
        // x prepared once: xp the residual stream's codes (written by o and down), mp SiLU·up's (by gate/up),
        // ap the attention output's (by the attention's merge)
        let (xp, mp, ap) = match (&b.prepared, s.prepare) {
            (_, Prepare::Off) => (None, None, None),
            (Some(p), Prepare::Ffn) => (None, Some(&p.mid), None),
            (Some(p), Prepare::All) => (Some(&p.x), Some(&p.mid), p.att.as_ref()),
            (None, _) => return Err(Error::request(format!("x prepared needs the hidden size ({}) and the FFN's ({}) in whole blocks of 32", c.hidden, c.intermediate))),
        };
        for (i, l) in self.layers.iter().enumerate() {
            let rope_kv = Fused::RopeKv { q: &qkv, k: &cache.k[i], v: &cache.v[i], inv_freq: self.rope.inv_freq(), heads, kv_heads, head_dim: d, pos: pos as u32 };
            // layer 0's x is the embedding, which nothing prepared
            let qkv_in = if i > 0 { xp } else { None };
            linear::matvec_fused_prep(rec, x, Prep { input: qkv_in, output: None }, &l.qkv, Some(&l.qkv_b), eps, rope_kv, s.qkv)?;
            // (not where o's rows are short enough for exact products: the test models')
            let o_in = ap.filter(|_| linear::quantizes_x(&l.o, s.o, true));
            let warm = self.warm_reads(l, &b.warm_sinks[(2 * i).min(b.warm_sinks.len())..]);
            attention::attention_decode_with(rec, &qkv, &cache.k[i], &cache.v[i], &att, scratch, &args, o_in, warm)?;
            linear::matvec_fused_prep(rec, &att, Prep { input: o_in, output: xp }, &l.o, None, None, Fused::Residual { y: x }, s.o)?;
            linear::matvec_fused_prep(rec, x, Prep { input: xp, output: mp }, &l.gate_up, None, eps, Fused::Glu { y: &mid }, s.gate_up)?;
            // the last layer's output goes to lm_head, which reads x itself
            let down_out = if i + 1 < self.layers.len() { xp } else { None };
            linear::matvec_fused_prep(rec, &mid, Prep { input: mp, output: down_out }, &l.down, None, None, Fused::Residual { y: x }, s.down)?;
        }
        cache.len = pos + 1;
        Ok(())
    }

    /// Logits `(1, vocab)` into `logits` of `row` (1, hidden), a forward output's last row; `normed` (1,
    /// hidden) is scratch (unused where lm_head carries the final norm: one fused dispatch). `maxima`
    /// ([`Llm::argmax_slots`] u32 pairs, where that is Some): the greedy choice's first pass, written by
    /// lm_head's workgroups (`Fused::PlainArgmax`) for `sample::argmax_of_maxima`.
    pub fn logits(&self, rec: &mut Recorder, row: &Tensor, normed: &Tensor, logits: &Tensor, maxima: Option<&Tensor>) -> Result<()> {
        let eps = self.cfg.rms_eps as f32;
        if self.lm_head_folded {
            let mode = match maxima {
                Some(maxima) if self.argmax_slots().is_some() => Fused::PlainArgmax { y: logits, maxima },
                Some(_) => return Err(Error::kernel("llm", "maxima asked of an lm_head that does not write them (the decode shapes changed after the workspace was made?)")),
                None => Fused::Plain { y: logits },
            };
            return linear::matvec_fused(rec, row, &self.lm_head, None, Some(eps), mode, self.decode_shapes.lm_head);
        }
        if maxima.is_some() {
            return Err(Error::kernel("llm", "maxima asked of an lm_head that cannot write them"));
        }
        norm::rms_norm(rec, row, &self.norm, normed, eps)?;
        linear::linear(rec, normed, &self.lm_head, None, logits)
    }
}
