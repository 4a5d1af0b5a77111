//! The model's configuration, from either checkpoint layout: the -HF `config.json` (transformers field names,
//! `text_config` / `vision_config`), or the original LLaVA-NeXT `config.json` (Qwen2 fields at the top, no
//! vision sizes: those follow from the tensor shapes, with SigLIP-so400m's head size 72).

use crate::image::AnyresConfig;
use crate::weights::{Layout, WeightSource};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TextConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
    pub vocab: usize,
    pub tie_word_embeddings: bool,
    pub max_positions: usize,
    pub eos_token_id: u32,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VisionConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub ln_eps: f64,
}

impl VisionConfig {
    pub fn cells(&self) -> usize {
        self.image_size / self.patch_size
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub anyres: AnyresConfig,
    /// The -HF tokenizer's `<image>` id (absent from the original tokenizer).
    pub image_token_id: Option<u32>,
}

impl ModelConfig {
    /// Elements of the activations the vision tower and projector work in for an image of `tiles` tiles:
    /// im2col columns, x, y, qkv, the attention output, the MLP's middle; the projector's output and the
    /// merged features.
    pub fn vision_activation_elements(&self, tiles: usize) -> usize {
        let (t, v) = (&self.text, &self.vision);
        let rows = tiles * v.cells() * v.cells();
        rows * (3 * v.patch_size * v.patch_size + 6 * v.hidden + v.intermediate + 3 * t.hidden)
    }
}

fn err(msg: String) -> Error {
    Error::Checkpoint(format!("config.json: {msg}"))
}

fn get_u(v: &serde_json::Value, key: &str) -> Result<usize> {
    v[key].as_u64().map(|x| x as usize).ok_or_else(|| err(format!("missing or non-integer \"{key}\"")))
}

fn get_f(v: &serde_json::Value, key: &str, default: f64) -> f64 {
    v[key].as_f64().unwrap_or(default)
}

fn pinpoints(v: &serde_json::Value) -> Result<Vec<(u32, u32)>> {
    let arr = v["image_grid_pinpoints"].as_array().ok_or_else(|| err("missing \"image_grid_pinpoints\"".into()))?;
    arr.iter()
        .map(|p| {
            let p = p.as_array().filter(|p| p.len() == 2).ok_or_else(|| err("a pinpoint is not a pair".into()))?;
            // pinpoints are (height, width) for transformers and (width, height) for LLaVA-NeXT; the set is
            // symmetric for every released checkpoint, so the two readings choose the same canvas
            Ok((p[0].as_u64().unwrap_or(0) as u32, p[1].as_u64().unwrap_or(0) as u32))
        })
        .collect()
}

fn max_patches(aspect: Option<&str>) -> Result<u32> {
    let a = aspect.unwrap_or("anyres_max_9");
    a.strip_prefix("anyres_max_").and_then(|n| n.parse().ok()).ok_or_else(|| err(format!("image aspect ratio {a:?} is not anyres_max_N")))
}

impl ModelConfig {
    /// From a `config.json` text and the checkpoint (whose shapes fill what the original layout leaves out).
    pub fn from_json(text: &str, weights: &WeightSource) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        let (t, aspect) = match weights.layout {
            Layout::Hf | Layout::HfNew => (v["text_config"].clone(), v["vision_aspect_ratio"].as_str().map(String::from)),
            Layout::LlavaNext => (v.clone(), v["image_aspect_ratio"].as_str().map(String::from)),
        };
        if t.is_null() {
            return Err(err("no \"text_config\"".into()));
        }
        let hidden = get_u(&t, "hidden_size")?;
        let heads = get_u(&t, "num_attention_heads")?;
        let rope_theta = t["rope_theta"].as_f64().or_else(|| t["rope_parameters"]["rope_theta"].as_f64()).unwrap_or(1e6);
        let text = TextConfig {
            hidden,
            intermediate: get_u(&t, "intermediate_size")?,
            layers: get_u(&t, "num_hidden_layers")?,
            heads,
            kv_heads: t["num_key_value_heads"].as_u64().map(|x| x as usize).unwrap_or(heads),
            head_dim: t["head_dim"].as_u64().map(|x| x as usize).unwrap_or(hidden / heads),
            rms_eps: get_f(&t, "rms_norm_eps", 1e-6),
            rope_theta,
            vocab: get_u(&t, "vocab_size")?,
            tie_word_embeddings: v["tie_word_embeddings"].as_bool().or(t["tie_word_embeddings"].as_bool()).unwrap_or(false),
            max_positions: t["max_position_embeddings"].as_u64().map(|x| x as usize).unwrap_or(32768),
            eos_token_id: t["eos_token_id"].as_u64().or(v["eos_token_id"].as_u64()).unwrap_or(151_645) as u32,
        };
        // vision: sizes from the weights (authoritative in both layouts), eps from the config where given
        let pe = weights.shape("vision_tower.embeddings.patch_embedding.weight")?;
        let fc1 = weights.shape("vision_tower.encoder.layers.0.mlp.fc1.weight")?;
        let vhidden = pe[0];
        let layers = (0..).take_while(|i| weights.contains(&format!("vision_tower.encoder.layers.{i}.layer_norm1.weight"))).count();
        let vc = &v["vision_config"];
        let head_dim = match vc["num_attention_heads"].as_u64() {
            Some(0) => return Err(err("vision_config.num_attention_heads is 0".into())),
            Some(h) => vhidden / h as usize,
            None => 72,
        };
        if head_dim == 0 || vhidden % head_dim != 0 {
            return Err(err(format!("vision width {vhidden} is not a multiple of the head size {head_dim}")));
        }
        let patch_size = pe[2];
        let positions = weights.shape("vision_tower.embeddings.position_embedding.weight")?[0];
        let cells = (positions as f64).sqrt() as usize;
        let image_size = vc["image_size"].as_u64().map(|x| x as usize).unwrap_or(if cells * patch_size <= 384 { 384 } else { cells * patch_size });
        let vision = VisionConfig {
            hidden: vhidden,
            intermediate: fc1[0],
            layers,
            heads: vhidden / head_dim,
            head_dim,
            image_size,
            patch_size,
            ln_eps: get_f(vc, "layer_norm_eps", 1e-6),
        };
        if vision.cells().checked_mul(vision.cells()) != Some(positions) {
            return Err(err(format!("{positions} vision positions do not make a {0}×{0} grid", vision.cells())));
        }
        let anyres = AnyresConfig {
            pinpoints: pinpoints(&v)?,
            tile: image_size as u32,
            cells: vision.cells() as u32,
            max_patches: max_patches(aspect.as_deref())?,
        };
        let image_token_id = v["image_token_index"].as_u64().map(|x| x as u32);
        let cfg = ModelConfig { text, vision, anyres, image_token_id };
        cfg.check()?;
        Ok(cfg)
    }

