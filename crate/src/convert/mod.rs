//! `varco convert`: a checkpoint directory (either layout, one safetensors file or shards with their index)
//! into a converted model — `manifest.json`, `tokenizer.json` and shards of one byte stream — ready to be
//! served from any static host (docs/FORMAT.md, "Converted models").
//!
//! Memory stays bounded whatever the model's size: tensors are read through the memory map a chunk of rows
//! at a time ([`plan::CHUNK_VALUES`]) and their pages dropped after use, and shards are written in sequence
//! with their SHA-256 computed on the way. Only a matrix's scale array (≤ 1/8 of its codes) is held whole.
//! The output is deterministic (same input, same bytes), is written into `<output>.partial`, manifest last,
//! and is renamed into place only when complete: a failed run never leaves something that looks finished.

pub mod synthetic;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::chat::ChatTemplate;
use crate::loader::manifest::{self, ArrayRef, FileRef, Generation, Manifest, Memory, TensorEntry, ALIGN};
use crate::loader::plan::{self, Kind, QuantPlan};
use crate::loader::stream::hex;
use crate::model::config::ModelConfig;
use crate::quant::{QFormat, QMatrix};
use crate::tokenizer::Tokenizer;
use crate::weights::WeightSource;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct Options {
    pub plan: QuantPlan,
    /// Bytes per shard (a multiple of 256; the last shard is shorter).
    pub shard_size: u64,
    /// Context length the manifest's GPU-memory figure is computed for.
    pub context: usize,
    /// Measure each matrix's quantization error (in every format; costs about twice the time).
    pub report: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { plan: QuantPlan::DEFAULT, shard_size: manifest::DEFAULT_SHARD_SIZE, context: 8192, report: false }
    }
}

/// Progress of a conversion, in bytes of output (`total` is an upper bound until the last call, where
/// `done == total`).
pub struct Progress<'a> {
    pub done: u64,
    pub total: u64,
    pub tensor: &'a str,
}

/// One matrix's relative RMS error `‖w − deq(q(w))‖ / ‖w‖` in the stored format and in the alternatives.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TensorError {
    pub name: String,
    pub format: crate::gpu::tensor::WeightFormat,
    pub n: usize,
    pub k: usize,
    pub q4: f64,
    pub q8: f64,
    pub f16: f64,
}

pub struct Outcome {
    pub manifest: Manifest,
    pub errors: Vec<TensorError>,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(28) => " (the disk is full)",
        Some(27) => " (over the file-size limit)",
        _ => "",
    };
    Error::Checkpoint(format!("{}: {e}{hint}", path.display()))
}

