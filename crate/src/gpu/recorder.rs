//! Recording a step of work: dispatches are collected with their parameters, then turned into one compute
//! pass in one command buffer and submitted once.
//!
//! Parameters of all dispatches go into one uniform arena (each at an aligned offset), written with a single
//! `write_buffer` at submit; arena buffers are pooled in the [`Context`] so a steady loop allocates none.
//! A step recorded again and again over the same buffers (a decode step) goes through a [`StepCache`]: its
//! own arena and the bind groups of its dispatches, made at the first step and found again at every later
//! one, so that a token creates neither a buffer nor a bind group (in a browser each is a call into the
//! GPU process).

use std::collections::HashMap;
use std::sync::Arc;

use crate::gpu::buffer::CountedGroup;
use crate::gpu::{Context, GpuBuffer};
use crate::Result;

/// A storage buffer bound to `@binding(n)`: the whole buffer.
#[derive(Clone, Debug)]
pub struct Binding {
    pub binding: u32,
    pub buffer: GpuBuffer,
}

impl Binding {
    pub fn new(binding: u32, buffer: &GpuBuffer) -> Self {
        Binding { binding, buffer: buffer.clone() }
    }
}

enum Pending {
    Dispatch { pipeline: Arc<wgpu::ComputePipeline>, bindings: Vec<Binding>, params: (u64, u64), workgroups: [u32; 3] },
    /// A buffer-to-buffer copy, ordered between the dispatches around it (it ends the compute pass).
    Copy { src: GpuBuffer, src_offset: u64, dst: GpuBuffer, dst_offset: u64, size: u64 },
}

/// What identifies a dispatch's bind group: its pipeline, its slice of the arena and its storage buffers.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: usize,
    params: (u64, u64),
    buffers: Vec<(u32, GpuBuffer)>,
}

/// The parameter arena and bind groups of a step that is recorded many times with the same buffers (the
/// decode step): see the module header. The parameters of each recording are written into the arena only
/// where they differ from the last ones (a token's position changes a few of them).
#[derive(Default)]
pub struct StepCache {
    arena: Option<GpuBuffer>,
    /// What the arena holds now.
    written: Vec<u8>,
    groups: HashMap<BindKey, CountedGroup>,
}

impl StepCache {
    /// Bind groups held (one per distinct dispatch of the step).
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

pub struct Recorder<'c> {
    pub ctx: &'c Context,
    params: Vec<u8>,
    pending: Vec<Pending>,
    reuse: Option<&'c mut StepCache>,
}

impl<'c> Recorder<'c> {
    pub fn new(ctx: &'c Context) -> Self {
        Recorder { ctx, params: Vec::new(), pending: Vec::new(), reuse: None }
    }

    /// A recorder whose arena and bind groups come from `cache` (and are kept there for the next time).
    pub fn reusing(ctx: &'c Context, cache: &'c mut StepCache) -> Self {
        Recorder { ctx, params: Vec::new(), pending: Vec::new(), reuse: Some(cache) }
    }

    /// Queues one dispatch. `params` is bound as a uniform at `@binding(0)`.
    pub fn dispatch<P: bytemuck::Pod>(
        &mut self,
        pipeline: Arc<wgpu::ComputePipeline>,
        params: &P,
        bindings: Vec<Binding>,
        workgroups: [u32; 3],
    ) {
        let align = self.ctx.caps.min_uniform_offset_alignment.max(16) as usize;
        let offset = self.params.len().next_multiple_of(align);
        self.params.resize(offset, 0);
        let bytes = bytemuck::bytes_of(params);
        self.params.extend_from_slice(bytes);
        let size = (bytes.len() as u64).next_multiple_of(16);
        self.params.resize(offset + size as usize, 0);
        if workgroups.iter().any(|&w| w == 0) {
            return;
        }
        self.ctx.stats.dispatches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pending.push(Pending::Dispatch { pipeline, bindings, params: (offset as u64, size), workgroups });
    }

    /// Queues a copy of `size` bytes (a multiple of 4, offsets too) after the dispatches recorded so far.
    pub fn copy(&mut self, src: &GpuBuffer, src_offset: u64, dst: &GpuBuffer, dst_offset: u64, size: u64) {
        debug_assert!(size % 4 == 0 && src_offset % 4 == 0 && dst_offset % 4 == 0);
        if size > 0 {
            self.pending.push(Pending::Copy { src: src.clone(), src_offset, dst: dst.clone(), dst_offset, size });
        }
    }

