//! A session: one model on one device answering conversations, for every caller (the CLI, the browser's
//! `Engine`, `varco bench model`).
//!
//! It owns the model, the tokenizer, the chat template, the generation defaults, and its memory plan: the KV
//! cache sized once (the manifest's context, or a smaller `max_context`), the decode workspace made once
//! ([`crate::model::decode`]: a decoded token allocates nothing), and per request only the image's and the
//! prompt's own buffers, allocated inside an out-of-memory scope.
//!
//! It remembers what its KV cache holds — each position's token id, or for an image's positions a hash of
//! the image's decoded pixels — and a request whose prompt begins the same way reuses that prefix: the cache
//! is cut back to the common prefix and only the rest is run; an image inside the prefix is not encoded
//! again. So a chat's second turn costs its own tokens, and a new question about the same image only the
//! question's. The reused positions hold the keys and values a prefill (or a decode step) computed for those
//! very tokens at those very positions, so the answer is the one a fresh session gives, up to rounding.

use image::RgbImage;
use serde::Serialize;
use sha2::{Digest, Sha256};
use web_time::Instant;

use crate::answer::{self, Span};
use crate::chat::{ChatTemplate, Message, Part, PromptIds, IMAGE_PLACEHOLDER};
use crate::generate::{cpu_sample, penalize, Answering, GenerateOptions, Settings, SplitMix, Stop};
use crate::gpu::Context;
use crate::loader::manifest::Generation;
use crate::model::decode::{SampleArgs, Workspace};
use crate::model::llm::{KvCache, LayerBuffers};
use crate::model::{paced_chunk, Input, Model, PREFILL_CHUNK};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// What one position of the KV cache holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    Token(u32),
    /// A position of an image's embeddings; the image by a hash of its size and decoded pixels.
    Image(u64),
}

/// The words of a request.
#[derive(Clone, Debug)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template and a generation prompt.
    Chat(Vec<Message>),
    /// Token ids as LLaVA-NeXT writes them (−200 where the image goes), for callers that tokenize
    /// themselves (the benchmark).
    Ids(Vec<i64>),
}

/// One request: a prompt, its image (at most one), and what it asks of generation.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: Prompt,
    /// The decoded image ([`crate::image::decode`]) when the prompt has a place for one.
    pub image: Option<RgbImage>,
    pub settings: Settings,
    /// Reuse what the KV cache holds of this prompt's beginning (default). False: run the whole prompt.
    pub reuse: bool,
}

impl Request {
    pub fn chat(messages: Vec<Message>, image: Option<RgbImage>) -> Self {
        Request { prompt: Prompt::Chat(messages), image, settings: Settings::default(), reuse: true }
    }
}

/// Token counts of an answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Usage {
    /// The prompt's tokens, the image's included.
    pub prompt_tokens: usize,
    /// Of those, the tokens whose keys and values were already in the cache (not run again).
    pub cached_tokens: usize,
    /// The image's tokens, when the prompt has an image.
    pub image_tokens: Option<usize>,
    /// The answer's tokens (a stop id not counted).
    pub completion_tokens: usize,
}

/// Where an answer's time went, in seconds from the request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timings {
    /// Encoding the image (0 when it was in the reused prefix).
    pub image_s: f64,
    /// Running the prompt's new tokens.
    pub prefill_s: f64,
    /// From the request to the first generated token on the CPU (time to first token).
    pub first_token_s: f64,
    /// From the first generated token to the last.
    pub decode_s: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

/// A session's answer to a request: the same for every caller, and the same JSON (`--json`, the browser).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    pub text: String,
    pub generated_ids: Vec<u32>,
    pub stop: Stop,
    pub usage: Usage,
    /// `<obj>`/`<char>` spans with their boxes, in pixels of the image where there is one.
    pub spans: Vec<Span>,
    pub timings: Timings,
}

pub struct Session {
    pub model: Model,
    pub tok: Tokenizer,
    template: ChatTemplate,
    pub generation: Generation,
    cache: KvCache,
    ws: Workspace,
    /// What each filled position of the cache holds (`held.len() == cache.len` between requests).
    held: Vec<Held>,
    /// The last prefill chunk timed (tokens, seconds from submit to results): a later request's first chunk is
    /// sized from it ([`crate::model::paced_chunk`]); before any, a prompt starts with
    /// [`crate::model::PREFILL_CHUNK`] tokens.
    pace: Option<(usize, f64)>,
    /// The chunks (tokens each) the last request's new prompt tokens ran in ([`Session::prefill_chunks`]).
    chunks: Vec<usize>,
}

