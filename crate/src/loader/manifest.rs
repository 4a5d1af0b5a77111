//! A converted model (docs/FORMAT.md, "Converted models"): `manifest.json`, the tokenizer file, and shards
//! that are fixed-size pieces of one byte stream holding every tensor in its GPU layout.
//!
//! Each tensor is one or two arrays (data, and scales for the quantized formats) at 256-byte-aligned offsets
//! of the stream; an array may continue from one shard into the next. A matrix's arrays are row-major, so a
//! runtime whose binding limit is smaller than the matrix uploads contiguous row ranges as separate buffers
//! ([`crate::gpu::tensor::Weight::layout`]) without repacking.

use crate::gpu::tensor::Weight;
use crate::loader::plan::{Kind, QuantPlan};
use crate::model::config::ModelConfig;
use crate::model::PREFILL_CHUNK;
use crate::{Error, Result};

/// The `format` field of every manifest.
pub const FORMAT: &str = "varco-web-model";
/// Bumped on any incompatible change; a runtime refuses other versions. 2: the RMSNorm weights are folded
/// into the quantized matrices that follow them (loader/plan.rs).
pub const VERSION: u32 = 2;
/// Alignment of every array in the stream: at least WebGPU's copy alignment (4) and storage-offset alignment
/// (256), so a runtime may also bind arrays at an offset of a larger buffer.
pub const ALIGN: u64 = 256;
/// Default shard size, 64 MiB (the reasons are in docs/FORMAT.md).
pub const DEFAULT_SHARD_SIZE: u64 = 64 << 20;
/// The manifest's file name in a converted directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// A file of the converted directory, with its size and SHA-256 (lowercase hex).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileRef {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Where an array lies: starting `offset` bytes into shard `shard`, `length` bytes (possibly running on
/// into the following shards).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArrayRef {
    pub shard: usize,
    pub offset: u64,
    pub length: u64,
}

/// One runtime tensor: its name ([`crate::loader::plan::specs`]), its form, its data array and, for the
/// quantized formats, its scale array.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorEntry {
    pub name: String,
    #[serde(flatten)]
    pub kind: Kind,
    pub data: ArrayRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scales: Option<ArrayRef>,
}

/// Generation defaults (from the checkpoint's generation_config.json where it has one).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub repetition_penalty: f32,
    /// Every id that ends an answer.
    pub eos_token_ids: Vec<u32>,
}

impl Generation {
    /// Refuses settings no sampler takes and stop ids outside a vocabulary of `vocab`.
    pub fn check(&self, vocab: usize) -> std::result::Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) || !(0.0..=1.0).contains(&self.top_p) || !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(format!(
                "generation defaults temperature {}, top_p {}, repetition_penalty {} are outside what the sampler takes",
                self.temperature, self.top_p, self.repetition_penalty
            ));
        }
        if self.max_new_tokens == 0 || self.eos_token_ids.is_empty() {
            return Err("generation defaults need max_new_tokens > 0 and at least one stop id".into());
        }
        if let Some(id) = self.eos_token_ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(format!("the stop id {id} is outside the vocabulary of {vocab}"));
        }
        Ok(())
    }

    /// generation_config.json's settings (`None`: the checkpoint has none), with the model's own end-of-turn
    /// id always among the stop ids; greedy with 1024 new tokens where the file says nothing (the model
    /// card). `what` names the file in errors.
    pub fn from_config(json: Option<&str>, eos_token_id: u32, what: &str) -> Result<Self> {
        let v: serde_json::Value = match json {
            Some(t) => serde_json::from_str(t).map_err(|e| Error::Checkpoint(format!("{what}: {e}")))?,
            None => serde_json::Value::Null,
        };
        let mut eos: Vec<u32> = match &v["eos_token_id"] {
            serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
            x => x.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        };
        if !eos.contains(&eos_token_id) {
            eos.push(eos_token_id);
        }
        let sample = v["do_sample"].as_bool().unwrap_or(false);
        Ok(Generation {
            max_new_tokens: v["max_new_tokens"].as_u64().unwrap_or(1024) as usize,
            temperature: if sample { v["temperature"].as_f64().unwrap_or(1.0) as f32 } else { 0.0 },
            top_k: if sample { v["top_k"].as_u64().unwrap_or(0) as u32 } else { 0 },
            top_p: if sample { v["top_p"].as_f64().unwrap_or(1.0) as f32 } else { 1.0 },
            repetition_penalty: v["repetition_penalty"].as_f64().unwrap_or(1.0) as f32,
            eos_token_ids: eos,
        })
    }

    /// A checkpoint directory's generation_config.json (absent: the defaults above).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path, eos_token_id: u32) -> Result<Self> {
        let p = dir.join("generation_config.json");
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::Checkpoint(format!("{}: {e}", p.display()))),
        };
        Self::from_config(text.as_deref(), eos_token_id, &p.display().to_string())
    }
}

