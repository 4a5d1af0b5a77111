//! What a request may ask of generation, and the rules that do not touch the GPU: sampling settings (the GPU
//! sampler takes them; a repetition penalty needs the whole row, so it switches to [`cpu_sample`]), the
//! token budget, the stop ids, the random draws, and turning ids into streamed text.

use crate::loader::manifest::Generation;
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::Result;

/// Sampling settings. `temperature <= 0` is greedy; `top_k = 0` and `top_p = 1` switch those filters off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
}

impl Sampling {
    pub const GREEDY: Sampling = Sampling { temperature: 0.0, top_k: 0, top_p: 1.0 };
}

/// What one request asks of generation; each unset field takes the model's default.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
pub struct Settings {
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// Generate the whole budget, whatever the stop ids say (benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
}

impl Settings {
    /// Refuses values no sampler takes (NaN, a negative temperature, top_p outside 0..=1, a penalty ≤ 0).
    pub fn check(&self) -> Result<()> {
        let bad = |what: &str, v: f32| Err(crate::Error::Request(format!("{what} {v} is outside what the sampler takes")));
        if let Some(t) = self.temperature.filter(|t| !t.is_finite() || *t < 0.0) {
            return bad("temperature", t);
        }
        if let Some(p) = self.top_p.filter(|p| !(0.0..=1.0).contains(p)) {
            return bad("top_p", p);
        }
        if let Some(r) = self.repetition_penalty.filter(|r| !r.is_finite() || *r <= 0.0) {
            return bad("repetition_penalty", r);
        }
        Ok(())
    }
}

/// The settings of one generation, complete.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    pub seed: u64,
    /// transformers' RepetitionPenaltyLogitsProcessor (1 = off).
    pub repetition_penalty: f32,
    /// Ids that end the answer (empty: none does).
    pub stop_ids: Vec<u32>,
}

impl GenerateOptions {
    /// `s` over the model's defaults `d`.
    pub fn new(d: &Generation, s: &Settings) -> Self {
        GenerateOptions {
            max_new_tokens: s.max_new_tokens.unwrap_or(d.max_new_tokens),
            sampling: Sampling {
                temperature: s.temperature.unwrap_or(d.temperature),
                top_k: s.top_k.unwrap_or(d.top_k),
                top_p: s.top_p.unwrap_or(d.top_p),
            },
            seed: s.seed.unwrap_or(0),
            repetition_penalty: s.repetition_penalty.unwrap_or(d.repetition_penalty),
            stop_ids: if s.ignore_eos { Vec::new() } else { d.eos_token_ids.clone() },
        }
    }
}

/// Why an answer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// A stop id (not part of the answer's ids or text).
    Eos,
    /// The token budget (or the context) ran out.
    Length,
    /// The caller interrupted it.
    Interrupted,
}

/// The generator's random numbers (one uniform per sampled token).
pub struct SplitMix(pub u64);
impl SplitMix {
    pub fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Generated ids into the answer: the stop rules, the ids kept, and the text streamed as whole characters.
pub struct Answering<'t> {
    stream: StreamDecoder<'t>,
    stop_ids: Vec<u32>,
    pub ids: Vec<u32>,
    pub text: String,
    pub stop: Stop,
}

impl<'t> Answering<'t> {
    pub fn new(tok: &'t Tokenizer, stop_ids: &[u32]) -> Self {
        Answering { stream: tok.stream(), stop_ids: stop_ids.to_vec(), ids: Vec::new(), text: String::new(), stop: Stop::Length }
    }

    /// Takes the next id unless `interrupted` or it is a stop id; the new text, if any, goes to `on_text`.
    /// False: the answer has ended.
    pub fn push(&mut self, id: u32, interrupted: bool, on_text: &mut dyn FnMut(&str)) -> Result<bool> {
        if interrupted {
            self.stop = Stop::Interrupted;
            return Ok(false);
        }
        if self.stop_ids.contains(&id) {
            self.stop = Stop::Eos;
            return Ok(false);
        }
        self.ids.push(id);
        if let Some(piece) = self.stream.push(id)? {
            on_text(&piece);
            self.text.push_str(&piece);
        }
        Ok(true)
    }

    /// The end: what the detokenizer held back goes out.
    pub fn finish(&mut self, on_text: &mut dyn FnMut(&str)) -> Result<()> {
        if let Some(rest) = self.stream.finish()? {
            on_text(&rest);
            self.text.push_str(&rest);
        }
        Ok(())
    }
}

/// transformers' repetition penalty on a row of logits: every id in `seen` made less likely.
pub fn penalize(l: &mut [f32], seen: &[u32], penalty: f32) {
    for &t in seen {
        if let Some(v) = l.get_mut(t as usize) {
            *v = if *v < 0.0 { *v * penalty } else { *v / penalty };
        }
    }
}

/// The sampler of sample.wgsl on the CPU (for rows the CPU has touched): same order and cut-offs.
pub fn cpu_sample(l: &[f32], s: Sampling, u: f32) -> u32 {
    let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let first = l.iter().position(|&v| v == m).unwrap_or(0);
    if s.temperature <= 0.0 || s.top_k == 1 {
        return first as u32;
    }
    let d: Vec<f32> = l.iter().map(|&v| (m - v) / s.temperature).collect();
    let mut sorted = d.clone();
    sorted.sort_by(f32::total_cmp);
    let tk = if s.top_k > 0 && (s.top_k as usize) < l.len() { sorted[s.top_k as usize - 1] } else { f32::INFINITY };
    let mut t = tk;
    if s.top_p < 1.0 {
        let kept: Vec<f32> = sorted.iter().cloned().filter(|&x| x <= tk).collect();
        let z: f32 = kept.iter().map(|x| (-x).exp()).sum();
        let cut = (1.0 - s.top_p) * z;
        // the largest d whose mass of tokens at or below it (in score) exceeds the cut
        let mut mass_not_above = 0.0;
        t = 0.0;
        for &x in kept.iter().rev() {
            mass_not_above += (-x).exp();
            if mass_not_above > cut {
                t = x;
                break;
            }
        }
    }
    let total: f32 = d.iter().filter(|&&x| x <= t).map(|x| (-x).exp()).sum();
    let target = u * total;
    let mut run = 0.0;
    let mut pick = first;
    for (i, &x) in d.iter().enumerate() {
        if x <= t {
            pick = i;
            run += (-x).exp();
            if run > target {
                break;
            }
        }
    }
    pick as u32
}