    /// Number of dispatches recorded so far (copies not counted).
    pub fn len(&self) -> usize {
        self.pending.iter().filter(|p| matches!(p, Pending::Dispatch { .. })).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes everything into one compute pass and submits it.
    pub fn submit(self) -> Result<()> {
        self.encode_and_submit(None);
        Ok(())
    }

    /// As [`Recorder::submit`], returning the submission's index (to wait for it alone).
    pub fn submit_index(self) -> wgpu::SubmissionIndex {
        self.encode_and_submit(None)
    }

    /// Submits like [`Recorder::submit`], waits, and returns the GPU time of the pass in seconds, measured
    /// with timestamp queries (None where the device has none).
    pub async fn submit_timed(self) -> Result<Option<f64>> {
        let ctx = self.ctx;
        if !ctx.caps.timestamps {
            self.submit()?;
            ctx.sync().await?;
            return Ok(None);
        }
        let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor { label: None, ty: wgpu::QueryType::Timestamp, count: 2 });
        let resolve = ctx.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        self.encode_and_submit(Some((&set, &*resolve)));
        let bytes = ctx.read_bytes(&resolve, 0, 16).await?;
        let t: &[u64] = bytemuck::cast_slice(&bytes);
        let ns = t[1].saturating_sub(t[0]) as f64 * ctx.queue.get_timestamp_period() as f64;
        Ok(Some(ns * 1e-9))
    }

