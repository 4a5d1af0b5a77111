//! Checkpoint readers. A [`WeightSource`] gives tensors by their canonical name — the transformers 4.47
//! names of NCSOFT/VARCO-VISION-14B-HF (`language_model.model.layers.0.self_attn.q_proj.weight`, …) —
//! whatever layout the files use:
//! - the -HF layout itself (SigLIP under `vision_tower.vision_model.` or directly under `vision_tower.`);
//! - the original LLaVA-NeXT layout (`model.layers.…`, `lm_head.weight`, `model.mm_projector.{0,2}`,
//!   `model.vision_tower.vision_tower.vision_model.…`, `model.image_newline`);
//! - newer transformers' layout (`model.language_model.…`, `model.vision_tower.…`, `lm_head.weight`).
//!
//! Files: one `model.safetensors`, or shards listed by `model.safetensors.index.json`. Natively they are
//! memory-mapped, so a 30 GB checkpoint is never read into memory as a whole.

use std::collections::HashMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::{Error, Result};

/// Which naming the checkpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// transformers ≤ 4.47 `LlavaOnevisionForConditionalGeneration` (VARCO-VISION-14B-HF).
    Hf,
    /// LLaVA-NeXT `LlavaQwenForCausalLM` (the original VARCO-VISION-14B).
    LlavaNext,
    /// transformers ≥ 4.52 (`model.language_model.…`).
    HfNew,
}

impl Layout {
    pub fn detect(names: &[String]) -> Result<Layout> {
        let has = |n: &str| names.iter().any(|x| x == n);
        let has_prefix = |p: &str| names.iter().any(|x| x.starts_with(p));
        if has("language_model.lm_head.weight") || has_prefix("language_model.model.layers.") {
            Ok(Layout::Hf)
        } else if has_prefix("model.language_model.") {
            Ok(Layout::HfNew)
        } else if has_prefix("model.layers.") && has_prefix("model.vision_tower.vision_tower.") {
            Ok(Layout::LlavaNext)
        } else {
            Err(Error::Checkpoint(
                "not a VARCO-VISION / LLaVA-OneVision-Qwen2 checkpoint: no language-model layers under any known naming".into(),
            ))
        }
    }

    /// The canonical name of a tensor stored under `name`, or None for tensors the model does not use.
    /// Canonical = the -HF names, with SigLIP's `vision_model.` level dropped (transformers writes it or not
    /// depending on the version: `vision_tower.vision_model.encoder…` and `vision_tower.encoder…` are the same).
    pub fn canonical(self, name: &str) -> Option<String> {
        let c = self.canonical_raw(name)?;
        Some(match c.strip_prefix("vision_tower.vision_model.") {
            Some(r) => format!("vision_tower.{r}"),
            None => c,
        })
    }

    fn canonical_raw(self, name: &str) -> Option<String> {
        match self {
            Layout::Hf => Some(name.to_string()),
            Layout::HfNew => {
                if let Some(r) = name.strip_prefix("model.language_model.") {
                    Some(format!("language_model.model.{r}"))
                } else if name == "lm_head.weight" {
                    Some("language_model.lm_head.weight".into())
                } else {
                    name.strip_prefix("model.").map(|r| r.to_string())
                }
            }
            Layout::LlavaNext => {
                if let Some(r) = name.strip_prefix("model.vision_tower.vision_tower.") {
                    Some(format!("vision_tower.{r}"))
                } else if let Some(r) = name.strip_prefix("model.mm_projector.0.") {
                    Some(format!("multi_modal_projector.linear_1.{r}"))
                } else if let Some(r) = name.strip_prefix("model.mm_projector.2.") {
                    Some(format!("multi_modal_projector.linear_2.{r}"))
                } else if name == "model.image_newline" {
                    Some("image_newline".into())
                } else if name == "lm_head.weight" {
                    Some("language_model.lm_head.weight".into())
                } else {
                    name.strip_prefix("model.").map(|r| format!("language_model.model.{r}"))
                }
            }
        }
    }
}

