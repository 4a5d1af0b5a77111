//! Uploads a converted model from its shards, in pieces of any size and in any order, straight into GPU
//! buffers: the caller never holds more than the piece it passes (natively a window of a memory-mapped
//! shard; in the browser a chunk read from IndexedDB). Every shard fed in whole, in order, is also checked
//! against its SHA-256 from the manifest.

use sha2::{Digest, Sha256};

use crate::gpu::tensor::Weight;
use crate::gpu::{Context, DType, GpuBuffer, Tensor};
use crate::loader::manifest::{ArrayRef, Manifest};
use crate::loader::plan::Kind;
use crate::loader::{Loaded, Tensors};
use crate::{Error, Result};

/// Which values of an array must be finite as they stream in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Values {
    /// 4- and 8-bit codes: every bit pattern is a value.
    Codes,
    /// f16 scales or weights.
    F16,
    /// f32 vectors (norms, biases, …).
    F32,
}

/// A stream range, the buffer it fills (from the buffer's offset 0), and what it holds.
struct Dest {
    start: u64,
    end: u64,
    buffer: GpuBuffer,
    values: Values,
    /// The tensor (index into the manifest's table), for messages.
    tensor: usize,
}

/// The first value in `bytes` that is NaN or infinite.
fn non_finite(bytes: &[u8], values: Values) -> Option<usize> {
    match values {
        Values::Codes => None,
        Values::F16 => bytes.chunks_exact(2).position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7C00 == 0x7C00),
        Values::F32 => bytes.chunks_exact(4).position(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7F80_0000 == 0x7F80_0000),
    }
}

/// A shard's SHA-256, computed while it is fed in order.
struct ShardHash {
    hasher: Sha256,
    /// Bytes hashed so far; None once a piece arrived out of order (the shard is then not checked here).
    fed: Option<u64>,
}

pub struct Upload {
    manifest: Manifest,
    dests: Vec<Dest>,
    tensors: Tensors,
    hashes: Vec<ShardHash>,
    written: u64,
    since_flush: u64,
}

/// Bytes written to the queue between flushes: bounds the staging memory `write_buffer` holds until a
/// submission (natively; browsers copy at once).
const FLUSH_BYTES: u64 = 256 << 20;

impl Upload {
    /// Checks the model against the adapter's limits, then allocates every tensor's buffers.
    pub fn new(ctx: &Context, manifest: &Manifest) -> Result<Self> {
        // the tensors only: the working buffers depend on what is asked (a text-only use needs no vision
        // activations); the browser checks those too before downloading (Engine::check)
        manifest.check_tensors(ctx.caps.max_binding)?;
        let mut dests = Vec::new();
        let mut tensors = Tensors::default();
        for (i, t) in manifest.tensors.iter().enumerate() {
            match t.kind {
                Kind::Vector { len } => {
                    let tensor = Tensor::empty(ctx, &[len], DType::F32)?;
                    dests.push(dest(manifest, &t.data, 0..t.data.length, tensor.buffer.clone(), Values::F32, i));
                    tensors.insert(t.name.clone(), Loaded::Vector(tensor));
                }
                Kind::Matrix { format, n, k } => {
                    let (w, layout) = Weight::empty(ctx, format, n, k, ctx.caps.max_binding)?;
                    let data = if format.quant().is_some() { Values::Codes } else { Values::F16 };
                    for (part, l) in w.parts.iter().zip(&layout) {
                        dests.push(dest(manifest, &t.data, l.data.clone(), part.data.clone(), data, i));
                        if let (Some(s), Some(r), Some(b)) = (&t.scales, &l.scales, &part.scales) {
                            dests.push(dest(manifest, s, r.clone(), b.clone(), Values::F16, i));
                        }
                    }
                    tensors.insert(t.name.clone(), Loaded::Matrix(w));
                }
            }
        }
        dests.sort_by_key(|d| d.start);
        let hashes = manifest.shards.iter().map(|_| ShardHash { hasher: Sha256::new(), fed: Some(0) }).collect();
        Ok(Upload { manifest: manifest.clone(), dests, tensors, hashes, written: 0, since_flush: 0 })
    }

