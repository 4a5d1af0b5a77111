//! Activation tensors (one buffer each) and weight matrices (split over several buffers when larger than one
//! storage binding may be).
//!
//! Splitting is by whole rows of the `(n, k)` weight: part `i` holds rows `parts[i].rows`. Kernels see one
//! contiguous matrix per part and an output offset, so a split weight is invisible to the WGSL; the Rust
//! constructors in `kernels/` issue one dispatch per part.

use std::ops::Range;

use half::f16;
use wgpu::util::DeviceExt;

use crate::gpu::Context;
use crate::quant::{Q4Matrix, GROUP};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    U32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            DType::F32 | DType::U32 => 4,
        }
    }
}

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// An activation tensor: one storage buffer, row-major, `shape` in elements.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub buffer: wgpu::Buffer,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl Tensor {
    /// An uninitialised tensor (contents unspecified).
    pub fn empty(ctx: &Context, shape: &[usize], dtype: DType) -> Result<Self> {
        let bytes = Self::bytes_for(shape, dtype);
        check_binding(ctx, "tensor", bytes)?;
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: STORAGE,
            mapped_at_creation: false,
        });
        Ok(Tensor { buffer, shape: shape.to_vec(), dtype })
    }

    /// Uploads f32 values, converted to `dtype` (F32 or F16).
    pub fn from_f32(ctx: &Context, data: &[f32], shape: &[usize], dtype: DType) -> Result<Self> {
        assert_eq!(data.len(), shape.iter().product::<usize>(), "data does not match shape {shape:?}");
        let bytes: Vec<u8> = match dtype {
            DType::F32 => bytemuck::cast_slice(data).to_vec(),
            DType::F16 => {
                let h: Vec<f16> = data.iter().map(|&v| f16::from_f32(v)).collect();
                bytemuck::cast_slice(&h).to_vec()
            }
            DType::U32 => panic!("from_f32 into a u32 tensor"),
        };
        Self::from_bytes(ctx, bytes, shape, dtype)
    }

    pub fn from_u32(ctx: &Context, data: &[u32], shape: &[usize]) -> Result<Self> {
        Self::from_bytes(ctx, bytemuck::cast_slice(data).to_vec(), shape, DType::U32)
    }

    fn from_bytes(ctx: &Context, mut bytes: Vec<u8>, shape: &[usize], dtype: DType) -> Result<Self> {
        check_binding(ctx, "tensor", bytes.len() as u64)?;
        bytes.resize(Self::bytes_for(shape, dtype) as usize, 0);
        let buffer = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &bytes,
            usage: STORAGE,
        });
        Ok(Tensor { buffer, shape: shape.to_vec(), dtype })
    }

    /// Buffer size: at least 16 bytes and a multiple of 16, so vec4 views never read past the end.
    fn bytes_for(shape: &[usize], dtype: DType) -> u64 {
        let n = shape.iter().product::<usize>() * dtype.size();
        (n.max(16) as u64).next_multiple_of(16)
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills the tensor with a byte pattern (tests poison outputs before a kernel runs).
    pub fn fill_bytes(&self, ctx: &Context, byte: u8) {
        let data = vec![byte; self.buffer.size() as usize];
        ctx.queue.write_buffer(&self.buffer, 0, &data);
    }

    /// Reads the tensor back as f32 values.
    pub async fn to_f32(&self, ctx: &Context) -> Result<Vec<f32>> {
        let n = self.len();
        let bytes = ctx.read_bytes(&self.buffer, 0, (n * self.dtype.size()) as u64).await?;
        Ok(match self.dtype {
            DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(&bytes)[..n].to_vec(),
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(&bytes)[..n].iter().map(|h| h.to_f32()).collect(),
            DType::U32 => bytemuck::pod_collect_to_vec::<u8, u32>(&bytes)[..n].iter().map(|&u| u as f32).collect(),
        })
    }

    pub async fn to_u32(&self, ctx: &Context) -> Result<Vec<u32>> {
        let n = self.len();
        let bytes = ctx.read_bytes(&self.buffer, 0, (n * 4) as u64).await?;
        Ok(bytemuck::pod_collect_to_vec::<u8, u32>(&bytes)[..n].to_vec())
    }
}

fn check_binding(ctx: &Context, what: &str, bytes: u64) -> Result<()> {
    if bytes > ctx.caps.max_binding {
        return Err(Error::TooLarge { what: what.into(), needed: bytes, limit: ctx.caps.max_binding });
    }
    Ok(())
}

/// How a weight matrix is stored on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// 4-bit, see [`crate::quant`].
    Q4,
    /// f16, rows padded with zeros to a multiple of 8 elements (one `vec4<u32>`).
    F16,
}

