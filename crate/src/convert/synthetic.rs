//! A synthetic checkpoint with VARCO-VISION-14B's tensor names, shapes and dtype (bf16) but random values
//! and only a few layers: for the converter's memory test and `varco bench convert`. Written in streaming
//! fashion (never held in memory) as two safetensors files with an index, as the real checkpoint is sharded.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::{Error, Result};

/// Layers of each tower to generate.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub text_layers: usize,
    pub vision_layers: usize,
}

// VARCO-VISION-14B (Qwen2.5-14B + SigLIP so400m-patch14-384); MODEL.md §1.
const H: usize = 5120;
const FFN: usize = 13824;
const HEADS: usize = 40;
const KV_HEADS: usize = 8;
const VOCAB: usize = 151680;
const VH: usize = 1152;
const VFFN: usize = 4304;
const PATCH: usize = 14;
const CELLS: usize = 27;

/// Every tensor (-HF names) and its shape.
pub fn tensors(shape: Shape) -> Vec<(String, Vec<usize>)> {
    let mut t: Vec<(String, Vec<usize>)> = Vec::new();
    let e = "vision_tower.vision_model.embeddings";
    t.push((format!("{e}.patch_embedding.weight"), vec![VH, 3, PATCH, PATCH]));
    t.push((format!("{e}.patch_embedding.bias"), vec![VH]));
    t.push((format!("{e}.position_embedding.weight"), vec![CELLS * CELLS, VH]));
    for i in 0..shape.vision_layers {
        let l = format!("vision_tower.vision_model.encoder.layers.{i}");
        for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            t.push((format!("{l}.self_attn.{p}.weight"), vec![VH, VH]));
            t.push((format!("{l}.self_attn.{p}.bias"), vec![VH]));
        }
        for n in ["layer_norm1", "layer_norm2"] {
            t.push((format!("{l}.{n}.weight"), vec![VH]));
            t.push((format!("{l}.{n}.bias"), vec![VH]));
        }
        t.push((format!("{l}.mlp.fc1.weight"), vec![VFFN, VH]));
        t.push((format!("{l}.mlp.fc1.bias"), vec![VFFN]));
        t.push((format!("{l}.mlp.fc2.weight"), vec![VH, VFFN]));
        t.push((format!("{l}.mlp.fc2.bias"), vec![VH]));
    }
    t.push(("multi_modal_projector.linear_1.weight".into(), vec![H, VH]));
    t.push(("multi_modal_projector.linear_1.bias".into(), vec![H]));
    t.push(("multi_modal_projector.linear_2.weight".into(), vec![H, H]));
    t.push(("multi_modal_projector.linear_2.bias".into(), vec![H]));
    t.push(("image_newline".into(), vec![H]));
    t.push(("language_model.model.embed_tokens.weight".into(), vec![VOCAB, H]));
    let d = H / HEADS;
    for i in 0..shape.text_layers {
        let l = format!("language_model.model.layers.{i}");
        for (p, n) in [("q_proj", HEADS * d), ("k_proj", KV_HEADS * d), ("v_proj", KV_HEADS * d)] {
            t.push((format!("{l}.self_attn.{p}.weight"), vec![n, H]));
            t.push((format!("{l}.self_attn.{p}.bias"), vec![n]));
        }
        t.push((format!("{l}.self_attn.o_proj.weight"), vec![H, H]));
        t.push((format!("{l}.mlp.gate_proj.weight"), vec![FFN, H]));
        t.push((format!("{l}.mlp.up_proj.weight"), vec![FFN, H]));
        t.push((format!("{l}.mlp.down_proj.weight"), vec![H, FFN]));
        t.push((format!("{l}.input_layernorm.weight"), vec![H]));
        t.push((format!("{l}.post_attention_layernorm.weight"), vec![H]));
    }
    t.push(("language_model.model.norm.weight".into(), vec![H]));
    t.push(("language_model.lm_head.weight".into(), vec![VOCAB, H]));
    t
}

/// The -HF config.json of the synthetic model.
pub fn config_json(shape: Shape) -> String {
    let pinpoints: Vec<[u32; 2]> = (1..=6).flat_map(|a| (1..=6).map(move |b| [384 * a, 384 * b])).collect();
    serde_json::json!({
        "model_type": "llava_onevision",
        "image_token_index": 151675,
        "vision_aspect_ratio": "anyres_max_9",
        "image_grid_pinpoints": pinpoints,
        "text_config": {
            "model_type": "qwen2", "hidden_size": H, "intermediate_size": FFN, "num_hidden_layers": shape.text_layers,
            "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "rms_norm_eps": 1e-6,
            "rope_theta": 1e6, "max_position_embeddings": 32768, "eos_token_id": 151645, "tie_word_embeddings": false
        },
        "vision_config": {
            "model_type": "siglip_vision_model", "hidden_size": VH, "intermediate_size": VFFN,
            "num_hidden_layers": shape.vision_layers, "num_attention_heads": 16, "image_size": 384, "patch_size": PATCH,
            "layer_norm_eps": 1e-6
        }
    })
    .to_string()
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Checkpoint(format!("{}: {e}", path.display()))
}

/// Writes the synthetic checkpoint into `dir` (config.json, two safetensors files and their index) and
/// returns the bytes of tensor data written. The tokenizer and chat template are the caller's to add.
pub fn write(dir: &Path, shape: Shape, seed: u64) -> Result<u64> {
    let all = tensors(shape);
    // the second file from embed_tokens on, so that tensors sit in two files as in a sharded checkpoint
    let cut = all.iter().position(|(n, _)| n.contains("embed_tokens")).expect("embed_tokens is listed");
    let files = [("model-00001-of-00002.safetensors", &all[..cut]), ("model-00002-of-00002.safetensors", &all[cut..])];
    let mut rng = seed | 1;
    let mut weight_map = serde_json::Map::new();
    let mut total = 0;
    for (name, tensors) in files {
        let path = dir.join(name);
        let mut header = serde_json::Map::new();
        let mut off = 0usize;
        for (t, s) in tensors {
            let bytes = s.iter().product::<usize>() * 2;
            header.insert(t.clone(), serde_json::json!({"dtype": "BF16", "shape": s, "data_offsets": [off, off + bytes]}));
            weight_map.insert(t.clone(), serde_json::Value::String(name.into()));
            off += bytes;
        }
        let mut h = serde_json::Value::Object(header).to_string().into_bytes();
        h.resize(h.len().next_multiple_of(8), b' ');
        let mut f = BufWriter::with_capacity(1 << 20, File::create(&path).map_err(|e| io(&path, e))?);
        f.write_all(&(h.len() as u64).to_le_bytes()).map_err(|e| io(&path, e))?;
        f.write_all(&h).map_err(|e| io(&path, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = off;
        while left > 0 {
            let n = left.min(buf.len());
            for pair in buf[..n].chunks_exact_mut(2) {
                // xorshift64; bf16 with a random mantissa and sign, exponent of ~0.004..0.03 (weights' scale)
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let bits = (0x3B80u16 + ((rng >> 32) as u16 & 0x1FF)) | (((rng >> 48) as u16 & 1) << 15);
                pair.copy_from_slice(&bits.to_le_bytes());
            }
            f.write_all(&buf[..n]).map_err(|e| io(&path, e))?;
            left -= n;
        }
        f.flush().map_err(|e| io(&path, e))?;
        total += off as u64;
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).map_err(|e| io(dir, e))?;
    std::fs::write(dir.join("config.json"), config_json(shape)).map_err(|e| io(dir, e))?;
    Ok(total)
}