/// An image's identity for reuse: its size and decoded pixels.
fn image_key(img: &RgbImage) -> u64 {
    let mut h = Sha256::new();
    h.update(img.width().to_le_bytes());
    h.update(img.height().to_le_bytes());
    h.update(img.as_raw());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// A request as JSON (the browser worker's form, web/src/messages.ts `WireRequest`): `messages` with
/// `text` and `image` parts, generation settings over the model's defaults (`max_new_tokens`,
/// `temperature`, `top_k`, `top_p`, `seed`, `repetition_penalty`), `cache_prompt` (default true). The
/// image's bytes travel beside it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    messages: Vec<Message>,
    #[serde(default)]
    max_new_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    repetition_penalty: Option<f32>,
    #[serde(default)]
    cache_prompt: Option<bool>,
}

impl Request {
    /// A request from its JSON (the browser's); the conversation and the settings checked, nothing run.
    pub fn from_json(json: &str, image: Option<RgbImage>) -> Result<Self> {
        let w: WireRequest = serde_json::from_str(json).map_err(|e| Error::request(format!("the request is not valid: {e}")))?;
        check_messages(&w.messages)?;
        let settings = Settings {
            max_new_tokens: w.max_new_tokens,
            temperature: w.temperature,
            top_k: w.top_k,
            top_p: w.top_p,
            seed: w.seed,
            repetition_penalty: w.repetition_penalty,
            ignore_eos: false,
        };
        settings.check()?;
        Ok(Request { prompt: Prompt::Chat(w.messages), image, settings, reuse: w.cache_prompt.unwrap_or(true) })
    }
}

/// Refuses conversations the template cannot render faithfully.
pub fn check_messages(messages: &[Message]) -> Result<()> {
    if messages.is_empty() {
        return Err(Error::request("the conversation has no messages"));
    }
    for (i, m) in messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
            return Err(Error::request(format!("message {i} has the role {:?}: expected system, user or assistant", m.role)));
        }
    }
    let images = messages.iter().flat_map(|m| &m.content).filter(|p| matches!(p, Part::Image)).count();
    if images > 1 {
        return Err(Error::request(format!("the conversation has {images} images; this model takes one")));
    }
    Ok(())
}

/// The text between the image places of LLaVA-NeXT ids (−200 for an image): one run more than there are
/// images. For callers that run a prompt on the model directly ([`prompt_inputs`]).
pub fn text_runs(ids: &[i64], vocab: usize) -> Result<Vec<Vec<u32>>> {
    ids.split(|&i| i == IMAGE_PLACEHOLDER)
        .map(|run| {
            run.iter()
                .map(|&i| if i >= 0 && (i as usize) < vocab { Ok(i as u32) } else { Err(Error::request(format!("token id {i} is outside the vocabulary of {vocab}"))) })
                .collect()
        })
        .collect()
}

/// The model's inputs for `runs` ([`text_runs`]) with `image`'s embeddings between them.
pub fn prompt_inputs<'a>(runs: &'a [Vec<u32>], image: Option<&'a crate::gpu::Tensor>) -> Result<Vec<Input<'a>>> {
    let mut out = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        if i > 0 {
            out.push(Input::Embeddings(image.ok_or_else(|| Error::request("the prompt has an image place but no image was given"))?));
        }
        if !run.is_empty() {
            out.push(Input::Tokens(run));
        }
    }
    if image.is_some() && runs.len() != 2 {
        return Err(Error::request(format!("the prompt has {} image places for one image", runs.len() - 1)));
    }
    Ok(out)
}

impl Session {
    /// A session over a loaded model: the KV cache for `context` positions (at most the model's) and the
    /// decode workspace, allocated here, once (an allocation the GPU refuses is an
    /// [`Error::OutOfMemory`]).
    pub async fn new(ctx: &Context, model: Model, tok: Tokenizer, template: ChatTemplate, generation: Generation, context: usize) -> Result<Self> {
        let max = model.cfg.text.max_positions;
        if context == 0 || context > max {
            return Err(Error::request(format!("a context of {context} tokens: the model takes 1 to {max}")));
        }
        generation.check(model.cfg.text.vocab).map_err(Error::Checkpoint)?;
        template.check()?;
        if tok.max_id() as usize >= model.cfg.text.vocab {
            return Err(Error::Checkpoint(format!(
                "the tokenizer has ids up to {} but the model's embedding has {} rows: the tokenizer belongs to another model",
                tok.max_id(),
                model.cfg.text.vocab
            )));
        }
        let bytes = Self::memory(&model, context);
        let (cache, ws) = ctx
            .out_of_memory_scope(&format!("the KV cache and decode buffers at {context} tokens of context"), bytes, async {
                Ok((model.llm.new_cache(ctx, context)?, Workspace::new(ctx, &model, context)?))
            })
            .await?;
        Ok(Session { model, tok, template, generation, cache, ws, held: Vec::new(), pace: None, chunks: Vec::new() })
    }

