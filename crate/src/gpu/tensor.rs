//! Activation tensors (one buffer each) and weight matrices (split over several buffers when larger than one
//! storage binding may be).
//!
//! Splitting is by whole rows of the `(n, k)` weight: part `i` holds rows `parts[i].rows`. Kernels see one
//! contiguous matrix per part and an output offset, so a split weight is invisible to the WGSL; the Rust
//! constructors in `kernels/` issue one dispatch per part.

use std::ops::Range;

use half::f16;

use crate::gpu::{Context, GpuBuffer};
use crate::quant::{QFormat, QMatrix, GROUP};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    U32,
}

impl DType {
    /// An activation type by name, as options give it: `f16` or `f32`.
    pub fn parse_act(name: &str) -> crate::Result<DType> {
        match name {
            "f32" => Ok(DType::F32),
            "f16" => Ok(DType::F16),
            other => Err(crate::Error::Request(format!("activations {other:?}: expected f16 or f32"))),
        }
    }

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
    pub buffer: GpuBuffer,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl Tensor {
    /// An uninitialised tensor (contents unspecified).
    pub fn empty(ctx: &Context, shape: &[usize], dtype: DType) -> Result<Self> {
        let bytes = Self::bytes_for(shape, dtype);
        check_binding(ctx, "tensor", bytes)?;
        let buffer = ctx.create_buffer(&wgpu::BufferDescriptor {
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

    /// Uploads raw little-endian bytes of `dtype` values.
    pub fn from_bytes(ctx: &Context, mut bytes: Vec<u8>, shape: &[usize], dtype: DType) -> Result<Self> {
        check_binding(ctx, "tensor", bytes.len() as u64)?;
        bytes.resize(Self::bytes_for(shape, dtype) as usize, 0);
        Ok(Tensor { buffer: upload(ctx, &bytes), shape: shape.to_vec(), dtype })
    }

    /// Buffer size: at least 16 bytes and a multiple of 16, so vec4 views never read past the end.
    fn bytes_for(shape: &[usize], dtype: DType) -> u64 {
        let n = shape.iter().product::<usize>() * dtype.size();
        (n.max(16) as u64).next_multiple_of(16)
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The same buffer seen as its first `rows` rows (no copy, no allocation): a pass over fewer tokens than
    /// its buffers were made for.
    pub fn rows(&self, rows: usize) -> Tensor {
        assert!(rows <= self.shape[0], "{rows} rows of a tensor of {:?}", self.shape);
        let mut shape = self.shape.clone();
        shape[0] = rows;
        Tensor { buffer: self.buffer.clone(), shape, dtype: self.dtype }
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    /// 4-bit, see [`crate::quant`].
    Q4,
    /// 8-bit, see [`crate::quant`].
    Q8,
    /// f16, rows padded with zeros to a multiple of 8 elements (one `vec4<u32>`).
    F16,
}

impl WeightFormat {
    pub fn quant(self) -> Option<QFormat> {
        match self {
            WeightFormat::Q4 => Some(QFormat::Q4),
            WeightFormat::Q8 => Some(QFormat::Q8),
            WeightFormat::F16 => None,
        }
    }

    /// Bytes per row of the data array (codes, or padded f16 values); saturating, so that a size read from
    /// a damaged file is refused by the checks, not an overflow.
    pub fn row_bytes(self, k: usize) -> u64 {
        let k = k as u64;
        match self.quant() {
            Some(q) => k.div_ceil(GROUP as u64).saturating_mul(q.words_per_group() as u64 * 4),
            None => k.saturating_add(7).saturating_mul(2) / 16 * 16,
        }
    }

    /// 16-byte blocks per row (what the kernels call `kb`).
    pub fn blocks_per_row(self, k: usize) -> u32 {
        (self.row_bytes(k) / 16) as u32
    }

    /// Bytes of the data array and of the scale array (f16 scales padded to an even count; 0 for F16) of an
    /// `(n, k)` matrix: the layout the converter writes and the loader uploads.
    pub fn array_bytes(self, n: usize, k: usize) -> (u64, u64) {
        let scales = match self.quant() {
            Some(_) => ((n as u64).saturating_mul((k as u64).div_ceil(GROUP as u64)).saturating_add(1) / 2).saturating_mul(4),
            None => 0,
        };
        ((n as u64).saturating_mul(self.row_bytes(k)), scales)
    }
}

/// One buffer-sized slice of a weight: rows `rows` of the full matrix.
#[derive(Clone, Debug)]
pub struct WeightPart {
    pub rows: Range<usize>,
    /// The codes (Q4, Q8) or values (F16).
    pub data: GpuBuffer,
    /// Quantized formats only: f16 scales, two per u32.
    pub scales: Option<GpuBuffer>,
}

/// Where a part's bytes come from: byte ranges of the whole matrix's data and scale arrays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartLayout {
    pub rows: Range<usize>,
    pub data: Range<u64>,
    pub scales: Option<Range<u64>>,
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
    /// How an `(n, k)` matrix is cut into parts of at most `limit` bytes: whole rows, an even number per part
    /// so that two-per-u32 scales never straddle parts. Each part is a contiguous range of the data array
    /// and of the scale array, so a stored matrix uploads without repacking.
    pub fn layout(format: WeightFormat, n: usize, k: usize, limit: u64) -> Result<Vec<PartLayout>> {
        let row = format.row_bytes(k);
        let per = ((limit / row) as usize) & !1;
        if per == 0 {
            return Err(Error::TooLarge { what: "two weight rows".into(), needed: 2 * row, limit });
        }
        let (data_len, scales_len) = format.array_bytes(n, k);
        let srow = (k.div_ceil(GROUP) * 2) as u64;
        let mut parts = Vec::new();
        let mut r0 = 0;
        while r0 < n {
            let r1 = (r0 + per).min(n);
            let last = r1 == n;
            let data = r0 as u64 * row..if last { data_len } else { r1 as u64 * row };
            let scales = format.quant().map(|_| r0 as u64 * srow..if last { scales_len } else { r1 as u64 * srow });
            parts.push(PartLayout { rows: r0..r1, data, scales });
            r0 = r1;
        }
        Ok(parts)
    }

    /// A weight whose buffers are allocated but not written (the loader fills them from a stream).
    pub fn empty(ctx: &Context, format: WeightFormat, n: usize, k: usize, limit: u64) -> Result<(Self, Vec<PartLayout>)> {
        let layout = Self::layout(format, n, k, limit.min(ctx.caps.max_binding))?;
        let alloc = |r: &Range<u64>| {
            ctx.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: (r.end - r.start).max(16).next_multiple_of(16),
                usage: STORAGE,
                mapped_at_creation: false,
            })
        };
        let parts = layout
            .iter()
            .map(|p| WeightPart { rows: p.rows.clone(), data: alloc(&p.data), scales: p.scales.as_ref().map(alloc) })
            .collect();
        Ok((Weight { format, n, k, parts }, layout))
    }

    /// Uploads a matrix given its data and scale arrays in the stored layout (see [`WeightFormat::array_bytes`]).
    pub fn from_arrays(ctx: &Context, format: WeightFormat, n: usize, k: usize, data: &[u8], scales: &[u8], limit: u64) -> Result<Self> {
        let (dl, sl) = format.array_bytes(n, k);
        if data.len() as u64 != dl || scales.len() as u64 != sl {
            return Err(Error::Checkpoint(format!(
                "a {format:?} ({n}, {k}) weight has {dl} + {sl} bytes, not {} + {}",
                data.len(),
                scales.len()
            )));
        }
        let layout = Self::layout(format, n, k, limit.min(ctx.caps.max_binding))?;
        let slice = |b: &[u8], r: &Range<u64>| b[r.start as usize..r.end as usize].to_vec();
        let parts = layout
            .iter()
            .map(|p| WeightPart {
                rows: p.rows.clone(),
                data: upload(ctx, &slice(data, &p.data)),
                scales: p.scales.as_ref().map(|r| upload(ctx, &slice(scales, r))),
            })
            .collect();
        Ok(Weight { format, n, k, parts })
    }

    /// Uploads a quantized matrix, split by rows under the binding limit.
    pub fn from_q(ctx: &Context, q: &QMatrix) -> Result<Self> {
        Self::from_q_limited(ctx, q, ctx.caps.max_binding)
    }

    /// As [`Weight::from_q`], with parts of at most `limit` bytes (≤ the binding limit).
    pub fn from_q_limited(ctx: &Context, q: &QMatrix, limit: u64) -> Result<Self> {
        let format = match q.format {
            QFormat::Q4 => WeightFormat::Q4,
            QFormat::Q8 => WeightFormat::Q8,
        };
        Self::from_arrays(ctx, format, q.n, q.k, bytemuck::cast_slice(&q.qs), bytemuck::cast_slice(&q.scales), limit)
    }

    /// Uploads an f16 matrix given row-major `(n, k)` values, split by rows under the binding limit.
    pub fn from_f16(ctx: &Context, values: &[f16], n: usize, k: usize) -> Result<Self> {
        Self::from_f16_limited(ctx, values, n, k, ctx.caps.max_binding)
    }

    /// As [`Weight::from_f16`], with parts of at most `limit` bytes (≤ the binding limit).
    pub fn from_f16_limited(ctx: &Context, values: &[f16], n: usize, k: usize, limit: u64) -> Result<Self> {
        assert_eq!(values.len(), n * k);
        Self::from_arrays(ctx, WeightFormat::F16, n, k, &f16_rows_padded(values, k), &[], limit)
    }

    /// Bytes this weight occupies on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.data.size() + p.scales.as_ref().map_or(0, |s| s.size())).sum()
    }
}

/// Row-major f16 values of rows of `k` as the F16 weight layout stores them: rows zero-padded to
/// [`f16_row_len`].
pub fn f16_rows_padded(values: &[f16], k: usize) -> Vec<u8> {
    let kp = f16_row_len(k);
    let rows = values.len() / k;
    let mut padded = vec![f16::ZERO; rows * kp];
    for r in 0..rows {
        padded[r * kp..r * kp + k].copy_from_slice(&values[r * k..(r + 1) * k]);
    }
    bytemuck::cast_slice(&padded).to_vec()
}

/// A read-only storage buffer with `bytes`, padded to 16 bytes.
pub(crate) fn upload(ctx: &Context, bytes: &[u8]) -> GpuBuffer {
    let len = (bytes.len().max(16)).next_multiple_of(16);
    let buffer = ctx.create_buffer(&wgpu::BufferDescriptor {
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
