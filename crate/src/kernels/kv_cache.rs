//! Appending to the KV cache (kv_cache.wgsl).

use crate::gpu::shader::KV_CACHE;
use crate::gpu::{Binding, Recorder, Tensor};
use crate::kernels::{base_defines, check, grid, same_dtype, WG};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_tokens: u32,
    kv_heads: u32,
    head_dim: u32,
    capacity: u32,
    pos: u32,
    src_stride: u32,
    k_offset: u32,
    v_offset: u32,
}

/// Writes the K heads at column `k_offset` and the V heads at `v_offset` of each of the first `n_tokens` rows
/// of `qkv` into `k` and `v` `(kv_heads, capacity, head_dim)` at positions `pos ..`.
#[allow(clippy::too_many_arguments)]
pub fn append(rec: &mut Recorder, qkv: &Tensor, k: &Tensor, v: &Tensor, n_tokens: u32, pos: u32, k_offset: u32, v_offset: u32) -> Result<()> {
    let act = same_dtype("kv_cache", &[qkv, k, v])?;
    let (kv_heads, capacity, head_dim) = (k.shape[0] as u32, k.shape[1] as u32, k.shape[2] as u32);
    check("kv_cache", pos + n_tokens <= capacity, || format!("{} tokens do not fit a cache of {capacity}", pos + n_tokens))?;
    let src_stride = *qkv.shape.last().unwrap() as u32;
    let params = Params { n_tokens, kv_heads, head_dim, capacity, pos, src_stride, k_offset, v_offset };
    let pipeline = rec.ctx.pipeline(&KV_CACHE, &base_defines(rec.ctx, act, WG)?)?;
    let n = n_tokens * kv_heads * head_dim;
    let b = vec![Binding::new(1, &qkv.buffer), Binding::new(2, &k.buffer), Binding::new(3, &v.buffer)];
    rec.dispatch(pipeline, &params, b, grid(rec.ctx, n.div_ceil(WG), 1));
    Ok(())
}