    /// Writes `bytes` found at `offset` of shard `shard` into every buffer they belong to. `offset` and the
    /// length must be multiples of 4 (the shards' arrays are 256-aligned, so any 4-aligned cut works).
    pub fn write(&mut self, ctx: &Context, shard: usize, offset: u64, bytes: &[u8]) -> Result<()> {
        let m = &self.manifest;
        let info = m.shards.get(shard).ok_or_else(|| Error::Checkpoint(format!("shard {shard} is not in the manifest")))?;
        if offset + bytes.len() as u64 > info.bytes || offset % 4 != 0 || bytes.len() % 4 != 0 {
            return Err(Error::Checkpoint(format!("shard {}: piece {offset}+{} is outside it or not 4-aligned", info.file, bytes.len())));
        }
        let h = &mut self.hashes[shard];
        if h.fed == Some(offset) {
            h.hasher.update(bytes);
            h.fed = Some(offset + bytes.len() as u64);
        } else {
            h.fed = None;
        }
        let (c0, c1) = (shard as u64 * m.shard_size + offset, shard as u64 * m.shard_size + offset + bytes.len() as u64);
        // dests are sorted by start and never overlap: the first that may intersect ends after c0
        let first = self.dests.partition_point(|d| d.end <= c0);
        for d in &self.dests[first..] {
            if d.start >= c1 {
                break;
            }
            let (a, b) = (d.start.max(c0), d.end.min(c1));
            if a < b {
                let piece = &bytes[(a - c0) as usize..(b - c0) as usize];
                if let Some(at) = non_finite(piece, d.values) {
                    let t = &m.tensors[d.tensor];
                    let what = if d.values == Values::F32 { "values" } else if matches!(t.kind, Kind::Matrix { format, .. } if format.quant().is_some()) { "scales" } else { "weights" };
                    return Err(Error::Checkpoint(format!(
                        "tensor {} has a NaN or infinite value among its {what} (shard {}, byte {}): the model was damaged before its hash was taken; convert the checkpoint again",
                        t.name,
                        info.file,
                        offset + (a - c0) + (at * if d.values == Values::F32 { 4 } else { 2 }) as u64
                    )));
                }
                ctx.queue.write_buffer(&d.buffer, a - d.start, piece);
                self.written += b - a;
                self.since_flush += b - a;
            }
        }
        if self.since_flush >= FLUSH_BYTES {
            self.flush(ctx)?;
        }
        Ok(())
    }

    /// Checks shard `shard`'s SHA-256 once it has been fed whole and in order.
    pub fn verify_shard(&mut self, shard: usize) -> Result<()> {
        let info = &self.manifest.shards[shard];
        let h = std::mem::replace(&mut self.hashes[shard], ShardHash { hasher: Sha256::new(), fed: None });
        match h.fed {
            Some(n) if n == info.bytes => {
                let got = hex(&h.hasher.finalize());
                if got != info.sha256 {
                    return Err(Error::Checkpoint(format!(
                        "shard {} is corrupt: SHA-256 {got}, the manifest says {}",
                        info.file, info.sha256
                    )));
                }
                Ok(())
            }
            _ => Err(Error::Checkpoint(format!("shard {} was not fed whole and in order, so it cannot be verified here", info.file))),
        }
    }

    /// Submits what was written so far and waits for it (natively: frees the staging memory).
    fn flush(&mut self, ctx: &Context) -> Result<()> {
        ctx.queue.submit([]);
        #[cfg(not(target_arch = "wasm32"))]
        ctx.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Device(e.to_string()))?;
        self.since_flush = 0;
        Ok(())
    }

    /// The manifest being loaded.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Bytes written into GPU buffers so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The tensors, once every byte of every array has been written.
    pub fn finish(mut self, ctx: &Context) -> Result<Tensors> {
        let need: u64 = self.dests.iter().map(|d| d.end - d.start).sum();
        if self.written != need {
            return Err(Error::Checkpoint(format!("the model is incomplete: {} of {need} bytes were uploaded", self.written)));
        }
        self.flush(ctx)?;
        Ok(self.tensors)
    }
}

