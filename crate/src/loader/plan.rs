//! The tensors the runtime keeps on the GPU, by name, and how each is made from checkpoint tensors: the one
//! definition shared by the converter (which writes them to shards) and by loading a checkpoint directly
//! (which uploads them at once), so that both give the same bytes.
//!
//! Fusions happen here, once: q/k/v become one matrix (and one bias), gate/up one matrix, SigLIP's patch
//! convolution a `(hidden, 3·p²)` matrix. Matrices are in one of [`WeightFormat`]'s layouts; vectors (norms,
//! biases, position embeddings, the image newline) are f32.
//!
//! A quantized matrix that follows an RMSNorm (q/k/v, gate/up, and an lm_head stored on its own) has the
//! norm's weight folded into its columns before it is quantized: `W·(g ⊙ x·s) = s·((W·diag(g))·x)`, so the
//! decode step's matrix-vector kernel applies the norm by scaling its sums (`folds_norm`; the model then
//! normalises prefill rows without the weight). f16 matrices (the exact paths) keep W and g apart. An lm_head
//! that is the embedding table itself is never folded.

use half::f16;

use crate::gpu::tensor::{f16_rows_padded, WeightFormat};
use crate::model::config::ModelConfig;
use crate::quant::quantize_rows;
use crate::weights::WeightSource;
use crate::{Error, Result};

/// Which group a tensor belongs to, for the precision plan and the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// The LLM's linear layers.
    Llm,
    Embed,
    LmHead,
    /// The vision tower and the projector.
    Vision,
    /// Norms, biases, position embeddings, the image newline (always f32).
    Vector,
}

/// Storage format of each group of matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuantPlan {
    pub llm: WeightFormat,
    pub embed: WeightFormat,
    pub lm_head: WeightFormat,
    pub vision: WeightFormat,
}

impl QuantPlan {
    /// The converter's default (the measurements are in docs/FORMAT.md): 4-bit LLM linears and embed_tokens,
    /// 8-bit lm_head (its error goes straight into the logits; 4 bits flipped a top-1 token in the
    /// measurement), 8-bit vision tower and projector (0.4 GB less than f16, for an error an order of
    /// magnitude below the 4-bit LLM's).
    pub const DEFAULT: QuantPlan =
        QuantPlan { llm: WeightFormat::Q4, embed: WeightFormat::Q4, lm_head: WeightFormat::Q8, vision: WeightFormat::Q8 };

    /// Every matrix in f16 (the exact paths).
    pub const F16: QuantPlan =
        QuantPlan { llm: WeightFormat::F16, embed: WeightFormat::F16, lm_head: WeightFormat::F16, vision: WeightFormat::F16 };

    /// Checks the combinations the converter offers: LLM linears in 4 bits (or 16 for the exact path),
    /// embed_tokens and lm_head in 4 or 8 (or 16), the vision side in 16, 8 or 4.
    pub fn format_of(&self, g: Group) -> Option<WeightFormat> {
        match g {
            Group::Llm => Some(self.llm),
            Group::Embed => Some(self.embed),
            Group::LmHead => Some(self.lm_head),
            Group::Vision => Some(self.vision),
            Group::Vector => None,
        }
    }
}

/// A tensor as the runtime holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Kind {
    /// `len` f32 values.
    Vector { len: usize },
    /// An `(n, k)` matrix in `format`.
    Matrix { format: WeightFormat, n: usize, k: usize },
}

impl Kind {
    /// Bytes of the data array and of the scale array.
    pub fn array_bytes(&self) -> (u64, u64) {
        match *self {
            Kind::Vector { len } => (len as u64 * 4, 0),
            Kind::Matrix { format, n, k } => format.array_bytes(n, k),
        }
    }
}

/// A checkpoint tensor (canonical name) and the shape it must have. Its rows are `shape[0]`; the other
/// dimensions flatten into columns.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    pub name: String,
    pub shape: Vec<usize>,
}

/// One runtime tensor: its name, its form, and the checkpoint tensors stacked by rows to make it.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub kind: Kind,
    pub group: Group,
    pub sources: Vec<Source>,
    /// A norm weight `(k)` multiplied into the matrix's columns before it is encoded.
    pub fold: Option<Source>,
}

/// Whether a matrix of `format` that follows an RMSNorm has the norm's weight folded in (see the module
/// header): the model's rule, which it reads its weights by.
pub use crate::model::llm::norm_folded as folds_norm;

fn src(name: impl Into<String>, shape: &[usize]) -> Source {
    Source { name: name.into(), shape: shape.to_vec() }
}

struct Builder<'a> {
    plan: &'a QuantPlan,
    out: Vec<Spec>,
}