/// Converts `input` into `output` (which must not exist yet).
pub fn convert(input: &Path, output: &Path, opts: &Options, progress: &mut dyn FnMut(Progress)) -> Result<Outcome> {
    if opts.shard_size == 0 || opts.shard_size % ALIGN != 0 {
        return Err(Error::Checkpoint(format!("shard size {} is not a positive multiple of {ALIGN}", opts.shard_size)));
    }
    if output.exists() {
        return Err(Error::Checkpoint(format!("{} already exists: remove it or choose another output", output.display())));
    }
    // everything about the input is checked before anything is written
    let w = WeightSource::open_dir(input)?;
    let config_path = input.join("config.json");
    let config = std::fs::read_to_string(&config_path).map_err(|e| io(&config_path, e))?;
    let mut cfg = ModelConfig::from_json(&config, &w)?;
    let tok_path = input.join("tokenizer.json");
    let tok_bytes = std::fs::read(&tok_path).map_err(|e| io(&tok_path, e))?;
    let tok = Tokenizer::from_bytes(&tok_bytes)?;
    // the image token as the tokenizer has it (the original checkpoint's config does not name it)
    cfg.image_token_id = tok.token_id("<image>").or(cfg.image_token_id);
    let template = ChatTemplate::from_dir(input)?;
    let generation = Generation::from_dir(input, cfg.text.eos_token_id)?;
    let specs = plan::specs(&cfg, &opts.plan, w.contains("language_model.lm_head.weight"));
    plan::check_sources(&specs, &w)?;

    let total: u64 = specs.iter().map(|s| s.kind.array_bytes()).map(|(d, s)| d + s + 2 * ALIGN).sum();
    let parent = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(free) = fs4::available_space(parent) {
        let need = total + tok_bytes.len() as u64;
        if free < need {
            return Err(Error::Checkpoint(format!(
                "{}: the converted model needs {:.2} GB and only {:.2} GB are free",
                parent.display(),
                need as f64 / 1e9,
                free as f64 / 1e9
            )));
        }
    }
    let tmp = partial_path(output);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let result = (|| {
        let mut writer = ShardWriter::new(&tmp, opts.shard_size);
        let mut tensors = Vec::new();
        let mut errors = Vec::new();
        for spec in &specs {
            let mut err = ErrorSums::default();
            let k = match spec.kind {
                Kind::Matrix { k, .. } => k,
                Kind::Vector { .. } => 0,
            };
            let mut observe = |vals: &[f32]| err.add(vals, k);
            let observer: Option<plan::Observer> = if opts.report && k > 0 { Some(&mut observe) } else { None };
            writer.align()?;
            let data_start = writer.pos;
            let scales = plan::encode(
                spec,
                &w,
                &mut |b| {
                    writer.write(b)?;
                    progress(Progress { done: writer.pos, total, tensor: &spec.name });
                    Ok(())
                },
                observer,
            )?;
            let data = writer.array(data_start);
            let scales = if scales.is_empty() {
                None
            } else {
                writer.align()?;
                let s0 = writer.pos;
                writer.write(&scales)?;
                Some(writer.array(s0))
            };
            if let (true, Kind::Matrix { format, n, k }) = (opts.report, spec.kind) {
                errors.push(err.finish(&spec.name, format, n, k));
            }
            tensors.push(TensorEntry { name: spec.name.clone(), kind: spec.kind, data, scales });
        }
        let (shards, total_bytes) = writer.finish()?;
        progress(Progress { done: total_bytes, total: total_bytes, tensor: "" });
        let tok_file = "tokenizer.json";
        std::fs::write(tmp.join(tok_file), &tok_bytes).map_err(|e| io(&tmp.join(tok_file), e))?;
        let memory = Memory::estimate(&cfg, &tensors, opts.context);
        let m = Manifest {
            format: manifest::FORMAT.into(),
            version: manifest::VERSION,
            config: cfg.clone(),
            plan: opts.plan,
            tokenizer: FileRef { file: tok_file.into(), bytes: tok_bytes.len() as u64, sha256: hex(&Sha256::digest(&tok_bytes)) },
            chat_template: template.source().to_string(),
            generation: generation.clone(),
            memory,
            shard_size: opts.shard_size,
            total_bytes,
            shards,
            tensors,
        };
        // the manifest last: a directory without one is not a model
        let text = serde_json::to_vec_pretty(&m).map_err(|e| Error::Checkpoint(e.to_string()))?;
        let mp = tmp.join(manifest::MANIFEST_FILE);
        write_synced(&mp, &text)?;
        Ok(Outcome { manifest: m, errors })
    })();
    match result {
        Ok(out) => {
            std::fs::rename(&tmp, output).map_err(|e| io(output, e))?;
            Ok(out)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Where a conversion into `output` is written until it completes.
pub fn partial_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| io(path, e))?;
    f.write_all(bytes).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

/// Writes one byte stream as consecutive shard files of `size` bytes, hashing each on the way.
struct ShardWriter {
    dir: PathBuf,
    size: u64,
    /// Bytes written to the stream.
    pos: u64,
    current: Option<(BufWriter<File>, Sha256, PathBuf)>,
    done: Vec<FileRef>,
}

impl ShardWriter {
    fn new(dir: &Path, size: u64) -> Self {
        ShardWriter { dir: dir.to_path_buf(), size, pos: 0, current: None, done: Vec::new() }
    }

    fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            if self.current.is_none() {
                let name = format!("shard-{:05}.bin", self.done.len());
                let path = self.dir.join(&name);
                let f = File::create(&path).map_err(|e| io(&path, e))?;
                self.current = Some((BufWriter::with_capacity(1 << 20, f), Sha256::new(), path));
            }
            let room = (self.size - self.pos % self.size) as usize;
            let n = room.min(bytes.len());
            let (f, h, path) = self.current.as_mut().expect("a shard is open");
            f.write_all(&bytes[..n]).map_err(|e| io(path, e))?;
            h.update(&bytes[..n]);
            self.pos += n as u64;
            bytes = &bytes[n..];
            if self.pos % self.size == 0 {
                self.close()?;
            }
        }
        Ok(())
    }

    /// Zero padding up to the next array boundary.
    fn align(&mut self) -> Result<()> {
        let pad = (self.pos.next_multiple_of(ALIGN) - self.pos) as usize;
        self.write(&vec![0u8; pad])
    }

    /// The array written since `start`.
    fn array(&self, start: u64) -> ArrayRef {
        ArrayRef { shard: (start / self.size) as usize, offset: start % self.size, length: self.pos - start }
    }

    fn close(&mut self) -> Result<()> {
        if let Some((f, h, path)) = self.current.take() {
            let file = f.into_inner().map_err(|e| io(&path, e.into_error()))?;
            file.sync_all().map_err(|e| io(&path, e))?;
            let bytes = file.metadata().map_err(|e| io(&path, e))?.len();
            let name = path.file_name().expect("a shard file name").to_string_lossy().into_owned();
            self.done.push(FileRef { file: name, bytes, sha256: hex(&h.finalize()) });
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(Vec<FileRef>, u64)> {
        self.close()?;
        Ok((self.done, self.pos))
    }
}

/// Squared error and norm sums of one matrix in each format, accumulated chunk by chunk.
#[derive(Default)]
struct ErrorSums {
    q4: f64,
    q8: f64,
    f16: f64,
    norm: f64,
}

impl ErrorSums {
    fn add(&mut self, vals: &[f32], k: usize) {
        let rows = vals.len() / k;
        for (fmt, acc) in [(QFormat::Q4, &mut self.q4), (QFormat::Q8, &mut self.q8)] {
            let q = QMatrix::quantize(fmt, vals, rows, k);
            for r in 0..rows {
                for c in 0..k {
                    *acc += (vals[r * k + c] as f64 - q.get(r, c) as f64).powi(2);
                }
            }
        }
        for &v in vals {
            self.f16 += (v as f64 - half::f16::from_f32(v).to_f64()).powi(2);
            self.norm += (v as f64).powi(2);
        }
    }

    fn finish(&self, name: &str, format: crate::gpu::tensor::WeightFormat, n: usize, k: usize) -> TensorError {
        let rel = |x: f64| if self.norm > 0.0 { (x / self.norm).sqrt() } else { 0.0 };
        TensorError { name: name.into(), format, n, k, q4: rel(self.q4), q8: rel(self.q8), f16: rel(self.f16) }
    }
}