/// GPU memory the model needs, in bytes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Memory {
    /// Every tensor's buffers.
    pub weights: u64,
    /// KV cache (f16) per token of context.
    pub kv_per_token: u64,
    /// The context the total is computed for.
    pub context: usize,
    /// Activations at that context: a prefill chunk's buffers, the vision tower at the most tiles, logits.
    pub activations: u64,
    /// weights + kv_per_token · context + activations.
    pub total: u64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub config: ModelConfig,
    pub plan: QuantPlan,
    pub tokenizer: FileRef,
    pub chat_template: String,
    pub generation: Generation,
    pub memory: Memory,
    pub shard_size: u64,
    /// Bytes of all shards together.
    pub total_bytes: u64,
    pub shards: Vec<FileRef>,
    pub tensors: Vec<TensorEntry>,
}

impl Manifest {
    /// Parses and checks a manifest: format and version, shard sizes, every array inside the stream.
    pub fn parse(text: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::Checkpoint(format!("manifest.json: {m}"));
        let v: serde_json::Value = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
        if v["format"].as_str() != Some(FORMAT) {
            return Err(bad(format!("not a varco-web model manifest (format {})", v["format"])));
        }
        match v["version"].as_u64() {
            Some(n) if n == VERSION as u64 => {}
            Some(n) if n < VERSION as u64 => {
                return Err(bad(format!("format version {n} was written by an older varco; this runtime reads version {VERSION}: convert the checkpoint again with `varco convert`")))
            }
            _ => return Err(bad(format!("format version {} is not supported (this runtime reads version {VERSION}; a newer varco may read it)", v["version"]))),
        }
        let m: Manifest = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
        m.config.check().map_err(|e| bad(e.to_string()))?;
        m.check_table().map_err(&bad)?;
        m.generation.check(m.config.text.vocab).map_err(&bad)?;
        if m.shard_size == 0 || m.shard_size % ALIGN != 0 || m.shards.len() > 1 << 20 {
            return Err(bad(format!("shard size {} is not a positive multiple of {ALIGN}", m.shard_size)));
        }
        let sum = m.shards.iter().try_fold(0u64, |a, s| a.checked_add(s.bytes)).ok_or_else(|| bad("shard sizes overflow".into()))?;
        let sizes_ok = m.shards.iter().enumerate().all(|(i, s)| if i + 1 < m.shards.len() { s.bytes == m.shard_size } else { s.bytes <= m.shard_size });
        if sum != m.total_bytes || !sizes_ok {
            return Err(bad("shard sizes do not add up to total_bytes in shards of shard_size".into()));
        }
        // no two arrays share a byte
        let mut spans: Vec<(u64, u64, &str)> = Vec::new();
        for t in &m.tensors {
            for a in std::iter::once(&t.data).chain(&t.scales) {
                let start = (a.shard as u64).saturating_mul(m.shard_size).saturating_add(a.offset);
                spans.push((start, start.saturating_add(a.length), &t.name));
            }
        }
        spans.sort();
        if let Some(w) = spans.windows(2).find(|w| w[1].0 < w[0].1) {
            return Err(bad(format!("the arrays of tensors {} and {} overlap", w[0].2, w[1].2)));
        }
        for t in &m.tensors {
            let (dl, sl) = t.kind.array_bytes();
            let check = |a: &ArrayRef, want: u64, what: &str| {
                let end = (a.shard as u64).checked_mul(m.shard_size).and_then(|s| s.checked_add(a.offset)).and_then(|s| s.checked_add(a.length).map(|e| (s, e)));
                let Some((start, end)) = end else {
                    return Err(bad(format!("tensor {}: its {what} array {a:?} lies past any stream", t.name)));
                };
                if a.length != want {
                    return Err(bad(format!("tensor {}: its {what} array has {} bytes; a {:?} needs {want}", t.name, a.length, t.kind)));
                }
                if a.offset >= m.shard_size || start % ALIGN != 0 {
                    return Err(bad(format!("tensor {}: its {what} array starts at byte {} of shard {}, not a {ALIGN}-byte boundary inside it", t.name, a.offset, a.shard)));
                }
                if end > m.total_bytes {
                    return Err(bad(format!("tensor {}: its {what} array runs to byte {end} of the stream, past the shards' {} bytes", t.name, m.total_bytes)));
                }
                Ok(())
            };
            check(&t.data, dl, "data")?;
            match (&t.scales, sl) {
                (None, 0) => {}
                (Some(s), sl) if sl > 0 => check(s, sl, "scale")?,
                _ => return Err(bad(format!("tensor {}: scales do not match its format", t.name))),
            }
        }
        Ok(m)
    }