    /// Bytes a session holds besides the weights at `context` tokens: the KV cache and the decode buffers.
    pub fn memory(model: &Model, context: usize) -> u64 {
        let c = &model.cfg.text;
        let act = model.llm.act.size() as u64;
        let kv = (2 * c.layers * c.kv_heads * c.head_dim) as u64 * context as u64 * act;
        kv + LayerBuffers::bytes(c, model.llm.act, 1, context) + (c.vocab as u64 + 2 * c.hidden as u64) * act
    }

    /// Positions of the KV cache.
    pub fn context(&self) -> usize {
        self.cache.capacity
    }

    /// Positions the cache holds for the next request to reuse.
    pub fn cached(&self) -> usize {
        self.held.len()
    }

    /// Forgets what the cache holds.
    pub fn reset(&mut self) {
        self.held.clear();
        self.cache.len = 0;
    }

    /// For benchmarks: declares that the cache holds `ids` at its first positions without running them (the
    /// keys and values are whatever the buffers hold), so that a request beginning with them runs only the
    /// rest — decode timed at a long context without paying for its prefill.
    pub fn assume_prefilled(&mut self, ids: &[u32]) -> Result<()> {
        if ids.len() >= self.cache.capacity {
            return Err(Error::request(format!("{} positions do not fit the context of {}", ids.len(), self.cache.capacity)));
        }
        self.held = ids.iter().map(|&i| Held::Token(i)).collect();
        self.cache.len = ids.len();
        Ok(())
    }

    /// For benchmarks: one decode step (and its sampler) at `context` positions, each dispatch in its own
    /// pass between timestamps: (pipeline label, seconds) per dispatch; None without timestamp queries. The
    /// cache is left as it was found, emptied.
    pub async fn profile_step(&mut self, ctx: &Context, context: usize) -> Result<Option<Vec<(String, f64)>>> {
        if context + 1 >= self.cache.capacity {
            return Err(Error::request(format!("a step at {context} positions does not fit the context of {}", self.cache.capacity)));
        }
        self.reset();
        self.cache.len = context;
        let out = self.model.profile_step(ctx, &self.ws, &mut self.cache).await;
        self.reset();
        out
    }

    /// The chunks (tokens each) the last request's new prompt tokens ran in: paced by the device after the
    /// first (`model::paced_chunk`); for benchmarks and tests.
    pub fn prefill_chunks(&self) -> &[usize] {
        &self.chunks
    }

    /// For benchmarks: `ids` run as one prefill chunk after `context` positions, each dispatch timed, as
    /// [`Session::profile_step`].
    pub async fn profile_prefill(&mut self, ctx: &Context, ids: &[u32], context: usize) -> Result<Option<Vec<(String, f64)>>> {
        if context + ids.len() >= self.cache.capacity || ids.is_empty() || ids.len() > self.model.prefill_chunk {
            return Err(Error::request(format!("{} tokens after {context} positions: not one chunk inside the context of {}", ids.len(), self.cache.capacity)));
        }
        self.reset();
        self.cache.len = context;
        let out = self.model.profile_prefill(ctx, ids, &mut self.cache, &self.ws).await;
        self.reset();
        out
    }

    /// The prompt's ids as LLaVA-NeXT writes them (−200 for the image). A conversation that ends with an
    /// assistant's turn is rendered as it stands, without a generation prompt: asked with
    /// `max_new_tokens: 0`, it only fills the cache (the next request continues from it).
    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<i64>> {
        match prompt {
            Prompt::Ids(ids) => Ok(ids.clone()),
            Prompt::Chat(messages) => {
                check_messages(messages)?;
                let open = messages.last().is_some_and(|m| m.role != "assistant");
                let text = self.template.render(messages, open)?;
                Ok(PromptIds::new(&self.tok, &text)?.llava_next)
            }
        }
    }

    /// Answers `req`: the prompt (what the cache holds of it reused), then generation, streaming text to
    /// `on_text`. `interrupted` is asked between prefill chunks and before each token is taken; a true ends
    /// the answer with [`Stop::Interrupted`]. An error leaves the session usable: the cache keeps what it
    /// validly holds.
    pub async fn answer(&mut self, ctx: &Context, req: &Request, on_text: &mut dyn FnMut(&str), interrupted: &dyn Fn() -> bool) -> Result<Answer> {
        if let Some(why) = ctx.lost() {
            return Err(Error::DeviceLost(why));
        }
        let out = self.answer_inner(ctx, req, on_text, interrupted).await;
        if out.is_err() {
            self.cache.len = self.held.len();
            // whatever failed (a read back, an allocation), a lost device is the cause to report
            if let Some(why) = ctx.lost() {
                self.held.clear();
                return Err(Error::DeviceLost(why));
            }
        }
        out
    }

