//! The model's tokenizer (HF `tokenizers` with the checkpoint's tokenizer.json: Qwen2.5's byte-level BPE with
//! VARCO's added tokens) and a streaming detokenizer that never emits half a UTF-8 character.

use crate::{Error, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// From the bytes of a tokenizer.json.
    pub fn from_bytes(json: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(json).map_err(|e| Error::Tokenizer(format!("cannot load tokenizer.json: {e}")))?;
        Ok(Tokenizer { inner })
    }

    /// Ids of `text`; added tokens written in the text (`<gro>`, `<|im_start|>`, …) become their single ids,
    /// and nothing is prepended (Qwen has no BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(format!("encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens kept (VARCO's tags are special tokens).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::Tokenizer(format!("decode: {e}")))
    }

    /// The id of a token written out (`"<|im_end|>"`), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The largest id the tokenizer can produce (added tokens may sit past the base vocabulary).
    pub fn max_id(&self) -> u32 {
        self.inner.get_vocab(true).into_values().max().unwrap_or(0)
    }

    pub fn stream(&self) -> StreamDecoder<'_> {
        StreamDecoder { tok: self, ids: Vec::new(), prefix: 0, read: 0 }
    }
}

/// Turns generated ids into text pieces as they arrive. A byte-level BPE token can end inside a UTF-8
/// character; such text (ending in U+FFFD) is held back until the character completes.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl StreamDecoder<'_> {
    /// Adds one id; returns the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = self.tok.decode(&self.ids[self.prefix..self.read])?;
        let now = self.tok.decode(&self.ids[self.prefix..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            let piece = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }

    /// What is left at the end (an unfinished character comes out as U+FFFD).
    pub fn finish(&mut self) -> Result<Option<String>> {
        let before = self.tok.decode(&self.ids[self.prefix..self.read])?;
        let now = self.tok.decode(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok((now.len() > before.len()).then(|| now[before.len()..].to_string()))
    }
}
