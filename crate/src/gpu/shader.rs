//! WGSL sources and their variants.
//!
//! Every kernel lives in one file of `shaders/`, with its variants chosen by defines:
//! - flags (`ACT_F16`, `SUBGROUP`, `W_Q4`, …) select `#ifdef NAME` / `#ifndef NAME` / `#else` / `#endif`
//!   blocks (nestable);
//! - valued defines become `const NAME: u32 = value;` at the top of the module (workgroup and tile sizes);
//! - `#include "file"` pastes a snippet from `shaders/common/`;
//! - `#for i in A..B` … `#endfor` repeats its lines for i = A, …, B − 1 (A and B literals or valued defines),
//!   replacing `{i}` by the number. Register arrays indexed by a loop variable end up in local memory on
//!   drivers that do not unroll naga's loops (NVIDIA's does not); unrolled here, their indices are constants.
//!
//! A prelude declares `act` (the activation scalar: f32, or f16 with `enable f16;`) and `act4`. The pipeline
//! cache keys on the shader name and [`Defines::key`], which lists every define, so two variants never share
//! a pipeline.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// A WGSL file of `shaders/`, embedded at compile time.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

macro_rules! shader {
    ($name:literal) => {
        Shader { name: $name, source: include_str!(concat!("../../../shaders/", $name, ".wgsl")) }
    };
}

pub const MATVEC: Shader = shader!("matvec");
pub const MATVEC_FUSED: Shader = shader!("matvec_fused");
pub const MATMUL: Shader = shader!("matmul");
pub const MATMUL_COOP: Shader = shader!("matmul_coop");
pub const ATTENTION: Shader = shader!("attention");
pub const ATTENTION_TILED: Shader = shader!("attention_tiled");
pub const ATTENTION_Q32: Shader = shader!("attention_q32");
pub const ATTENTION_COOP: Shader = shader!("attention_coop");
pub const ATTENTION_DECODE: Shader = shader!("attention_decode");
pub const ROPE: Shader = shader!("rope");
pub const NORM: Shader = shader!("norm");
pub const ELEMENTWISE: Shader = shader!("elementwise");
pub const EMBED: Shader = shader!("embed");
pub const PATCH_EMBED: Shader = shader!("patch_embed");
pub const RESIZE: Shader = shader!("resize");
pub const MERGE: Shader = shader!("merge");
pub const KV_CACHE: Shader = shader!("kv_cache");
pub const SAMPLE: Shader = shader!("sample");
pub const ARGMAX: Shader = shader!("argmax");
pub const BANDWIDTH: Shader = shader!("bandwidth");

/// Every shader, for the GPU-free validation test.
pub const ALL: &[Shader] =
    &[MATVEC, MATVEC_FUSED, MATMUL, MATMUL_COOP, ATTENTION, ATTENTION_TILED, ATTENTION_Q32, ATTENTION_COOP, ATTENTION_DECODE, ROPE, NORM, ELEMENTWISE, EMBED, PATCH_EMBED, RESIZE, MERGE, KV_CACHE, SAMPLE, ARGMAX, BANDWIDTH];

const INCLUDES: &[(&str, &str)] = &[
    ("reduce.wgsl", include_str!("../../../shaders/common/reduce.wgsl")),
    ("ids.wgsl", include_str!("../../../shaders/common/ids.wgsl")),
    ("linear_io.wgsl", include_str!("../../../shaders/common/linear_io.wgsl")),
    ("dequant.wgsl", include_str!("../../../shaders/common/dequant.wgsl")),
    ("rope_angle.wgsl", include_str!("../../../shaders/common/rope_angle.wgsl")),
    ("attention_io.wgsl", include_str!("../../../shaders/common/attention_io.wgsl")),
    ("attention_rows.wgsl", include_str!("../../../shaders/common/attention_rows.wgsl")),
    ("bilinear.wgsl", include_str!("../../../shaders/common/bilinear.wgsl")),
    ("prepared.wgsl", include_str!("../../../shaders/common/prepared.wgsl")),
];

/// The defines of one shader variant. Ordered, so that the cache key is canonical.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Defines(BTreeMap<&'static str, Option<u32>>);

