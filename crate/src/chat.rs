//! Conversations into prompts: the checkpoint's own chat template rendered with minijinja (images first in a
//! message, the default system prompt when none is given), then the image placeholder in either checkpoint
//! layout's convention (docs: MODEL.md §3).

use serde::{Deserialize, Serialize};

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// LLaVA-NeXT's `IMAGE_TOKEN_INDEX`: one placeholder id spliced where the image embeddings go.
pub const IMAGE_PLACEHOLDER: i64 = -200;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Part {
    Image,
    Text { text: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Vec<Part>,
}

impl Message {
    pub fn user(parts: Vec<Part>) -> Self {
        Message { role: "user".into(), content: parts }
    }
    pub fn assistant(text: &str) -> Self {
        Message { role: "assistant".into(), content: vec![Part::Text { text: text.into() }] }
    }
}

/// A chat template (Jinja, as in the checkpoint's chat_template.json or chat_template.jinja).
pub struct ChatTemplate {
    source: String,
}

impl ChatTemplate {
    /// transformers' `{% generation %}` markers (for training masks) are not Jinja: they are dropped here.
    pub fn new(source: &str) -> Self {
        let source = source.replace("{% generation %}", "").replace("{% endgeneration %}", "");
        ChatTemplate { source }
    }

    /// From a chat_template.json (`{"chat_template": "…"}`).
    pub fn from_json(json: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| Error::Template(format!("chat_template.json: {e}")))?;
        let s = v["chat_template"].as_str().ok_or_else(|| Error::Template("chat_template.json has no \"chat_template\" string".into()))?;
        Ok(Self::new(s))
    }

    /// Refuses a template that does not parse (checked when a model loads, so that a broken template is the
    /// model's error, not every request's).
    pub fn check(&self) -> Result<()> {
        let mut env = minijinja::Environment::new();
        env.add_template("chat", &self.source).map(|_| ()).map_err(|e| Error::Template(format!("the chat template does not parse: {e}")))
    }

    /// The template's Jinja source (markers dropped).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// A checkpoint directory's template: chat_template.json, else chat_template.jinja, else the
    /// `chat_template` of tokenizer_config.json (the original LLaVA-NeXT checkpoint).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path) -> Result<Self> {
        let read = |name: &str| -> Result<Option<String>> {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(t) => Ok(Some(t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::Template(format!("{}: {e}", p.display()))),
            }
        };
        if let Some(j) = read("chat_template.json")? {
            return Self::from_json(&j);
        }
        if let Some(t) = read("chat_template.jinja")? {
            return Ok(Self::new(&t));
        }
        if let Some(c) = read("tokenizer_config.json")? {
            let v: serde_json::Value = serde_json::from_str(&c).map_err(|e| Error::Template(format!("tokenizer_config.json: {e}")))?;
            if let Some(t) = v["chat_template"].as_str() {
                return Ok(Self::new(t));
            }
        }
        Err(Error::Template(format!("{}: no chat template (chat_template.json, chat_template.jinja or tokenizer_config.json)", dir.display())))
    }

    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut env = minijinja::Environment::new();
        env.add_template("chat", &self.source).map_err(|e| Error::Template(format!("chat template: {e}")))?;
        let tmpl = env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(minijinja::context! { messages => messages, add_generation_prompt => add_generation_prompt })
            .map_err(|e| Error::Template(format!("rendering the chat template: {e}")))
    }
}

/// A prompt's token sequence with the image placeholders resolved one way or the other.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptIds {
    /// LLaVA-NeXT convention: each `<image>` is one −200.
    pub llava_next: Vec<i64>,
}

impl PromptIds {
    /// The text between images tokenized chunk by chunk, joined by −200 (LLaVA-NeXT's `tokenizer_image_token`).
    pub fn new(tok: &Tokenizer, prompt: &str) -> Result<Self> {
        let mut ids = Vec::new();
        for (i, chunk) in prompt.split("<image>").enumerate() {
            if i > 0 {
                ids.push(IMAGE_PLACEHOLDER);
            }
            ids.extend(tok.encode(chunk)?.into_iter().map(i64::from));
        }
        Ok(PromptIds { llava_next: ids })
    }

    /// transformers' convention: each placeholder repeated `n_image_tokens[i]` times as `image_token_id`.
    pub fn expanded(&self, image_token_id: u32, n_image_tokens: &[u32]) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut img = 0;
        for &id in &self.llava_next {
            if id == IMAGE_PLACEHOLDER {
                let n = *n_image_tokens.get(img).ok_or_else(|| Error::Template(format!("the prompt has more than {img} images")))?;
                out.extend(std::iter::repeat_n(image_token_id, n as usize));
                img += 1;
            } else {
                out.push(id as u32);
            }
        }
        if img != n_image_tokens.len() {
            return Err(Error::Template(format!("{} images given, the prompt has {img}", n_image_tokens.len())));
        }
        Ok(out)
    }

    /// Tokens the prompt occupies once the images are in.
    pub fn len_with_images(&self, n_image_tokens: &[u32]) -> usize {
        self.llava_next.iter().filter(|&&i| i != IMAGE_PLACEHOLDER).count() + n_image_tokens.iter().map(|&n| n as usize).sum::<usize>()
    }
}