    async fn answer_inner(&mut self, ctx: &Context, req: &Request, on_text: &mut dyn FnMut(&str), interrupted: &dyn Fn() -> bool) -> Result<Answer> {
        let t0 = Instant::now();
        let ids = self.prompt_ids(&req.prompt)?;
        let placeholders = ids.iter().filter(|&&i| i == IMAGE_PLACEHOLDER).count();
        match (placeholders, &req.image) {
            (0, None) | (1, Some(_)) => {}
            (0, Some(_)) => return Err(Error::request("an image was given but no message has an image part")),
            (1, None) => return Err(Error::request("the conversation has an image part but no image was given")),
            (n, _) => return Err(Error::request(format!("the prompt has {n} image places; this model takes one image"))),
        }
        // the positions the prompt will occupy
        let cfg = &self.model.cfg;
        let image = req.image.as_ref().map(|img| (img, image_key(img), cfg.anyres.plan(img.width(), img.height())));
        let mut want = Vec::with_capacity(ids.len() + image.as_ref().map_or(0, |i| i.2.n_tokens as usize));
        let mut image_span = None;
        for &id in &ids {
            if id == IMAGE_PLACEHOLDER {
                let (_, key, plan) = image.as_ref().expect("checked above");
                image_span = Some((want.len(), want.len() + plan.n_tokens as usize));
                want.extend(std::iter::repeat_n(Held::Image(*key), plan.n_tokens as usize));
            } else if id < 0 || id as usize >= cfg.text.vocab {
                return Err(Error::request(format!("token id {id} is outside the vocabulary of {}", cfg.text.vocab)));
            } else {
                want.push(Held::Token(id as u32));
            }
        }
        let prompt_tokens = want.len();
        if prompt_tokens == 0 {
            return Err(Error::request("the prompt is empty"));
        }
        if prompt_tokens >= self.cache.capacity {
            return Err(Error::request(format!(
                "the conversation is {prompt_tokens} tokens; the context holds {} (a shorter conversation or a smaller image needs fewer)",
                self.cache.capacity
            )));
        }

        // what the cache holds of it; the prompt's last token always runs (its logits start the answer), and
        // an image is reused whole or not at all
        let mut common = if req.reuse { self.held.iter().zip(&want).take_while(|(a, b)| a == b).count() } else { 0 };
        common = common.min(prompt_tokens - 1);
        if let Some((s, e)) = image_span {
            if common > s && common < e {
                common = s;
            }
        }
        self.held.truncate(common);
        self.cache.len = common;

        // the image (unless reused) and the rest of the prompt, in this request's own buffers
        let need_image = image_span.is_some_and(|(_, e)| common < e);
        let new_tokens = prompt_tokens - common;
        let h = cfg.text.hidden;
        let act = self.model.llm.act;
        let bytes = (new_tokens * h * act.size()) as u64 + LayerBuffers::bytes(&cfg.text, act, new_tokens.min(self.model.prefill_chunk), self.cache.capacity)
            + if need_image { (cfg.vision_activation_elements(image.as_ref().map_or(0, |i| i.2.tiles())) * act.size()) as u64 } else { 0 };
        let what = format!("this request ({new_tokens} new prompt tokens{})", if need_image { ", the image" } else { "" });
        let Session { model, tok, generation, cache, ws, held, pace, chunks, .. } = &mut *self;
        let (image_s, prefill_s, interrupted_early) = ctx
            .out_of_memory_scope(&what, bytes, async {
                let feats = match (&image, need_image) {
                    (Some((img, _, _)), true) => {
                        let (_, f) = model.encode_image(ctx, img)?;
                        ctx.sync().await?;
                        Some(f)
                    }
                    _ => None,
                };
                let image_s = t0.elapsed().as_secs_f64();
                // runs of text and the image, from the first position not reused
                let mut runs: Vec<Vec<u32>> = Vec::new();
                let mut order = Vec::new();
                let mut i = common;
                while i < prompt_tokens {
                    match want[i] {
                        Held::Image(_) => {
                            order.push(None);
                            i = image_span.expect("an image position").1;
                        }
                        Held::Token(_) => {
                            let mut run = Vec::new();
                            while let Some(Held::Token(t)) = want.get(i).filter(|_| i < prompt_tokens) {
                                run.push(*t);
                                i += 1;
                            }
                            order.push(Some(runs.len()));
                            runs.push(run);
                        }
                    }
                }
                let inputs: Vec<Input> = order
                    .iter()
                    .map(|o| match o {
                        Some(r) => Input::Tokens(&runs[*r]),
                        None => Input::Embeddings(feats.as_ref().expect("the image was encoded")),
                    })
                    .collect();
                // the first chunk at the pace this session last measured, or short before it has one
                let first = pace.map_or(PREFILL_CHUNK.min(model.prefill_chunk), |(rows, seconds)| paced_chunk(rows, seconds, model.prefill_chunk));
                let mut p = model.start_prefill(ctx, &inputs, cache, first)?;
                let mut stopped = false;
                let mut chunk = (p.next_rows(), Instant::now());
                chunks.clear();
                chunks.push(chunk.0);
                while !model.prefill_chunk(ctx, &mut p, cache, ws)? {
                    // a long prompt runs in chunks sized by the device's pace; between them the caller may
                    // interrupt
                    ctx.sync().await?;
                    let timed = (chunk.0, chunk.1.elapsed().as_secs_f64());
                    p.pace(timed.0, timed.1, model.prefill_chunk);
                    *pace = Some(timed);
                    held.extend_from_slice(&want[held.len()..cache.len]);
                    if interrupted() {
                        stopped = true;
                        break;
                    }
                    chunk = (p.next_rows(), Instant::now());
                    chunks.push(chunk.0);
                }
                Ok((image_s, t0.elapsed().as_secs_f64() - image_s, stopped))
            })
            .await?;
        held.extend_from_slice(&want[held.len()..cache.len]);

        // the answer
        let opts = GenerateOptions::new(generation, &req.settings);
        let mut answering = Answering::new(tok, &opts.stop_ids);
        let mut read = Vec::new();
        let mut first_token = None;
        if interrupted_early {
            answering.stop = Stop::Interrupted;
        } else {
            let budget = opts.max_new_tokens.min(cache.capacity - prompt_tokens);
            let mut rng = SplitMix(opts.seed);
            let mut on_token = |id: u32| -> Result<bool> {
                first_token.get_or_insert_with(Instant::now);
                read.push(id);
                answering.push(id, interrupted(), on_text)
            };
            if opts.repetition_penalty != 1.0 {
                // the CPU sampler sees the whole row: one step at a time
                let mut seen: Vec<u32> = want.iter().filter_map(|h| if let Held::Token(t) = h { Some(*t) } else { None }).collect();
                for i in 0..budget {
                    let mut l = model.read_logits(ctx, ws).await?;
                    penalize(&mut l, &seen, opts.repetition_penalty);
                    let id = cpu_sample(&l, opts.sampling, rng.uniform());
                    seen.push(id);
                    if !on_token(id)? || i + 1 == budget {
                        break;
                    }
                    model.step(ctx, ws, cache, id)?;
                }
            } else {
                let s = opts.sampling;
                let args = SampleArgs { temperature: s.temperature, top_k: s.top_k, top_p: s.top_p };
                model.decode(ctx, ws, cache, budget, args, &mut || rng.uniform(), &mut on_token).await?;
            }
        }
        answering.finish(on_text)?;
        // the generated tokens that ran through the model are in the cache now
        let fed = cache.len - held.len();
        held.extend(read[..fed].iter().map(|&id| Held::Token(id)));

        let end = Instant::now();
        let first_token_s = first_token.map_or(end - t0, |t| t - t0).as_secs_f64();
        let decode_s = first_token.map_or(0.0, |t| (end - t).as_secs_f64());
        let n = answering.ids.len();
        let prefill_s = if first_token.is_some() { first_token_s - image_s } else { prefill_s };
        Ok(Answer {
            spans: answer::parse(&answering.text, req.image.as_ref().map(|i| i.dimensions())),
            text: std::mem::take(&mut answering.text),
            generated_ids: std::mem::take(&mut answering.ids),
            stop: answering.stop,
            usage: Usage { prompt_tokens, cached_tokens: common, image_tokens: image.as_ref().map(|i| i.2.n_tokens as usize), completion_tokens: n },
            timings: Timings {
                image_s,
                prefill_s,
                first_token_s,
                decode_s,
                prefill_tokens_per_s: if prefill_s > 0.0 { new_tokens as f64 / prefill_s } else { 0.0 },
                decode_tokens_per_s: if decode_s > 0.0 && read.len() > 1 { (read.len() - 1) as f64 / decode_s } else { 0.0 },
            },
        })
    }
}