impl Defines {
    pub fn new() -> Self {
        Self::default()
    }
    /// A flag for `#ifdef`.
    pub fn flag(mut self, name: &'static str) -> Self {
        self.0.insert(name, None);
        self
    }
    /// A flag when `on`.
    pub fn flag_if(self, name: &'static str, on: bool) -> Self {
        if on {
            self.flag(name)
        } else {
            self
        }
    }
    /// A `const NAME: u32 = value;` (also usable with `#ifdef`).
    pub fn value(mut self, name: &'static str, v: u32) -> Self {
        self.0.insert(name, Some(v));
        self
    }
    /// The same without `name`.
    pub fn without(mut self, name: &str) -> Self {
        self.0.remove(name);
        self
    }
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    /// The canonical key: `A,B=4,…`.
    pub fn key(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Shader {
    /// The WGSL text of this variant for the target being built (see [`Shader::expand_for`]).
    pub fn expand(&self, defines: &Defines) -> Result<String> {
        self.expand_for(defines, cfg!(target_arch = "wasm32"))
    }

    /// The WGSL text of this variant: the `enable` directives (WGSL wants them before any declaration),
    /// prelude, constants, then the file with its `#` directives resolved. `web`: for a browser, which
    /// needs the subgroups extension named; naga 30 rejects that line and enables subgroups through the
    /// device feature instead, so the native text differs from the web one by exactly that line.
    pub fn expand_for(&self, defines: &Defines, web: bool) -> Result<String> {
        let err = |message: String| Error::Shader { shader: self.name.to_string(), message };
        let mut out = String::new();
        if defines.has("ACT_F16") {
            out.push_str("enable f16;\n");
        }
        if defines.has("SUBGROUP") && web {
            out.push_str("enable subgroups;\n");
        }
        if defines.has("COOP") {
            // native only (wgpu's experimental cooperative matrices); the web has no such extension yet
            out.push_str("enable wgpu_cooperative_matrix;\n");
        }
        out.push_str(if defines.has("ACT_F16") { "alias act = f16;\n" } else { "alias act = f32;\n" });
        out.push_str("alias act4 = vec4<act>;\n");
        for (k, v) in &defines.0 {
            if let Some(v) = v {
                out.push_str(&format!("const {k}: u32 = {v}u;\n"));
            }
        }
        let mut text = String::new();
        for line in self.source.lines() {
            match line.trim().strip_prefix("#include") {
                Some(rest) => {
                    let name = rest.trim().trim_matches('"');
                    let inc = INCLUDES
                        .iter()
                        .find(|(n, _)| *n == name)
                        .ok_or_else(|| err(format!("unknown include {name}")))?;
                    text.push_str(inc.1);
                    text.push('\n');
                }
                None => {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        // Stack of (this branch is active, some branch of this #if was taken).
        let mut stack: Vec<(bool, bool)> = Vec::new();
        let active = |stack: &Vec<(bool, bool)>| stack.iter().all(|s| s.0);
        for (n, line) in text.lines().enumerate() {
            let t = line.trim();
            if let Some(name) = t.strip_prefix("#ifdef ") {
                let on = defines.has(name.trim());
                stack.push((on, on));
            } else if let Some(name) = t.strip_prefix("#ifndef ") {
                let on = !defines.has(name.trim());
                stack.push((on, on));
            } else if t == "#else" {
                let top = stack.last_mut().ok_or_else(|| err(format!("line {}: #else without #if", n + 1)))?;
                *top = (!top.1, true);
            } else if t == "#endif" {
                stack.pop().ok_or_else(|| err(format!("line {}: #endif without #if", n + 1)))?;
            } else if t.starts_with('#') && !(t.starts_with("#for ") || t == "#endfor") {
                return Err(err(format!("line {}: unknown directive {t}", n + 1)));
            } else if active(&stack) {
                out.push_str(line);
                out.push('\n');
            }
        }
        if !stack.is_empty() {
            return Err(err("unterminated #ifdef".into()));
        }
        let lines: Vec<&str> = out.lines().collect();
        let mut text = String::new();
        unroll(&lines, defines, &mut text).map_err(err)?;
        Ok(text)
    }
}

/// Expands `#for NAME in A..B` … `#endfor` blocks (nestable) into `out`.
fn unroll(lines: &[&str], defines: &Defines, out: &mut String) -> std::result::Result<(), String> {
    let bound = |t: &str| -> std::result::Result<u32, String> {
        let t = t.trim();
        t.parse::<u32>().or_else(|_| defines.0.get(t).copied().flatten().ok_or_else(|| format!("#for bound `{t}` is not a number or a valued define")))
    };
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim();
        if let Some(spec) = t.strip_prefix("#for ") {
            let (name, range) = spec.split_once(" in ").ok_or_else(|| format!("malformed `{t}`"))?;
            let (a, b) = range.split_once("..").ok_or_else(|| format!("malformed range in `{t}`"))?;
            let (a, b) = (bound(a)?, bound(b)?);
            // the matching #endfor
            let mut depth = 1;
            let mut j = i + 1;
            while j < lines.len() {
                let u = lines[j].trim();
                if u.starts_with("#for ") {
                    depth += 1;
                } else if u == "#endfor" {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                j += 1;
            }
            if j == lines.len() {
                return Err(format!("`{t}` has no #endfor"));
            }
            let key = format!("{{{}}}", name.trim());
            for v in a..b {
                let body: Vec<String> = lines[i + 1..j].iter().map(|l| l.replace(&key, &v.to_string())).collect();
                let body: Vec<&str> = body.iter().map(|s| s.as_str()).collect();
                unroll(&body, defines, out)?;
            }
            i = j + 1;
        } else if t == "#endfor" {
            return Err("#endfor without #for".into());
        } else {
            out.push_str(lines[i]);
            out.push('\n');
            i += 1;
        }
    }
    Ok(())
}