/// Tells the OS that bytes `a..b` of a read-only file mapping are no longer needed (whole pages inside the
/// range only: a neighbour's pages may still be in use). A hint: dropped pages are read again if touched.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn drop_pages(map: &memmap2::Mmap, a: usize, b: usize) {
    let page = 4096;
    let (a, b) = (a.next_multiple_of(page), b / page * page);
    if b > a {
        // Safety: a private read-only file mapping; dropped pages are read again from the file if touched.
        let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a) };
    }
}

/// Element types a checkpoint may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }
}

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    range: (usize, usize),
}

/// A checkpoint file's bytes: memory-mapped from disk, or owned (the browser, tests).
enum Bytes {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// What a safetensors reading error means, in the terms of someone holding the file (the library's names —
/// `MetadataIncompleteBuffer`, `InvalidHeaderLength`, … — say nothing to them).
fn explain(e: &safetensors::SafeTensorError, bytes: &[u8]) -> String {
    use safetensors::SafeTensorError as E;
    let size = bytes.len();
    let declared = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let again = "download or copy the file again; if it is whole, it was not written as safetensors";
    match e {
        E::HeaderTooSmall => format!("only {size} bytes: too short to be a safetensors file (it starts with an 8-byte header length); {again}"),
        E::InvalidHeaderLength => format!(
            "its header is said to take {} bytes but the file has {size}: the file is truncated or not safetensors; {again}",
            declared.unwrap_or(0)
        ),
        E::HeaderTooLarge => format!("its header is said to take {} bytes, more than any checkpoint's: the file is damaged; {again}", declared.unwrap_or(0)),
        E::InvalidHeader | E::InvalidHeaderStart | E::InvalidHeaderDeserialization => {
            format!("its header (the JSON list of tensors at the start) is not readable: the file is damaged; {again}")
        }
        E::JsonError(j) => format!("its header (the JSON list of tensors at the start) is not readable ({j}): the file is damaged; {again}"),
        E::MetadataIncompleteBuffer => format!(
            "the file is {size} bytes but its header places tensor data up to a different end: truncated, or with bytes added; {again}"
        ),
        E::InvalidOffset(name) => format!("tensor {name} has offsets in the header that do not fit the file: the file is damaged; {again}"),
        E::TensorInvalidInfo | E::ValidationOverflow | E::InvalidTensorView(..) => {
            format!("a tensor's shape, type and offsets in the header disagree: the file is damaged; {again}")
        }
        E::TensorNotFound(name) => format!("tensor {name} is not in the file"),
        E::IoError(io) => format!("cannot be read: {io}"),
    }
}

/// Tensors of a checkpoint by canonical name.
pub struct WeightSource {
    pub layout: Layout,
    files: Vec<Bytes>,
    entries: HashMap<String, Entry>,
}

impl WeightSource {
    /// A directory with `model.safetensors` or `model.safetensors.index.json` and its shards.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::Checkpoint(format!("{}: {e}", index.display())))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Checkpoint(format!("{}: {e}", index.display())))?;
            let map = v["weight_map"].as_object().ok_or_else(|| Error::Checkpoint(format!("{}: no weight_map", index.display())))?;
            let mut names: Vec<&str> = map.values().filter_map(|f| f.as_str()).collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|f| dir.join(f)).collect()
        } else {
            let single = dir.join("model.safetensors");
            if !single.exists() {
                return Err(Error::Checkpoint(format!("{}: neither model.safetensors nor model.safetensors.index.json", dir.display())));
            }
            vec![single]
        };
        let mut maps = Vec::new();
        for f in &files {
            let file = std::fs::File::open(f).map_err(|e| Error::Checkpoint(format!("{}: {e}", f.display())))?;
            // Safety: the file is only read, and checkpoints are not modified while a model loads.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Checkpoint(format!("{}: {e}", f.display())))?;
            maps.push(Bytes::Mapped(map));
        }
        Self::from_files(maps, &files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>())
    }

    /// safetensors files already in memory (the browser reads them from its cache).
    pub fn from_bytes(files: Vec<Vec<u8>>) -> Result<Self> {
        let labels: Vec<String> = (0..files.len()).map(|i| format!("safetensors file {i}")).collect();
        Self::from_files(files.into_iter().map(Bytes::Owned).collect(), &labels)
    }

    fn from_files(files: Vec<Bytes>, labels: &[String]) -> Result<Self> {
        let mut raw: Vec<(String, Entry)> = Vec::new();
        for (i, bytes) in files.iter().enumerate() {
            let (n, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| Error::Checkpoint(format!("{}: {}", labels[i], explain(&e, bytes))))?;
            let base = 8 + n;
            for (name, info) in meta.tensors() {
                let dtype = match info.dtype {
                    safetensors::Dtype::F32 => Dtype::F32,
                    safetensors::Dtype::F16 => Dtype::F16,
                    safetensors::Dtype::BF16 => Dtype::Bf16,
                    other => return Err(Error::Checkpoint(format!("{}: tensor {name} has unsupported dtype {other:?}", labels[i]))),
                };
                let (a, b) = info.data_offsets;
                if base + b > bytes.len() {
                    return Err(Error::Checkpoint(format!("{}: truncated (tensor {name} ends past the end of the file)", labels[i])));
                }
                raw.push((name.clone(), Entry { file: i, dtype, shape: info.shape.clone(), range: (base + a, base + b) }));
            }
        }
        let names: Vec<String> = raw.iter().map(|(n, _)| n.clone()).collect();
        let layout = Layout::detect(&names)?;
        let mut entries = HashMap::new();
        for (name, e) in raw {
            if let Some(c) = layout.canonical(&name) {
                entries.insert(c, e);
            }
        }
        Ok(WeightSource { layout, files, entries })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Canonical names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.entries.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.entry(name)?.shape)
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries.get(name).ok_or_else(|| Error::Checkpoint(format!("tensor {name} is missing from the checkpoint")))
    }

    /// The tensor as f32 values, after checking its shape.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.rows_f32(name, shape, 0, shape.first().copied().unwrap_or(1))
    }

    /// Rows `r0..r1` (along the first dimension) of the tensor as f32 values, after checking its shape.
    pub fn rows_f32(&self, name: &str, shape: &[usize], r0: usize, r1: usize) -> Result<Vec<f32>> {
        let e = self.entry(name)?;
        if e.shape != shape {
            return Err(Error::Checkpoint(format!("tensor {name} has shape {:?}, expected {shape:?}", e.shape)));
        }
        let row: usize = shape.iter().skip(1).product::<usize>() * e.dtype.size();
        let (a, b) = if shape.is_empty() { (e.range.0, e.range.1) } else { (e.range.0 + r0 * row, e.range.0 + r1 * row) };
        assert!(r0 <= r1 && b <= e.range.1, "rows {r0}..{r1} of {name} {shape:?}");
        let bytes = &self.files[e.file][a..b];
        Ok(match e.dtype {
            Dtype::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(bytes),
            Dtype::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(bytes).iter().map(|v| v.to_f32()).collect(),
            Dtype::Bf16 => bytemuck::pod_collect_to_vec::<u8, bf16>(bytes).iter().map(|v| v.to_f32()).collect(),
        })
    }

    /// Tells the OS that rows `r0..r1` of the tensor are no longer needed: a memory-mapped checkpoint read
    /// in chunks then holds only the current chunk's pages. A hint; no effect on owned bytes.
    pub fn release_rows(&self, name: &str, r0: usize, r1: usize) {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some((e, Bytes::Mapped(m))) = self.entries.get(name).map(|e| (e, &self.files[e.file])) {
            let row: usize = e.shape.iter().skip(1).product::<usize>() * e.dtype.size();
            let (a, b) = if e.shape.is_empty() { e.range } else { (e.range.0 + r0 * row, e.range.0 + r1 * row) };
            drop_pages(m, a, b);
        }
        #[cfg(target_arch = "wasm32")]
        let _ = (name, r0, r1);
    }

    /// The tensor as f16 values (f32 and bf16 checkpoints are rounded), after checking its shape.
    pub fn f16(&self, name: &str, shape: &[usize]) -> Result<Vec<f16>> {
        let e = self.entry(name)?;
        if e.dtype == Dtype::F16 && e.shape == shape {
            return Ok(bytemuck::pod_collect_to_vec::<u8, f16>(&self.files[e.file][e.range.0..e.range.1]));
        }
        Ok(self.f32(name, shape)?.into_iter().map(f16::from_f32).collect())
    }
}