    /// Refuses sizes no model of this family has and the kernels cannot take: zeros, heads that do not
    /// divide, an odd head size (RoPE rotates halves), non-finite constants, absurd sizes (a vocabulary the
    /// sampler cannot index), canvases that are not whole tiles. Both config.json and a manifest's config
    /// pass through here.
    pub fn check(&self) -> Result<()> {
        let (t, v, a) = (&self.text, &self.vision, &self.anyres);
        let bad = |m: String| Err(err(m));
        let positive = [("hidden_size", t.hidden), ("intermediate_size", t.intermediate), ("num_hidden_layers", t.layers), ("num_attention_heads", t.heads), ("num_key_value_heads", t.kv_heads), ("head_dim", t.head_dim), ("vocab_size", t.vocab), ("max_position_embeddings", t.max_positions)];
        for (name, x) in positive {
            if x == 0 || x > 1 << 24 {
                return bad(format!("{name} = {x} is outside 1 ..= 2^24"));
            }
        }
        if t.heads % t.kv_heads != 0 {
            return bad(format!("{} attention heads do not divide into {} key/value heads", t.heads, t.kv_heads));
        }
        if t.head_dim % 8 != 0 || t.hidden % 8 != 0 || t.intermediate % 4 != 0 {
            return bad(format!("head_dim {}, hidden {} and intermediate {} must be multiples of 8, 8 and 4", t.head_dim, t.hidden, t.intermediate));
        }
        if !(t.rms_eps.is_finite() && t.rms_eps > 0.0 && t.rope_theta.is_finite() && t.rope_theta > 1.0) {
            return bad(format!("rms_norm_eps {} and rope_theta {} must be positive and finite", t.rms_eps, t.rope_theta));
        }
        if t.layers > 1024 {
            return bad(format!("{} layers", t.layers));
        }
        if v.hidden == 0 || v.intermediate == 0 || v.layers == 0 || v.heads == 0 || v.head_dim == 0 || v.patch_size == 0 || v.hidden > 1 << 16 || v.intermediate > 1 << 18 || v.layers > 1024 || v.patch_size > 1024 {
            return bad(format!("the vision tower's sizes ({v:?}) must be positive"));
        }
        if !(v.ln_eps.is_finite() && v.ln_eps > 0.0) || v.cells() == 0 || v.image_size > 1 << 14 {
            return bad(format!("image size {} holds no {}-pixel patch, or layer_norm_eps {} is not positive", v.image_size, v.patch_size, v.ln_eps));
        }
        if a.pinpoints.is_empty() || a.pinpoints.iter().any(|&(w, h)| w == 0 || h == 0 || w % a.tile != 0 || h % a.tile != 0 || w > 1 << 16 || h > 1 << 16) {
            return bad(format!("image_grid_pinpoints must be whole {}-pixel tiles", a.tile));
        }
        if a.max_patches == 0 || a.max_patches > 1024 || a.cells as usize != v.cells() || a.tile as usize != v.image_size {
            return bad(format!("anyres_max_{} with {} cells on {}-pixel tiles does not fit the vision tower", a.max_patches, a.cells, a.tile));
        }
        Ok(())
    }
}