    /// Submits with every dispatch in its own compute pass between two timestamps, waits, and returns each
    /// dispatch's pipeline label and GPU time in seconds (None without timestamp queries). For profiles:
    /// the extra passes cost some time of their own.
    pub async fn submit_profiled(self) -> Result<Option<Vec<(String, f64)>>> {
        let ctx = self.ctx;
        let n = self.pending.iter().filter(|p| matches!(p, Pending::Dispatch { .. })).count() as u32;
        if !ctx.caps.timestamps || n == 0 {
            self.submit()?;
            ctx.sync().await?;
            return Ok(None);
        }
        let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor { label: None, ty: wgpu::QueryType::Timestamp, count: 2 * n });
        let resolve = ctx.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: 16 * n as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let arena = self.pooled_arena();
        let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
        let mut names = Vec::new();
        for p in &self.pending {
            match p {
                Pending::Dispatch { pipeline, bindings, params, workgroups } => {
                    let q = 2 * names.len() as u32;
                    let counted = bind_group(ctx, &arena, pipeline, bindings, *params);
                    let bg = counted.group.clone();
                    let timestamp_writes =
                        Some(wgpu::ComputePassTimestampWrites { query_set: &set, beginning_of_pass_write_index: Some(q), end_of_pass_write_index: Some(q + 1) });
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes });
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, &bg, &[]);
                    pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
                    names.push(ctx.pipeline_name(pipeline));
                }
                Pending::Copy { src, src_offset, dst, dst_offset, size } => enc.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *size),
            }
        }
        enc.resolve_query_set(&set, 0..2 * n, &resolve, 0);
        ctx.queue.submit([enc.finish()]);
        ctx.note_submit();
        ctx.params_pool.lock().unwrap().push(arena);
        let bytes = ctx.read_bytes(&resolve, 0, 16 * n as u64).await?;
        let t: &[u64] = bytemuck::cast_slice(&bytes);
        let period = ctx.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(Some(names.into_iter().enumerate().map(|(i, name)| (name, t[2 * i + 1].saturating_sub(t[2 * i]) as f64 * period)).collect()))
    }

    /// A pooled uniform buffer holding every dispatch's parameters.
    fn pooled_arena(&self) -> GpuBuffer {
        let ctx = self.ctx;
        let size = arena_size(self.params.len());
        let arena = {
            let mut pool = ctx.params_pool.lock().unwrap();
            match pool.iter().position(|b| b.size() >= size) {
                Some(i) => pool.swap_remove(i),
                None => ctx.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: size.next_power_of_two(),
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
            }
        };
        ctx.queue.write_buffer(&arena, 0, &self.params);
        arena
    }

    /// The step cache's arena (made, or made larger, when the step needs more room; its bind groups go with
    /// an arena that is replaced), holding this recording's parameters.
    fn cached_arena(ctx: &Context, cache: &mut StepCache, params: &[u8]) -> GpuBuffer {
        let size = arena_size(params.len());
        if cache.arena.as_ref().is_none_or(|a| a.size() < size) {
            cache.arena = Some(ctx.create_buffer(&wgpu::BufferDescriptor {
                label: Some("step params"),
                size,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
            cache.groups.clear();
            cache.written.clear();
        }
        let arena = cache.arena.clone().expect("made above");
        // only the bytes that changed since the last step (write_buffer wants 4-byte multiples)
        let same = params.len() == cache.written.len();
        let first = if same { params.iter().zip(&cache.written).position(|(a, b)| a != b) } else { Some(0) };
        if let Some(first) = first {
            let last = if same { params.len() - params.iter().rev().zip(cache.written.iter().rev()).position(|(a, b)| a != b).unwrap_or(0) } else { params.len() };
            let (a, b) = (first / 4 * 4, last.next_multiple_of(4).min(params.len()));
            ctx.queue.write_buffer(&arena, a as u64, &params[a..b]);
            cache.written.clear();
            cache.written.extend_from_slice(params);
        }
        arena
    }

    fn encode_and_submit(mut self, timing: Option<(&wgpu::QuerySet, &wgpu::Buffer)>) -> wgpu::SubmissionIndex {
        let ctx = self.ctx;
        let mut reuse = self.reuse.take();
        let arena = match reuse.as_deref_mut() {
            Some(c) => Self::cached_arena(ctx, c, &self.params),
            None => self.pooled_arena(),
        };
        let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        // bind groups of this submission alone (counted while they live: until it is submitted)
        let mut transient = Vec::new();
        // Consecutive dispatches share one compute pass; a copy closes it. With timing, the first pass
        // writes the start and the last the end timestamp.
        let n_pass = 1 + self.pending.iter().filter(|p| matches!(p, Pending::Copy { .. })).count();
        let mut pass_no = 0;
        let mut i = 0;
        while i < self.pending.len() || pass_no < n_pass {
            let timestamp_writes = timing.map(|(set, _)| wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: (pass_no == 0).then_some(0),
                end_of_pass_write_index: (pass_no == n_pass - 1).then_some(1),
            });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes });
                while let Some(Pending::Dispatch { pipeline, bindings, params, workgroups }) = self.pending.get(i) {
                    let bg = match reuse.as_deref_mut() {
                        Some(c) => {
                            let key = BindKey {
                                pipeline: Arc::as_ptr(pipeline) as usize,
                                params: *params,
                                buffers: bindings.iter().map(|b| (b.binding, b.buffer.clone())).collect(),
                            };
                            c.groups.entry(key).or_insert_with(|| bind_group(ctx, &arena, pipeline, bindings, *params)).group.clone()
                        }
                        None => {
                            transient.push(bind_group(ctx, &arena, pipeline, bindings, *params));
                            transient.last().expect("just pushed").group.clone()
                        }
                    };
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, &bg, &[]);
                    pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
                    i += 1;
                }
            }
            pass_no += 1;
            if let Some(Pending::Copy { src, src_offset, dst, dst_offset, size }) = self.pending.get(i) {
                enc.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *size);
                i += 1;
            }
        }
        if let Some((set, buf)) = timing {
            enc.resolve_query_set(set, 0..2, buf, 0);
        }
        let index = ctx.queue.submit([enc.finish()]);
        drop(transient);
        ctx.note_submit();
        if reuse.is_none() {
            ctx.params_pool.lock().unwrap().push(arena);
        }
        index
    }
}

/// Bytes of an arena for `len` bytes of parameters.
fn arena_size(len: usize) -> u64 {
    (len.max(256) as u64).next_multiple_of(256)
}

/// The bind group of one dispatch: its slice of the parameter arena at binding 0, then its storage buffers.
fn bind_group(ctx: &Context, arena: &wgpu::Buffer, pipeline: &Arc<wgpu::ComputePipeline>, bindings: &[Binding], params: (u64, u64)) -> CountedGroup {
    let layout = ctx.bind_group_layout(pipeline);
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: arena, offset: params.0, size: wgpu::BufferSize::new(params.1) }),
    }];
    for b in bindings {
        entries.push(wgpu::BindGroupEntry { binding: b.binding, resource: b.buffer.as_entire_binding() });
    }
    ctx.stats.bind_groups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    CountedGroup::new(ctx.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &layout, entries: &entries }), &ctx.live)
}
