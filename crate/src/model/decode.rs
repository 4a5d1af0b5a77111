//! The decode step: one token through the LLM, its logits, and the next token chosen on the GPU.
//!
//! Everything a step touches is made once, in a [`Workspace`] sized for the KV cache: the token's row and the
//! layers' scratch, the logits, the sampler's output, the mappable buffers the chosen ids come back through,
//! and (in a [`StepCache`]) the bind groups and the parameter arena of the recorded step. A decoded token so
//! creates no buffer and no bind group; what changes from one token to the next (the position, the sampler's
//! random draw) is a few bytes of parameters, written with one `write_buffer`.
//!
//! Decoding is pipelined: each step reads its input token on the GPU from the previous step's sampler
//! output, so step i + 1 is queued before token i is read back and the GPU never waits for the CPU to record.
//! The cost: after the last token, one step's work is queued and thrown away.

use crate::gpu::{Context, DType, GpuBuffer, Recorder, StepCache, Tensor};
use crate::kernels::sample;
pub use crate::kernels::sample::SampleArgs;
use crate::model::llm::{KvCache, LayerBuffers};
use crate::model::Model;
use crate::Result;

/// Mappable buffers the chosen ids come back through: one per token in flight (at most two are).
const RING: usize = 4;

/// The buffers a decode step works in (see the module header).
pub struct StepBuffers {
    /// `(1, hidden)`: the token's row through the layers (and a prompt's last row before its logits).
    pub(crate) x: Tensor,
    /// `(1, hidden)`: the final norm's output.
    pub(crate) normed: Tensor,
    /// `(1, vocab)`: the logits after the last token run.
    pub(crate) logits: Tensor,
    /// u32 `(1)`: the sampler's choice, read by the next step's embedding gather.
    picked: Tensor,
    /// u32: the greedy choice's partial results between its two passes.
    sample_scratch: Tensor,
    /// u32 pairs, one a slot: the greedy choice's first pass as lm_head writes it with the logits (`Llm::argmax_slots`),
    /// where it can; every recording of the logits into this workspace writes them, so they always
    /// belong to `logits`.
    maxima: Option<Tensor>,
    layers: LayerBuffers,
}

/// What stays from one decode step to the next (see the module header).
pub struct Workspace {
    pub(crate) b: StepBuffers,
    /// The step (embedding, layers, logits, sampler, copy-out) as recorded again each token.
    step: StepCache,
    /// The first token's sampler alone (after a prefill).
    first: StepCache,
    ring: Vec<GpuBuffer>,
    next: usize,
    /// The logits as f32 on their way to the CPU sampler (made when first needed).
    readback: Option<GpuBuffer>,
}