/// One buffer-sized slice of a weight: rows `rows` of the full matrix.
#[derive(Clone, Debug)]
pub struct WeightPart {
    pub rows: Range<usize>,
    /// Q4: the packed nibbles; F16: the values.
    pub data: wgpu::Buffer,
    /// Q4 only: f16 scales, two per u32.
    pub scales: Option<wgpu::Buffer>,
}

/// A weight matrix `(n, k)`: `n` output rows of `k` inputs, as in a PyTorch `Linear.weight`.
#[derive(Clone, Debug)]
pub struct Weight {
    pub format: WeightFormat,
    pub n: usize,
    pub k: usize,
    pub parts: Vec<WeightPart>,
}

/// Elements per row of an f16 weight after padding.
pub fn f16_row_len(k: usize) -> usize {
    k.next_multiple_of(8)
}

impl Weight {
    /// Bytes per row of the largest buffer (the part that decides splitting).
    fn row_bytes(format: WeightFormat, k: usize) -> u64 {
        match format {
            WeightFormat::Q4 => (k.div_ceil(GROUP) * 16) as u64,
            WeightFormat::F16 => (f16_row_len(k) * 2) as u64,
        }
    }

    /// Rows per part under the binding limit, even so that two-per-u32 scales never straddle parts.
    fn rows_per_part(limit: u64, format: WeightFormat, n: usize, k: usize) -> Result<usize> {
        let row = Self::row_bytes(format, k);
        let rows = ((limit / row) as usize) & !1;
        if rows == 0 {
            return Err(Error::TooLarge { what: "two weight rows".into(), needed: 2 * row, limit });
        }
        Ok(rows.min(n.next_multiple_of(2)))
    }

    /// Uploads a quantized matrix, split by rows under the binding limit.
    pub fn from_q4(ctx: &Context, q: &Q4Matrix) -> Result<Self> {
        Self::from_q4_limited(ctx, q, ctx.caps.max_binding)
    }

    /// As [`Weight::from_q4`], with parts of at most `limit` bytes (≤ the binding limit).
    pub fn from_q4_limited(ctx: &Context, q: &Q4Matrix, limit: u64) -> Result<Self> {
        let per = Self::rows_per_part(limit.min(ctx.caps.max_binding), WeightFormat::Q4, q.n, q.k)?;
        let g = q.groups();
        let mut parts = Vec::new();
        let mut r0 = 0;
        while r0 < q.n {
            let r1 = (r0 + per).min(q.n);
            let data = &q.qs[r0 * g * 4..r1 * g * 4];
            let scales = &q.scales[r0 * g..r1 * g];
            parts.push(WeightPart {
                rows: r0..r1,
                data: upload(ctx, bytemuck::cast_slice(data)),
                scales: Some(upload(ctx, bytemuck::cast_slice(scales))),
            });
            r0 = r1;
        }
        Ok(Weight { format: WeightFormat::Q4, n: q.n, k: q.k, parts })
    }

    /// Uploads an f16 matrix given row-major `(n, k)` values, split by rows under the binding limit.
    pub fn from_f16(ctx: &Context, values: &[f16], n: usize, k: usize) -> Result<Self> {
        Self::from_f16_limited(ctx, values, n, k, ctx.caps.max_binding)
    }

    /// As [`Weight::from_f16`], with parts of at most `limit` bytes (≤ the binding limit).
    pub fn from_f16_limited(ctx: &Context, values: &[f16], n: usize, k: usize, limit: u64) -> Result<Self> {
        assert_eq!(values.len(), n * k);
        let per = Self::rows_per_part(limit.min(ctx.caps.max_binding), WeightFormat::F16, n, k)?;
        let kp = f16_row_len(k);
        let mut parts = Vec::new();
        let mut r0 = 0;
        while r0 < n {
            let r1 = (r0 + per).min(n);
            let mut padded = vec![f16::ZERO; (r1 - r0) * kp];
            for r in r0..r1 {
                padded[(r - r0) * kp..(r - r0) * kp + k].copy_from_slice(&values[r * k..(r + 1) * k]);
            }
            parts.push(WeightPart { rows: r0..r1, data: upload(ctx, bytemuck::cast_slice(&padded)), scales: None });
            r0 = r1;
        }
        Ok(Weight { format: WeightFormat::F16, n, k, parts })
    }

    /// Bytes this weight occupies on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.data.size() + p.scales.as_ref().map_or(0, |s| s.size())).sum()
    }
}

/// A read-only storage buffer with `bytes`, padded to 16 bytes.
pub(crate) fn upload(ctx: &Context, bytes: &[u8]) -> wgpu::Buffer {
    let len = (bytes.len().max(16)).next_multiple_of(16);
    let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: len as u64,
        usage: STORAGE,
        mapped_at_creation: true,
    });
    {
        let mut view = buffer.slice(..).get_mapped_range_mut().expect("a buffer mapped at creation maps");
        view.slice(..bytes.len()).copy_from_slice(bytes);
    }
    buffer.unmap();
    buffer
}
