//! Rotary position embedding (rope.wgsl), Qwen2 semantics. [`Rope`] holds the inverse frequencies, computed
//! on the CPU exactly as transformers does (f32 `1 / theta^(2i/D)`), so the GPU only multiplies by the
//! position and reduces the angle.

use crate::gpu::shader::ROPE;
use crate::gpu::{Binding, Context, DType, Recorder, Tensor};
use crate::kernels::{base_defines, check, grid, WG};
use crate::Result;

pub struct Rope {
    pub head_dim: u32,
    pub theta: f64,
    inv_freq: Tensor,
}

/// transformers' `inv_freq`: `1.0 / (theta ** (arange(0, D, 2).float() / D))`, in f32.
pub fn inv_freq(head_dim: u32, theta: f64) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let e = (2 * i) as f32 / head_dim as f32;
            1.0f32 / (theta as f32).powf(e)
        })
        .collect()
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_tokens: u32,
    n_heads: u32,
    head_dim: u32,
    stride: u32,
    offset: u32,
    pos_offset: u32,
    _p: [u32; 2],
}

impl Rope {
    /// The inverse frequencies `(head_dim / 2)`, f32.
    pub fn inv_freq(&self) -> &Tensor {
        &self.inv_freq
    }

    pub fn new(ctx: &Context, head_dim: u32, theta: f64) -> Result<Self> {
        let f = inv_freq(head_dim, theta);
        Ok(Rope { head_dim, theta, inv_freq: Tensor::from_f32(ctx, &f, &[f.len()], DType::F32)? })
    }

    /// Rotates `n_heads` heads starting at column `offset` of each of the `n_tokens` rows of `x` (row
    /// stride = x's last dimension), token t at position `pos_offset + t`.
    pub fn apply(&self, rec: &mut Recorder, x: &Tensor, n_tokens: u32, n_heads: u32, offset: u32, pos_offset: u32) -> Result<()> {
        let stride = *x.shape.last().unwrap() as u32;
        check("rope", self.head_dim % 2 == 0 && offset + n_heads * self.head_dim <= stride, || {
            format!("{n_heads} heads of {} at column {offset} do not fit rows of {stride}", self.head_dim)
        })?;
        check("rope", (n_tokens as usize) * (stride as usize) <= x.len(), || "x has fewer rows than n_tokens".into())?;
        let defines = base_defines(rec.ctx, x.dtype, WG)?;
        let pipeline = rec.ctx.pipeline(&ROPE, &defines)?;
        let params = Params { n_tokens, n_heads, head_dim: self.head_dim, stride, offset, pos_offset, _p: [0; 2] };
        let n = n_tokens * n_heads * self.head_dim / 2;
        let b = vec![Binding::new(1, &x.buffer), Binding::new(2, &self.inv_freq.buffer)];
        rec.dispatch(pipeline, &params, b, grid(rec.ctx, n.div_ceil(WG), 1));
        Ok(())
    }
}