impl Builder<'_> {
    fn vector(&mut self, name: String, sources: Vec<Source>) {
        let len = sources.iter().map(|s| s.shape.iter().product::<usize>()).sum();
        self.out.push(Spec { name, kind: Kind::Vector { len }, group: Group::Vector, sources, fold: None });
    }

    fn matrix(&mut self, name: String, group: Group, sources: Vec<Source>) {
        self.normed_matrix(name, group, sources, None);
    }

    /// A matrix after the RMSNorm whose weight is `norm`: folded in where the format says so.
    fn normed_matrix(&mut self, name: String, group: Group, sources: Vec<Source>, norm: Option<Source>) {
        let n = sources.iter().map(|s| s.shape[0]).sum();
        let k = sources[0].shape[1..].iter().product();
        let format = self.plan.format_of(group).expect("matrices have a format");
        let fold = norm.filter(|_| folds_norm(format));
        self.out.push(Spec { name, kind: Kind::Matrix { format, n, k }, group, sources, fold });
    }
}

/// Checks that every source of `specs` is in the checkpoint with the expected shape (before any work).
pub fn check_sources(specs: &[Spec], w: &WeightSource) -> Result<()> {
    for s in specs.iter().flat_map(|s| &s.sources) {
        let got = w.shape(&s.name)?;
        if got != s.shape.as_slice() {
            return Err(Error::Checkpoint(format!("tensor {} has shape {got:?}, expected {:?}", s.name, s.shape)));
        }
    }
    Ok(())
}

/// Every tensor of the model, in the order the converter writes them (vision first: a page can encode the
/// image while the rest streams in, in a later version).
pub fn specs(cfg: &ModelConfig, plan: &QuantPlan, has_lm_head: bool) -> Vec<Spec> {
    let mut b = Builder { plan, out: Vec::new() };
    let v = &cfg.vision;
    let (vh, vm, p) = (v.hidden, v.intermediate, v.patch_size);
    let e = "vision_tower.embeddings";
    b.matrix("vision.patch".into(), Group::Vision, vec![src(format!("{e}.patch_embedding.weight"), &[vh, 3, p, p])]);
    b.vector("vision.patch_bias".into(), vec![src(format!("{e}.patch_embedding.bias"), &[vh])]);
    b.vector("vision.pos".into(), vec![src(format!("{e}.position_embedding.weight"), &[v.cells() * v.cells(), vh])]);
    for i in 0..v.layers {
        let l = format!("vision_tower.encoder.layers.{i}");
        let o = format!("vision.{i}");
        let proj = |t: &str, what: &str, shape: &[usize]| src(format!("{l}.self_attn.{t}.{what}"), shape);
        b.vector(format!("{o}.ln1_w"), vec![src(format!("{l}.layer_norm1.weight"), &[vh])]);
        b.vector(format!("{o}.ln1_b"), vec![src(format!("{l}.layer_norm1.bias"), &[vh])]);
        b.matrix(format!("{o}.qkv"), Group::Vision, ["q_proj", "k_proj", "v_proj"].iter().map(|t| proj(t, "weight", &[vh, vh])).collect());
        b.vector(format!("{o}.qkv_bias"), ["q_proj", "k_proj", "v_proj"].iter().map(|t| proj(t, "bias", &[vh])).collect());
        b.matrix(format!("{o}.out"), Group::Vision, vec![proj("out_proj", "weight", &[vh, vh])]);
        b.vector(format!("{o}.out_bias"), vec![proj("out_proj", "bias", &[vh])]);
        b.vector(format!("{o}.ln2_w"), vec![src(format!("{l}.layer_norm2.weight"), &[vh])]);
        b.vector(format!("{o}.ln2_b"), vec![src(format!("{l}.layer_norm2.bias"), &[vh])]);
        b.matrix(format!("{o}.fc1"), Group::Vision, vec![src(format!("{l}.mlp.fc1.weight"), &[vm, vh])]);
        b.vector(format!("{o}.fc1_bias"), vec![src(format!("{l}.mlp.fc1.bias"), &[vm])]);
        b.matrix(format!("{o}.fc2"), Group::Vision, vec![src(format!("{l}.mlp.fc2.weight"), &[vh, vm])]);
        b.vector(format!("{o}.fc2_bias"), vec![src(format!("{l}.mlp.fc2.bias"), &[vh])]);
    }
    let t = &cfg.text;
    let (h, d, ffn) = (t.hidden, t.head_dim, t.intermediate);
    let (qn, kvn) = (t.heads * d, t.kv_heads * d);
    let pr = "multi_modal_projector";
    b.matrix("projector.fc1".into(), Group::Vision, vec![src(format!("{pr}.linear_1.weight"), &[h, vh])]);
    b.vector("projector.fc1_bias".into(), vec![src(format!("{pr}.linear_1.bias"), &[h])]);
    b.matrix("projector.fc2".into(), Group::Vision, vec![src(format!("{pr}.linear_2.weight"), &[h, h])]);
    b.vector("projector.fc2_bias".into(), vec![src(format!("{pr}.linear_2.bias"), &[h])]);
    b.vector("image_newline".into(), vec![src("image_newline", &[h])]);
    b.matrix("llm.embed".into(), Group::Embed, vec![src("language_model.model.embed_tokens.weight", &[t.vocab, h])]);
    for i in 0..t.layers {
        let l = format!("language_model.model.layers.{i}");
        let o = format!("llm.{i}");
        let a = format!("{l}.self_attn");
        let m = format!("{l}.mlp");
        b.vector(format!("{o}.in_norm"), vec![src(format!("{l}.input_layernorm.weight"), &[h])]);
        let qkv = [("q_proj", qn), ("k_proj", kvn), ("v_proj", kvn)];
        let in_norm = src(format!("{l}.input_layernorm.weight"), &[h]);
        b.normed_matrix(format!("{o}.qkv"), Group::Llm, qkv.iter().map(|(p, n)| src(format!("{a}.{p}.weight"), &[*n, h])).collect(), Some(in_norm));
        b.vector(format!("{o}.qkv_bias"), qkv.iter().map(|(p, n)| src(format!("{a}.{p}.bias"), &[*n])).collect());
        b.matrix(format!("{o}.o"), Group::Llm, vec![src(format!("{a}.o_proj.weight"), &[h, qn])]);
        b.vector(format!("{o}.post_norm"), vec![src(format!("{l}.post_attention_layernorm.weight"), &[h])]);
        let post_norm = src(format!("{l}.post_attention_layernorm.weight"), &[h]);
        b.normed_matrix(format!("{o}.gate_up"), Group::Llm, vec![src(format!("{m}.gate_proj.weight"), &[ffn, h]), src(format!("{m}.up_proj.weight"), &[ffn, h])], Some(post_norm));
        b.matrix(format!("{o}.down"), Group::Llm, vec![src(format!("{m}.down_proj.weight"), &[h, ffn])]);
    }
    b.vector("llm.norm".into(), vec![src("language_model.model.norm.weight", &[h])]);
    // A tied lm_head (small Qwen2 models) without its own tensor is the embedding table, stored again only
    // when the plan wants it in another format.
    // (a separate lm_head may take the final norm; the embedding table never does)
    let norm = || Some(src("language_model.model.norm.weight", &[h]));
    if has_lm_head {
        b.normed_matrix("llm.lm_head".into(), Group::LmHead, vec![src("language_model.lm_head.weight", &[t.vocab, h])], norm());
    } else if plan.lm_head != plan.embed {
        b.normed_matrix("llm.lm_head".into(), Group::LmHead, vec![src("language_model.model.embed_tokens.weight", &[t.vocab, h])], norm());
    }
    b.out
}