impl Workspace {
    /// The decode buffers of `model` for a cache of `capacity` positions.
    pub fn new(ctx: &Context, model: &Model, capacity: usize) -> Result<Self> {
        let c = &model.cfg.text;
        let act = model.llm.act;
        let ring = (0..RING)
            .map(|_| {
                ctx.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("token"),
                    size: 4,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        Ok(Workspace {
            b: StepBuffers {
                x: Tensor::empty(ctx, &[1, c.hidden], act)?,
                normed: Tensor::empty(ctx, &[1, c.hidden], act)?,
                logits: Tensor::empty(ctx, &[1, c.vocab], act)?,
                picked: Tensor::empty(ctx, &[1], DType::U32)?,
                sample_scratch: Tensor::empty(ctx, &[sample::SCRATCH_LEN], DType::U32)?,
                maxima: model.llm.argmax_slots().map(|n| Tensor::empty(ctx, &[2 * n], DType::U32)).transpose()?,
                layers: LayerBuffers::new(ctx, &model.cfg.text, act, 1, capacity)?,
            },
            step: StepCache::default(),
            first: StepCache::default(),
            ring,
            next: 0,
            readback: None,
        })
    }

    /// The logits `(1, vocab)` after the last token run (a prefill's, or a step's).
    pub fn logits(&self) -> &Tensor {
        &self.b.logits
    }

    /// Bind groups the workspace holds (those of the decode step, made at its first token).
    pub fn bind_groups(&self) -> usize {
        self.step.len() + self.first.len()
    }
}

/// The chosen id of one token on its way back.
struct InFlight {
    slot: usize,
    index: wgpu::SubmissionIndex,
}

impl Model {
    /// Records one step: the token in `b.picked` through the LLM at position `cache.len`, its logits into
    /// `b.logits`.
    fn record_step(&self, rec: &mut Recorder, b: &StepBuffers, cache: &mut KvCache) -> Result<()> {
        self.llm.embed_ids(rec, &b.picked, &b.x)?;
        self.llm.forward(rec, &b.x, cache, &b.layers)?;
        self.record_logits(rec, b)
    }

    /// The logits of `b.x` into `b.logits` (and the greedy choice's first pass into `b.maxima`).
    pub(crate) fn record_logits(&self, rec: &mut Recorder, b: &StepBuffers) -> Result<()> {
        self.llm.logits(rec, &b.x, &b.normed, &b.logits, b.maxima.as_ref())
    }

    /// The next token from the logits in `b` into `b.picked`: greedy from lm_head's maxima where it wrote
    /// them, else `sample::sample` over the logits.
    fn choose(rec: &mut Recorder, b: &StepBuffers, args: SampleArgs, u: f32) -> Result<()> {
        match &b.maxima {
            Some(maxima) if args.is_greedy() => sample::argmax_of_maxima(rec, maxima, maxima.len() / 2, &b.picked),
            _ => sample::sample(rec, &b.logits, &b.picked, &b.sample_scratch, args, u.min(0.999_999)),
        }
    }

    /// Samples the logits in `ws` on the GPU, and queues the id's copy into the next ring buffer.
    fn sample_into_ring(ws_b: &StepBuffers, ring: &[GpuBuffer], slot: usize, rec: &mut Recorder, args: SampleArgs, u: f32) -> Result<()> {
        Self::choose(rec, ws_b, args, u)?;
        rec.copy(&ws_b.picked.buffer, 0, &ring[slot], 0, 4);
        Ok(())
    }

    /// Teacher forcing: token `id` through the LLM at position `cache.len`; its logits into `ws`.
    pub fn step(&self, ctx: &Context, ws: &mut Workspace, cache: &mut KvCache, id: u32) -> Result<()> {
        ctx.queue.write_buffer(&ws.b.picked.buffer, 0, bytemuck::bytes_of(&id));
        let mut rec = Recorder::reusing(ctx, &mut ws.step);
        self.record_step(&mut rec, &ws.b, cache)?;
        rec.submit()
    }

    /// The logits in `ws` as f32, on the CPU.
    pub async fn read_logits(&self, ctx: &Context, ws: &mut Workspace) -> Result<Vec<f32>> {
        let n = ws.b.logits.len();
        let bytes = (n * ws.b.logits.dtype.size()) as u64;
        let readback = ws.readback.get_or_insert_with(|| {
            ctx.create_buffer(&wgpu::BufferDescriptor {
                label: Some("logits"),
                size: (ws.b.logits.buffer.size()).next_multiple_of(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&ws.b.logits.buffer, 0, readback, 0, bytes.next_multiple_of(4));
        let index = ctx.queue.submit([enc.finish()]);
        let raw = ctx.read_mapped(readback, index).await?;
        Ok(match ws.b.logits.dtype {
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(&raw[..n * 2]).iter().map(|h| h.to_f32()).collect(),
            _ => bytemuck::pod_collect_to_vec::<u8, f32>(&raw[..n * 4]),
        })
    }

    /// Decodes up to `budget` tokens after the logits in `ws` (a prefill's), choosing each on the GPU with
    /// `args` and a uniform draw from `uniform`; `on_token` gets each id in order and returns false to stop.
    /// The tokens run through the LLM are appended to `cache` (every token handed to `on_token` but the
    /// last of a full budget).
    #[allow(clippy::too_many_arguments)]
    pub async fn decode(
        &self,
        ctx: &Context,
        ws: &mut Workspace,
        cache: &mut KvCache,
        budget: usize,
        args: SampleArgs,
        uniform: &mut dyn FnMut() -> f32,
        on_token: &mut dyn FnMut(u32) -> Result<bool>,
    ) -> Result<()> {
        if budget == 0 {
            return Ok(());
        }
        let Workspace { b, step, first, ring, next, .. } = ws;
        let mut queue = std::collections::VecDeque::new();
        {
            let mut rec = Recorder::reusing(ctx, first);
            Self::sample_into_ring(b, ring, *next, &mut rec, args, uniform())?;
            queue.push_back(InFlight { slot: *next, index: rec.submit_index() });
            *next = (*next + 1) % RING;
        }
        let mut queued = 1;
        let mut done = 0;
        while let Some(t) = queue.pop_front() {
            if queued < budget {
                let mut rec = Recorder::reusing(ctx, step);
                self.record_step(&mut rec, b, cache)?;
                Self::sample_into_ring(b, ring, *next, &mut rec, args, uniform())?;
                queue.push_back(InFlight { slot: *next, index: rec.submit_index() });
                *next = (*next + 1) % RING;
                queued += 1;
            }
            done += 1;
            let bytes = ctx.read_mapped(&ring[t.slot], t.index).await?;
            let id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            if !on_token(id)? || done == budget {
                break;
            }
        }
        Ok(())
    }

    /// `ids` run as one prefill chunk at position `cache.len` (a short prompt after a context), each dispatch
    /// in its own pass between timestamps, as [`Model::profile_step`].
    pub async fn profile_prefill(&self, ctx: &Context, ids: &[u32], cache: &mut KvCache, ws: &Workspace) -> Result<Option<Vec<(String, f64)>>> {
        let inputs = [crate::model::Input::Tokens(ids)];
        let mut p = self.start_prefill(ctx, &inputs, cache, ids.len())?;
        ctx.sync().await?;
        let mut rec = Recorder::new(ctx);
        let row = (self.cfg.text.hidden * self.llm.act.size()) as u64;
        let x = p.x.rows(ids.len());
        rec.copy(&p.x_all.buffer, 0, &x.buffer, 0, ids.len() as u64 * row);
        self.llm.forward(&mut rec, &x, cache, &p.bufs)?;
        rec.copy(&x.buffer, (ids.len() - 1) as u64 * row, &ws.b.x.buffer, 0, row);
        self.record_logits(&mut rec, &ws.b)?;
        p.done = p.len;
        rec.submit_profiled().await
    }

    /// One decode step and its sampler at position `cache.len`, each dispatch in its own pass between
    /// timestamps (a profile: the extra passes cost time of their own): (pipeline label, seconds) per
    /// dispatch; None without timestamp queries.
    pub async fn profile_step(&self, ctx: &Context, ws: &Workspace, cache: &mut KvCache) -> Result<Option<Vec<(String, f64)>>> {
        let mut rec = Recorder::new(ctx);
        self.record_step(&mut rec, &ws.b, cache)?;
        Self::choose(&mut rec, &ws.b, SampleArgs::ARGMAX, 0.5)?;
        rec.submit_profiled().await
    }
}