fn dest(m: &Manifest, array: &ArrayRef, range: std::ops::Range<u64>, buffer: GpuBuffer, values: Values, tensor: usize) -> Dest {
    let s = m.start(array);
    Dest { start: s + range.start, end: s + range.end, buffer, values, tensor }
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads a converted model directory natively: each shard memory-mapped, checked and uploaded in 16 MiB
/// windows (whose pages are dropped after use), so memory stays bounded for any model size.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_dir(ctx: &Context, dir: &std::path::Path) -> Result<(Manifest, Tensors)> {
    let path = dir.join(crate::loader::manifest::MANIFEST_FILE);
    let text = std::fs::read(&path).map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    let manifest = Manifest::parse(&text)?;
    let weights = manifest.memory.weights;
    let mut up = pollster::block_on(ctx.out_of_memory_scope("the model's weights", weights, async { Upload::new(ctx, &manifest) }))?;
    const WINDOW: usize = 16 << 20;
    for (i, s) in manifest.shards.iter().enumerate() {
        let p = dir.join(&s.file);
        let file = std::fs::File::open(&p).map_err(|e| Error::Checkpoint(format!("{}: {e}", p.display())))?;
        let len = file.metadata().map_err(|e| Error::Checkpoint(format!("{}: {e}", p.display())))?.len();
        if len != s.bytes {
            return Err(Error::Checkpoint(format!("shard {} has {len} bytes, the manifest says {} (truncated or replaced)", s.file, s.bytes)));
        }
        // Safety: read-only mapping of a file this process does not modify.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Checkpoint(format!("{}: {e}", p.display())))?;
        for off in (0..map.len()).step_by(WINDOW) {
            let end = (off + WINDOW).min(map.len());
            up.write(ctx, i, off as u64, &map[off..end])?;
            crate::weights::drop_pages(&map, off, end);
        }
        up.verify_shard(i)?;
    }
    let tensors = up.finish(ctx)?;
    Ok((manifest, tensors))
}

/// A converted model made ready to answer: what the CLI, the browser engine and the tests build from a
/// manifest, its uploaded tensors and its tokenizer.
pub struct Converted {
    pub model: crate::model::Model,
    pub tokenizer: crate::tokenizer::Tokenizer,
    pub template: crate::chat::ChatTemplate,
    pub generation: crate::loader::manifest::Generation,
    /// The context the model was converted for (the manifest's memory plan).
    pub context: usize,
}

impl Converted {
    /// The model from its uploaded tensors, with `act` activations (`None`: the adapter's best), and the
    /// manifest's tokenizer, whose bytes must match the manifest's SHA-256 (the browser's worker checks the
    /// download too; natively this is the only check).
    pub fn new(ctx: &Context, manifest: &Manifest, tensors: &mut Tensors, tokenizer_json: &[u8], act: Option<DType>) -> Result<Self> {
        let digest = hex(&Sha256::digest(tokenizer_json));
        if digest != manifest.tokenizer.sha256 {
            return Err(Error::Checkpoint(format!(
                "{}: SHA-256 {digest} does not match the manifest's {} (replaced or damaged)",
                manifest.tokenizer.file, manifest.tokenizer.sha256
            )));
        }
        let act = crate::model::activation(ctx, act)?;
        Ok(Converted {
            model: crate::model::Model::new(ctx, &manifest.config, act, tensors)?,
            tokenizer: crate::tokenizer::Tokenizer::from_bytes(tokenizer_json)?,
            template: crate::chat::ChatTemplate::new(&manifest.chat_template),
            generation: manifest.generation.clone(),
            context: manifest.memory.context,
        })
    }

    /// A converted model directory, natively ([`load_dir`], then its tokenizer file).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_dir(ctx: &Context, dir: &std::path::Path, act: Option<DType>) -> Result<Self> {
        let (manifest, mut tensors) = load_dir(ctx, dir)?;
        let p = dir.join(&manifest.tokenizer.file);
        let bytes = std::fs::read(&p).map_err(|e| Error::Checkpoint(format!("{}: {e}", p.display())))?;
        Self::new(ctx, &manifest, &mut tensors, &bytes, act)
    }

    /// The session that answers with it, its KV cache holding `context` tokens (`None`: the manifest's).
    pub async fn session(self, ctx: &Context, context: Option<usize>) -> Result<crate::session::Session> {
        crate::session::Session::new(ctx, self.model, self.tokenizer, self.template, self.generation, context.unwrap_or(self.context)).await
    }
}
