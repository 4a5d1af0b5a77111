//! Typed constructors for the WGSL kernels in `shaders/`: each checks shapes, picks the variant (activation
//! type from the tensors, subgroups from the context, tile sizes from the limits), and records dispatches.
//! One file per shader family.

pub mod attention;
pub mod bandwidth;
pub mod elementwise;
pub mod embed;
pub mod kv_cache;
pub mod linear;
pub mod merge;
pub mod norm;
pub mod patch_embed;
pub mod resize;
pub mod rope;
pub mod sample;

use crate::gpu::tensor::WeightFormat;
use crate::gpu::{Context, DType, Defines, Tensor};
use crate::{Error, Result};

/// Invocations per workgroup of the simple (one invocation per element) kernels and of row reductions.
pub const WG: u32 = 256;

/// Workgroup size of single-workgroup-per-row reductions (norms, the sampler): as wide as the device
/// allows, up to 1024, so one row is covered in few steps (a lone row is bound by memory latency).
pub fn wide_wg(ctx: &Context) -> u32 {
    let n = ctx.caps.max_invocations.min(1024);
    1 << (31 - n.leading_zeros())
}

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

/// The defines that select a weight format in matvec.wgsl, matmul.wgsl and embed.wgsl: W_Q4, W_Q8 or W_F16,
/// and W_Q for both quantized formats (the scale binding).
pub fn weight_defines(d: Defines, format: WeightFormat) -> Defines {
    d.flag_if("W_Q", format.quant().is_some())
        .flag_if("W_Q4", format == WeightFormat::Q4)
        .flag_if("W_Q8", format == WeightFormat::Q8)
        .flag_if("W_F16", format == WeightFormat::F16)
}