    /// The tensor table against what the config and the plan call for (loader/plan.rs): every tensor there,
    /// none besides, each of its kind and shape — so that no size in the table exceeds what the model is.
    fn check_table(&self) -> std::result::Result<(), String> {
        let has_lm_head = self.tensors.iter().any(|t| t.name == "llm.lm_head");
        let specs = crate::loader::plan::specs(&self.config, &self.plan, has_lm_head);
        if self.tensors.len() != specs.len() {
            return Err(format!("{} tensors, where the config and plan call for {}", self.tensors.len(), specs.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.tensors {
            let spec = specs.iter().find(|s| s.name == t.name).ok_or_else(|| format!("tensor {} is not part of this model", t.name))?;
            if !seen.insert(t.name.as_str()) {
                return Err(format!("tensor {} is listed twice", t.name));
            }
            if spec.kind != t.kind {
                return Err(format!("tensor {} is {:?}; the config and plan call for {:?}", t.name, t.kind, spec.kind));
            }
        }
        Ok(())
    }

    /// Refuses tensors the adapter cannot bind: a matrix may be split by rows, but a pair of its rows, and
    /// every vector, must fit `max_binding`.
    pub fn check_tensors(&self, max_binding: u64) -> Result<()> {
        for t in &self.tensors {
            let too_large = |what: String, needed: u64| Error::TooLarge { what, needed, limit: max_binding };
            match t.kind {
                Kind::Vector { len } if len as u64 * 4 > max_binding => return Err(too_large(format!("tensor {}", t.name), len as u64 * 4)),
                Kind::Vector { .. } => {}
                Kind::Matrix { format, n, k } => {
                    Weight::layout(format, n, k, max_binding).map_err(|e| match e {
                        Error::TooLarge { needed, .. } => too_large(format!("two rows of tensor {}", t.name), needed),
                        e => e,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Refuses a model that the adapter cannot hold, before anything is downloaded or allocated: every
    /// tensor ([`Self::check_tensors`]), and the largest working buffers at the manifest's context — a layer's
    /// KV cache, the prompt's embeddings, a prefill chunk's MLP, the logits, the vision tower on the most
    /// tiles — against `max_binding`, the adapter's per-buffer limit. `act`: bytes per activation value (2
    /// with shader-f16, else 4).
    pub fn check_limits(&self, max_binding: u64, act: usize) -> Result<()> {
        self.check_tensors(max_binding)?;
        let too_large = |what: String, needed: u64| {
            if needed > max_binding {
                return Err(Error::TooLarge { what, needed, limit: max_binding });
            }
            Ok(())
        };
        let (t, v) = (&self.config.text, &self.config.vision);
        let (context, act) = (self.memory.context as u64, act as u64);
        // products of sizes a damaged manifest may make huge: saturating, so they are refused, not overflowed
        let mul = |xs: &[u64]| xs.iter().fold(1u64, |a, &x| a.saturating_mul(x));
        let rows = mul(&[self.config.anyres.max_patches as u64 + 1, v.cells() as u64, v.cells() as u64]);
        too_large(format!("a layer's KV cache at {context} tokens of context"), mul(&[t.kv_heads as u64, context, t.head_dim as u64, act]))?;
        too_large(format!("the prompt's embeddings at {context} tokens"), mul(&[context, t.hidden as u64, act]))?;
        too_large("a prefill chunk's MLP activations".into(), mul(&[PREFILL_CHUNK.min(context as usize) as u64, 2, t.intermediate as u64, act]))?;
        too_large("the logits".into(), mul(&[t.vocab as u64, 4]))?;
        too_large("the vision tower's activations on the most tiles".into(), mul(&[rows, (3 * v.hidden).max(v.intermediate) as u64, act]))?;
        Ok(())
    }

    /// Offset of an array in the whole stream.
    pub fn start(&self, a: &ArrayRef) -> u64 {
        a.shard as u64 * self.shard_size + a.offset
    }

    /// The array at stream offset `start` as a shard reference.
    pub fn array_at(&self, start: u64, length: u64) -> ArrayRef {
        ArrayRef { shard: (start / self.shard_size) as usize, offset: start % self.shard_size, length }
    }
}

impl Memory {
    /// The GPU memory of a model with these tensors at `context` tokens (f16 activations and KV cache).
    pub fn estimate(cfg: &ModelConfig, tensors: &[TensorEntry], context: usize) -> Memory {
        let weights: u64 = tensors.iter().map(|t| t.data.length.next_multiple_of(16) + t.scales.map_or(0, |s| s.length.next_multiple_of(16))).sum();
        let t = &cfg.text;
        let kv_per_token = (t.layers * 2 * t.kv_heads * t.head_dim * 2) as u64;
        let (qn, kvn) = (t.heads * t.head_dim, t.kv_heads * t.head_dim);
        let chunk = PREFILL_CHUNK.min(context);
        // the prompt's embeddings, one chunk's buffers, logits
        let llm = context * t.hidden + chunk * (3 * t.hidden + qn + 2 * kvn + qn + 3 * t.intermediate) + t.vocab;
        // the vision tower on the most tiles
        let vision = cfg.vision_activation_elements(cfg.anyres.max_patches as usize + 1);
        let activations = 2 * (llm + vision) as u64;
        Memory { weights, kv_per_token, context, activations, total: weights + kv_per_token * context as u64 + activations }
    }
}
