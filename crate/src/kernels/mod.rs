//! Typed constructors for the WGSL kernels in `shaders/`: each checks shapes, picks the variant (activation
//! type from the tensors, subgroups from the context, tile sizes from the limits), and records dispatches.
//! One file per shader family.

pub mod attention;
pub mod elementwise;
pub mod embed;
pub mod linear;
pub mod norm;
pub mod patch_embed;
pub mod resize;
pub mod rope;
pub mod sample;

use crate::gpu::{Context, DType, Defines, Tensor};
use crate::{Error, Result};

/// Invocations per workgroup of the simple (one invocation per element) kernels and of row reductions.
pub const WG: u32 = 256;

/// The defines every kernel shares: activation type, subgroups, workgroup size.
pub(crate) fn base_defines(ctx: &Context, act: DType, wg: u32) -> Result<Defines> {
    let f16 = match act {
        DType::F32 => false,
        DType::F16 => {
            if !ctx.caps.f16 {
                return Err(Error::kernel("defines", "f16 activations need shader-f16, which this device lacks"));
            }
            true
        }
        DType::U32 => return Err(Error::kernel("defines", "u32 is not an activation type")),
    };
    Ok(Defines::new().flag_if("ACT_F16", f16).flag_if("SUBGROUP", ctx.caps.subgroups).value("WG", wg))
}

/// A grid of `n` workgroups, folded over x and z when it exceeds the per-dimension limit.
pub(crate) fn grid(ctx: &Context, n: u32, y: u32) -> [u32; 3] {
    let max = ctx.caps.max_workgroups_per_dim.min(65535);
    if n <= max {
        [n, y, 1]
    } else {
        let z = n.div_ceil(max);
        [n.div_ceil(z), y, z]
    }
}

pub(crate) fn same_dtype(kernel: &'static str, tensors: &[&Tensor]) -> Result<DType> {
    let d = tensors[0].dtype;
    if tensors.iter().any(|t| t.dtype != d) {
        return Err(Error::kernel(kernel, "all activation tensors must have the same dtype"));
    }
    Ok(d)
}

pub(crate) fn check(kernel: &'static str, ok: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::kernel(kernel, msg()))
    }
}