/// Every (shader, defines) combination the constructors above can request, over the devices they can meet:
/// f32/f16 activations, subgroups on/off, both weight formats, every tile size. The GPU-free test compiles
/// each through naga; keep this list in step with the constructors.
pub fn variants() -> Vec<(crate::gpu::Shader, Defines)> {
    use crate::gpu::shader::*;
    let mut out = Vec::new();
    for f16 in [false, true] {
        for sg in [false, true] {
            let base = |wg: u32| Defines::new().flag_if("ACT_F16", f16).flag_if("SUBGROUP", sg).value("WG", wg);
            for wfmt in [WeightFormat::Q4, WeightFormat::Q8, WeightFormat::F16] {
                for bias in [false, true] {
                    for (wg, rows) in [(32, 1), (32, 2), (32, 4), (64, 2), (64, 4), (128, 2), (128, 8), (256, 4)] {
                        out.push((MATVEC, weight_defines(base(wg).value("R", rows), wfmt).flag_if("BIAS", bias)));
                    }
                    for (norm, partial) in [(false, false), (true, false), (false, true), (true, true)] {
                        let d = base(linear::SHORT_WG).value("R", 1).value("U", 1).flag("SHORT").flag_if("NORM", norm).flag_if("PARTIAL", partial);
                        for mode in ["PLAIN", "RESIDUAL"] {
                            if mode == "RESIDUAL" && bias {
                                continue;
                            }
                            out.push((MATVEC_FUSED, weight_defines(d.clone().flag(mode), wfmt).flag_if("BIAS", bias)));
                        }
                    }
                    for shape in linear::FUSED_SHAPES.into_iter().chain(linear::bound_shapes()) {
                        for (norm, partial) in [(false, false), (true, false), (false, true), (true, true)] {
                            let d = linear::fused_shape_defines(base(shape.wg).flag_if("PARTIAL", partial), shape, wfmt).flag_if("NORM", norm);
                            for mode in ["PLAIN", "RESIDUAL", "GLU", "ROPE_KV"] {
                                if mode == "ROPE_KV" && !bias || mode != "ROPE_KV" && mode != "PLAIN" && bias {
                                    continue;
                                }
                                out.push((MATVEC_FUSED, weight_defines(d.clone().flag(mode), wfmt).flag_if("BIAS", bias)));
                                if mode == "PLAIN" {
                                    // the greedy choice's first pass in lm_head's epilogue
                                    out.push((MATVEC_FUSED, weight_defines(d.clone().flag(mode).flag("ARGMAX"), wfmt).flag_if("BIAS", bias)));
                                }
                            }
                        }
                    }
                    // x prepared once (XP_OUT, with x itself or prepared as input): the model's DOT4 shapes in the
                    // modes that prepare their output
                    for shape in linear::MODEL_FUSED_SHAPES.into_iter().filter(|s| s.math == linear::FusedMath::Dot4 && wfmt == WeightFormat::Q4 && !bias) {
                        // (Exact: a row of at most SHORT_MAX_K inputs, as SHORT would take it)
                        for (input, partial) in [(linear::FusedMath::Dot4, false), (linear::FusedMath::Dot4, true), (linear::FusedMath::Xq8, false), (linear::FusedMath::Exact, false), (linear::FusedMath::Exact, true)] {
                            for norm in [false, true] {
                                for (mode, glu) in [("RESIDUAL", false), ("GLU", true)] {
                                    if let Some((slices, wg)) = linear::prepared_layout(shape, glu) {
                                        let d = base(wg).flag_if("PARTIAL", partial).value("SLICES", slices).flag("XP_OUT");
                                        let d = linear::fused_shape_defines(d, linear::FusedShape { math: input, ..shape }, wfmt).flag_if("NORM", norm).flag(mode);
                                        out.push((MATVEC_FUSED, weight_defines(d, wfmt)));
                                    }
                                }
                            }
                        }
                    }
                    let multi = linear::MULTI_SHAPE;
                    let d = base(multi.wg).value("R", multi.rows).flag("MULTI").value("MX", linear::MULTI_ROWS);
                    out.push((MATVEC, weight_defines(d, wfmt).flag_if("BIAS", bias)));
                    for tile in [64, 128] {
                        for &packed in if f16 { &[false, true][..] } else { &[false][..] } {
                            let d = weight_defines(linear::tiled_layout(base(256), tile, false), wfmt).flag_if("BIAS", bias).flag_if("PACKED", packed);
                            out.push((MATMUL, d.clone()));
                            // ContextOptions::tiled_matmul: each variant alone and all three
                            let can_pf = wfmt != WeightFormat::F16;
                            for (il, pf, ur) in [(true, false, false), (false, can_pf, false), (false, false, true), (true, can_pf, true)] {
                                if !(il || pf || ur) {
                                    continue;
                                }
                                out.push((MATMUL, d.clone().flag_if("MM_IL", il).flag_if("MM_PF", pf).flag_if("MM_UR", ur)));
                            }
                            // the balanced staging (q4), fma() as a multiply and an add, the ablations: on all three
                            if can_pf {
                                let all = d.clone().flag("MM_IL").flag("MM_PF").flag("MM_UR");
                                let q4 = wfmt == WeightFormat::Q4;
                                out.push((MATMUL, all.clone().flag_if("MM_BW", q4)));
                                out.push((MATMUL, all.clone().flag_if("MM_BW", q4).flag("MM_MA")));
                                out.push((MATMUL, all.clone().flag("MM_MA")));
                                out.push((MATMUL, all.clone().flag("MM_XL")));
                                out.push((MATMUL, all.clone().flag("MM_XS")));
                                out.push((MATMUL, all.clone().flag("MM_W8")));
                                out.push((MATMUL, all.clone().flag_if("MM_BW", q4).flag("MM_W8")));
                                out.push((MATMUL, all.clone().flag("MM_XS").flag("MM_XB")));
                                out.push((MATMUL, all.clone().flag("MM_XS").flag("MM_W8")));
                            }
                            // the 16 × 8 block an invocation (TiledMatmul::tall): q4, the 128-wide tile, prefetched
                            if wfmt == WeightFormat::Q4 && tile == 128 {
                                let d = weight_defines(linear::tiled_layout(base(128), tile, true), wfmt).flag_if("BIAS", bias).flag_if("PACKED", packed);
                                let all = d.flag("MM_IL").flag("MM_PF").flag("MM_UR");
                                for extra in [None, Some("MM_MA"), Some("MM_XS"), Some("MM_XB")] {
                                    out.push((MATMUL, extra.map_or(all.clone(), |f| all.clone().flag(f))));
                                }
                            }
                        }
                    }
                    if f16 && !sg {
                        // the cooperative-matrix tier takes no SUBGROUP define (its subgroups are implicit)
                        for shape in linear::COOP_SHAPES {
                            out.push((MATMUL_COOP, linear::coop_defines(shape, wfmt, bias)));
                        }
                    }
                }
                out.push((EMBED, weight_defines(base(128), wfmt)));
            }
            for causal in [false, true] {
                out.push((ATTENTION_TILED, base(256).flag_if("CAUSAL", causal)));
                out.push((ATTENTION_Q32, base(128).flag_if("CAUSAL", causal)));
            }
            if f16 && !sg {
                for d in [16, 32, 64, 72, 128] {
                    for causal in [false, true] {
                        out.push((ATTENTION_COOP, attention::coop_defines(d, causal)));
                    }
                }
            }
            // head sizes: the fixture model's 16, the demo model's 32 (text) and 64 (vision), SigLIP's 72, Qwen's 128
            for d in [16, 32, 64, 72, 128] {
                for (bq, bkv) in [(16, 32), (16, 16), (8, 16), (8, 8), (4, 8), (2, 4), (1, 4)] {
                    for causal in [false, true] {
                        out.push((ATTENTION, base(128).value("D", d).value("BQ", bq).value("BKV", bkv).value("OPT", (bq * d).div_ceil(128)).flag_if("CAUSAL", causal)));
                    }
                }
                for n_rep in [1, 2, 4, 5, 8] {
                    if d == 72 {
                        continue; // decode needs head_dim / chunk to divide the workgroup
                    }
                    let cw = if f16 { 8 } else { 4 };
                    let lanes = d / cw;
                    for wg in attention::DECODE_BLOCKS.into_iter().filter(|wg| wg % lanes == 0) {
                        let dec = base(wg).value("D", d).value("N_REP", n_rep).value("CW", cw).value("LANES", lanes);
                        let dec = dec.value("KG", wg / lanes).value("KPT", lanes);
                        out.push((ATTENTION_DECODE, dec.clone()));
                        if d % 32 == 0 {
                            out.push((ATTENTION_DECODE, dec.clone().flag("COMBINE").flag("XP_OUT")));
                        }
                        out.push((ATTENTION_DECODE, dec.flag("COMBINE")));
                    }
                }
            }
            out.push((ROPE, base(WG)));
            for wg in [256, 1024] {
                out.push((NORM, base(wg)));
                out.push((NORM, base(wg).flag("LAYER")));
                out.push((SAMPLE, base(wg)));
                if wg == 256 {
                    out.push((ARGMAX, base(wg)));
                }
                // FINAL: after the first pass (256), over lm_head's maxima (the widest workgroup)
                out.push((ARGMAX, base(wg).flag("FINAL")));
                out.push((BANDWIDTH, base(wg)));
                for form in bandwidth::FmaForm::ALL {
                    out.push((BANDWIDTH, base(wg).flag("FMA").flag_if("FMA_MULADD", form.mul_add).flag_if("FMA_V2", form.vec2).value("CH", form.chains())));
                }
                out.push((BANDWIDTH, base(wg).flag("WARM")));
            }
            for op in ["ADD", "BIAS", "GELU_TANH", "GELU_ERF", "SILU_MUL"] {
                out.push((ELEMENTWISE, base(WG).flag(op)));
            }
            out.push((PATCH_EMBED, base(WG)));
            out.push((RESIZE, base(WG)));
            out.push((MERGE, base(WG)));
            out.push((KV_CACHE, base(WG)));
        }
    }
    out
}
