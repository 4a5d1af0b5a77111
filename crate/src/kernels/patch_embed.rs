//! SigLIP patch embedding: im2col (patch_embed.wgsl) then the f16-weight matmul with the Conv2d weight
//! viewed as `(out_channels, channels·patch²)`.

use crate::gpu::shader::PATCH_EMBED;
use crate::gpu::tensor::Weight;
use crate::gpu::{Binding, DType, Recorder, Tensor};
use crate::kernels::{base_defines, check, grid, linear, WG};
use crate::Result;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_tiles: u32,
    size: u32,
    patch: u32,
    grid: u32,
    channels: u32,
    _p: [u32; 3],
}

/// Geometry of the patch embedding.
#[derive(Clone, Copy, Debug)]
pub struct PatchGeometry {
    pub size: u32,
    pub patch: u32,
    pub channels: u32,
}

impl PatchGeometry {
    pub fn grid(&self) -> u32 {
        self.size / self.patch
    }
    pub fn cols(&self) -> u32 {
        self.channels * self.patch * self.patch
    }
}

/// `pixels` f32 `(tiles, channels, size, size)` → `cols` `(tiles·grid², channels·patch²)`.
pub fn im2col(rec: &mut Recorder, pixels: &Tensor, cols: &Tensor, g: PatchGeometry) -> Result<()> {
    check("patch_embed", pixels.dtype == DType::F32, || "pixels must be f32".into())?;
    let per_tile = (g.channels * g.size * g.size) as usize;
    let tiles = pixels.len() / per_tile;
    check("patch_embed", pixels.len() == tiles * per_tile && tiles > 0, || format!("pixels {:?} are not whole tiles", pixels.shape))?;
    let n = tiles as u32 * g.grid() * g.grid() * g.cols();
    check("patch_embed", cols.len() == n as usize, || format!("cols {:?} should hold {n} values", cols.shape))?;
    let defines = base_defines(rec.ctx, cols.dtype, WG)?;
    let pipeline = rec.ctx.pipeline(&PATCH_EMBED, &defines)?;
    let params = Params { n_tiles: tiles as u32, size: g.size, patch: g.patch, grid: g.grid(), channels: g.channels, _p: [0; 3] };
    rec.dispatch(pipeline, &params, vec![Binding::new(1, &pixels.buffer), Binding::new(2, &cols.buffer)], grid(rec.ctx, n.div_ceil(WG), 1));
    Ok(())
}

/// The whole patch embedding: `out` `(tiles·grid², hidden)` = conv(pixels) + bias. `cols` is scratch.
pub fn patch_embed(rec: &mut Recorder, pixels: &Tensor, w: &Weight, bias: &Tensor, cols: &Tensor, out: &Tensor, g: PatchGeometry) -> Result<()> {
    im2col(rec, pixels, cols, g)?;
    linear::matmul(rec, cols, w, Some(bias), out)
}