/// Source values read per step while encoding (16 Mi values: 64 MiB as f32): bounds the converter's memory
/// whatever the tensor's size.
pub const CHUNK_VALUES: usize = 16 << 20;

/// A callback that sees each chunk of source values (row-major, rows of the matrix's `k`) as it is encoded.
pub type Observer<'a> = &'a mut dyn FnMut(&[f32]);

/// Encodes `spec` from the checkpoint: the data array goes to `sink` in pieces, in order; the scale array
/// (quantized formats; a few percent of the data) is returned. Source tensors are read a chunk of rows at a
/// time and released after use, so memory stays bounded for any tensor size.
pub fn encode(spec: &Spec, w: &WeightSource, sink: &mut dyn FnMut(&[u8]) -> Result<()>, mut observe: Option<Observer>) -> Result<Vec<u8>> {
    let mut scales: Vec<f16> = Vec::new();
    let fold = match &spec.fold {
        Some(f) => Some(w.f32(&f.name, &f.shape)?),
        None => None,
    };
    let mut rows_done = 0;
    for s in &spec.sources {
        let rows = s.shape[0];
        let cols: usize = s.shape[1..].iter().product();
        let per = (CHUNK_VALUES / cols.max(1)).max(1);
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + per).min(rows);
            let mut vals = w.rows_f32(&s.name, &s.shape, r0, r1)?;
            w.release_rows(&s.name, r0, r1);
            if let Some(g) = &fold {
                for row in vals.chunks_mut(cols) {
                    row.iter_mut().zip(g).for_each(|(v, g)| *v *= g);
                }
            }
            if let Some(f) = observe.as_mut() {
                f(&vals);
            }
            match spec.kind {
                Kind::Vector { .. } => sink(bytemuck::cast_slice(&vals))?,
                Kind::Matrix { format, k, .. } => match format.quant() {
                    Some(q) => {
                        let mut qs = Vec::new();
                        quantize_rows(q, &vals, r1 - r0, k, &mut qs, &mut scales);
                        sink(bytemuck::cast_slice(&qs))?;
                    }
                    None => {
                        let h: Vec<f16> = vals.iter().map(|&v| f16::from_f32(v)).collect();
                        sink(&f16_rows_padded(&h, k))?;
                    }
                },
            }
            r0 = r1;
        }
        rows_done += rows;
    }
    if let Kind::Matrix { n, .. } = spec.kind {
        if rows_done != n {
            return Err(Error::Checkpoint(format!("{}: {rows_done} rows from its sources, expected {n}", spec.name)));
        }
    }
    scales.resize(scales.len().next_multiple_of(2), f16::ZERO);
    Ok(bytemuck::cast_slice(&scales).to_vec())
}
