//! Embedding gather from a q4, q8 or f16 weight (embed.wgsl), one dispatch per buffer part of the weight.

use crate::gpu::shader::EMBED;
use crate::gpu::tensor::Weight;
use crate::gpu::{Binding, DType, Recorder, Tensor};
use crate::kernels::{base_defines, check, weight_defines};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_tokens: u32,
    k: u32,
    kb: u32,
    row_begin: u32,
    row_end: u32,
    out_stride: u32,
    _p: [u32; 2],
}

const EMBED_WG: u32 = 128;

/// `out[t, :] = W[tokens[t], :]` for u32 `tokens` `(T)`, `out` `(T, k)`. Ids ≥ vocab leave their row as it was.
pub fn embed(rec: &mut Recorder, tokens: &Tensor, w: &Weight, out: &Tensor) -> Result<()> {
    check("embed", tokens.dtype == DType::U32, || "token ids must be u32".into())?;
    let t = tokens.len();
    check("embed", out.len() == t * w.k, || format!("out {:?} is not ({t}, {})", out.shape, w.k))?;
    let defines = weight_defines(base_defines(rec.ctx, out.dtype, EMBED_WG)?, w.format);
    let pipeline = rec.ctx.pipeline(&EMBED, &defines)?;
    let kb = w.format.blocks_per_row(w.k);
    let (ty, tz) = if t <= 65535 { (t as u32, 1) } else { (65535, (t as u32).div_ceil(65535)) };
    for part in &w.parts {
        let params = Params {
            n_tokens: t as u32,
            k: w.k as u32,
            kb,
            row_begin: part.rows.start as u32,
            row_end: part.rows.end as u32,
            out_stride: w.k as u32,
            _p: [0; 2],
        };
        let mut b = vec![Binding::new(1, &tokens.buffer), Binding::new(2, &part.data), Binding::new(5, &out.buffer)];
        if let Some(s) = &part.scales {
            b.push(Binding::new(3, s));
        }
        rec.dispatch(pipeline.clone(), &params, b, [(w.k as u32).div_ceil(EMBED_WG), ty, tz]);
    }
    Ok(())
}
