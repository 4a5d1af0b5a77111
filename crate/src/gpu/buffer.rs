//! A GPU buffer that gives its memory back when its last handle goes, and the counts of what is alive.
//!
//! Natively wgpu frees a buffer when it is dropped. In a browser it does not: wgpu's web backend leaves the
//! `GPUBuffer` to JavaScript's garbage collector, which knows nothing of GPU memory, so a request's
//! activations (hundreds of MB for the 14B) would linger until some later collection — a tab that grows
//! request after request. A `GpuBuffer` calls `destroy()` when its last clone is dropped (the GPU finishes
//! any work already submitted with it first), and keeps live counts of buffers, their bytes and bind groups
//! ([`Live`]) that mean the same on both targets.

use std::ops::Deref;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// What is alive on the device, as the library made it.
#[derive(Debug, Default)]
pub struct Live {
    pub buffers: AtomicI64,
    pub bytes: AtomicI64,
    pub bind_groups: AtomicI64,
    /// The most bytes alive at any moment (the browser's only peak-memory figure).
    pub peak_bytes: AtomicI64,
}

/// A snapshot of [`Live`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveCounts {
    pub buffers: i64,
    pub bytes: i64,
    pub bind_groups: i64,
}

impl Live {
    pub fn counts(&self) -> LiveCounts {
        LiveCounts {
            buffers: self.buffers.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            bind_groups: self.bind_groups.load(Ordering::Relaxed),
        }
    }
}

struct Owned {
    buffer: wgpu::Buffer,
    live: Arc<Live>,
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.buffer.destroy();
        self.live.buffers.fetch_sub(1, Ordering::Relaxed);
        self.live.bytes.fetch_sub(self.buffer.size() as i64, Ordering::Relaxed);
    }
}

/// A buffer handle (cheap to clone); the buffer is destroyed when the last clone goes.
#[derive(Clone)]
pub struct GpuBuffer(Arc<Owned>);

impl GpuBuffer {
    pub(crate) fn new(buffer: wgpu::Buffer, live: &Arc<Live>) -> Self {
        live.buffers.fetch_add(1, Ordering::Relaxed);
        let now = live.bytes.fetch_add(buffer.size() as i64, Ordering::Relaxed) + buffer.size() as i64;
        live.peak_bytes.fetch_max(now, Ordering::Relaxed);
        GpuBuffer(Arc::new(Owned { buffer, live: live.clone() }))
    }
}

impl Deref for GpuBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        &self.0.buffer
    }
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer({} bytes)", self.0.buffer.size())
    }
}

impl PartialEq for GpuBuffer {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }
}
impl Eq for GpuBuffer {}
impl std::hash::Hash for GpuBuffer {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(h)
    }
}

/// A bind group counted in [`Live`] while it exists.
pub(crate) struct CountedGroup {
    pub group: wgpu::BindGroup,
    live: Arc<Live>,
}

impl CountedGroup {
    pub fn new(group: wgpu::BindGroup, live: &Arc<Live>) -> Self {
        live.bind_groups.fetch_add(1, Ordering::Relaxed);
        CountedGroup { group, live: live.clone() }
    }
}

impl Drop for CountedGroup {
    fn drop(&mut self) {
        self.live.bind_groups.fetch_sub(1, Ordering::Relaxed);
    }
}
