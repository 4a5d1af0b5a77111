//! The `varco` command line: `varco run` (a question about an image, streamed), `varco info` (the adapter),
//! `varco bench kernels`.

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use varco_web::bench::{run_kernels, BenchOptions};
use varco_web::gpu::{Context, ContextOptions, DType};
use varco_web::kernels::linear::MatvecShape;

#[derive(Parser)]
#[command(name = "varco", version, about = "VARCO-VISION on WebGPU: tools")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the GPU adapter and what it offers.
    Info,
    /// Ask the model about an image; the answer streams to stdout.
    Run(RunArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Checkpoint directory (either layout): config.json, tokenizer.json, chat template, safetensors.
    #[arg(long)]
    model: std::path::PathBuf,
    /// The image (JPEG, PNG, WebP, GIF, BMP). Without one, a text-only chat.
    #[arg(long)]
    image: Option<std::path::PathBuf>,
    /// A free question or instruction.
    #[arg(long, conflicts_with_all = ["ocr", "ground", "refer"])]
    prompt: Option<String>,
    /// Every piece of text with its box.
    #[arg(long)]
    ocr: bool,
    /// Objects with boxes; optionally only PHRASE.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    ground: Option<String>,
    /// A question about a region: x1,y1,x2,y2 (0..1 of the image) and the question.
    #[arg(long, num_args = 2, value_names = ["X1,Y1,X2,Y2", "QUESTION"])]
    refer: Option<Vec<String>>,
    /// f32 (exact), f16 or q4.
    #[arg(long, default_value = "f32")]
    precision: String,
    #[arg(long, default_value_t = 1024)]
    max_new_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Print one JSON object (token counts, ids, text, spans and boxes) instead of streaming.
    #[arg(long)]
    json: bool,
    /// Write the image with the answer's boxes and labels (PNG).
    #[arg(long)]
    draw: Option<std::path::PathBuf>,
    /// TrueType font for the labels (default: a system font with Hangul).
    #[arg(long)]
    font: Option<std::path::PathBuf>,
    /// Before answering, compare the GPU's logits after the prompt with the CPU reference (candle, f32);
    /// fails beyond 1e-3 (f32) or 2e-2 (f16) relative error. Slow: for small models and prompts.
    #[arg(long)]
    check: bool,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Every kernel at the 14B model's shapes, against a bandwidth or compute roofline.
    Kernels {
        /// Dispatches per timing.
        #[arg(long, default_value_t = 100)]
        iters: u32,
        /// Only kernels whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Activation type: f16 (default where supported) or f32.
        #[arg(long)]
        act: Option<String>,
        /// Bandwidth roofline in GB/s.
        #[arg(long, default_value_t = 4350.0)]
        peak_gbs: f64,
        /// Compute roofline in TFLOP/s.
        #[arg(long, default_value_t = 67.0)]
        peak_tflops: f64,
        /// MiB of weight copies to rotate through.
        #[arg(long, default_value_t = 512)]
        rotate_mib: u64,
        /// Matrix-vector shapes to try, as WG:ROWS,... (e.g. 64:4,128:2).
        #[arg(long, default_value = "64:4")]
        matvec: String,
        /// Also write the table to this file.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let ctx = pollster::block_on(Context::new(ContextOptions::default())).context("no usable GPU adapter")?;
    match cli.cmd {
        Cmd::Run(args) => run(&ctx, args)?,
        Cmd::Info => {
            println!("{}", ctx.describe());
            println!("{:#?}", ctx.caps);
        }
        Cmd::Bench { what: BenchCmd::Kernels { iters, filter, act, peak_gbs, peak_tflops, rotate_mib, matvec, out } } => {
            let act = match act.as_deref() {
                None if ctx.caps.f16 => DType::F16,
                None | Some("f32") => DType::F32,
                Some("f16") => DType::F16,
                Some(other) => anyhow::bail!("--act {other}: expected f16 or f32"),
            };
            let matvec_shapes = matvec
                .split(',')
                .map(|s| {
                    let (a, b) = s.split_once(':').context("--matvec takes WG:ROWS pairs")?;
                    Ok(MatvecShape { wg: a.parse()?, rows: b.parse()? })
                })
                .collect::<Result<Vec<_>>>()?;
            let opts = BenchOptions { iters, filter, act, peak_gbs, peak_tflops, rotate_bytes: rotate_mib << 20, matvec_shapes };
            let table = run_kernels(&ctx, &opts)?;
            println!("{table}");
            if let Some(path) = out {
                std::fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}

fn read_text(dir: &std::path::Path, name: &str) -> Result<Option<String>> {
    let p = dir.join(name);
    if !p.exists() {
        return Ok(None);
    }
    Ok(Some(std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?))
}

fn chat_template(dir: &std::path::Path) -> Result<varco_web::chat::ChatTemplate> {
    use varco_web::chat::ChatTemplate;
    if let Some(j) = read_text(dir, "chat_template.json")? {
        return Ok(ChatTemplate::from_json(&j)?);
    }
    if let Some(t) = read_text(dir, "chat_template.jinja")? {
        return Ok(ChatTemplate::new(&t));
    }
    if let Some(c) = read_text(dir, "tokenizer_config.json")? {
        let v: serde_json::Value = serde_json::from_str(&c)?;
        if let Some(t) = v["chat_template"].as_str() {
            return Ok(ChatTemplate::new(t));
        }
    }
    anyhow::bail!("{}: no chat template (chat_template.json, chat_template.jinja or tokenizer_config.json)", dir.display())
}

fn run(ctx: &Context, a: RunArgs) -> Result<()> {
    use std::io::Write;
    use varco_web::answer::{self, prompts};
    use varco_web::chat::{Message, Part, PromptIds};
    use varco_web::generate::{generate, GenerateOptions};
    use varco_web::kernels::sample::Sampling;
    use varco_web::model::{config::ModelConfig, llm::Precision, Model};

    let question = if a.ocr {
        prompts::ocr()
    } else if let Some(p) = &a.ground {
        prompts::ground((!p.is_empty()).then_some(p.as_str()))
    } else if let Some(r) = &a.refer {
        let b: Vec<f32> = r[0].split(',').map(|v| v.trim().parse::<f32>()).collect::<Result<_, _>>().context("--refer takes x1,y1,x2,y2")?;
        anyhow::ensure!(b.len() == 4 && b.iter().all(|v| (0.0..=1.0).contains(v)), "--refer takes four numbers in 0..1");
        prompts::refer("this", [b[0], b[1], b[2], b[3]], &format!(" {}", r[1]))
    } else {
        a.prompt.clone().unwrap_or_else(prompts::describe)
    };
    let precision = Precision::parse(&a.precision)?;
    let weights = varco_web::weights::WeightSource::open_dir(&a.model)?;
    let config = read_text(&a.model, "config.json")?.with_context(|| format!("{}: no config.json", a.model.display()))?;
    let cfg = ModelConfig::from_json(&config, &weights)?;
    let tok_json = std::fs::read(a.model.join("tokenizer.json")).with_context(|| format!("{}: no tokenizer.json", a.model.display()))?;
    let tok = varco_web::tokenizer::Tokenizer::from_bytes(&tok_json)?;
    let model = Model::load(ctx, &weights, &cfg, precision)?;
    let mut parts = Vec::new();
    let mut rgb = None;
    let font = match &a.draw {
        Some(_) => Some(varco_web::draw::load_font(a.font.as_deref())?),
        None => None,
    };
    anyhow::ensure!(a.draw.is_none() || a.image.is_some(), "--draw needs --image");
    let image = match &a.image {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let img = varco_web::image::decode(&bytes, Default::default())?;
            parts.push(Part::Image);
            let enc = model.encode_image(ctx, &img)?;
            rgb = Some(img);
            Some(enc)
        }
        None => None,
    };
    let image_wh = rgb.as_ref().map(|i| i.dimensions());
    parts.push(Part::Text { text: question });
    let prompt = chat_template(&a.model)?.render(&[Message::user(parts)], true)?;
    let ids = PromptIds::new(&tok, &prompt)?;
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling: Sampling { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p },
        seed: a.seed,
        repetition_penalty: a.repetition_penalty,
    };
    let feats = image.as_ref().map(|(_, f)| f);
    if a.check {
        check(ctx, &model, &weights, &cfg, &ids.llava_next, feats, rgb.as_ref(), precision)?;
    }
    let stdout = std::io::stdout();
    let json = a.json;
    let gen = generate(ctx, &model, &tok, &ids.llava_next, feats, &opts, |piece| {
        if !json {
            let mut o = stdout.lock();
            let _ = o.write_all(piece.as_bytes());
            let _ = o.flush();
        }
    })?;
    let spans = answer::parse(&gen.text, image_wh);
    if let (Some(path), Some(img), Some(font)) = (&a.draw, &rgb, &font) {
        let drawn = varco_web::draw::draw(img, &spans, font);
        // written beside, then moved, so a failed run never leaves half a PNG
        let tmp = path.with_extension("partial.png");
        drawn.save(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        let out = serde_json::json!({
            "prompt_tokens": gen.prompt_tokens,
            "image_tokens": image.as_ref().map(|(p, _)| p.n_tokens),
            "generated_ids": gen.ids,
            "text": gen.text,
            "stop": gen.stop,
            "spans": spans,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!();
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn check(
    ctx: &Context,
    model: &varco_web::model::Model,
    weights: &varco_web::weights::WeightSource,
    cfg: &varco_web::model::config::ModelConfig,
    ids: &[i64],
    feats: Option<&varco_web::gpu::Tensor>,
    rgb: Option<&image::RgbImage>,
    precision: varco_web::model::llm::Precision,
) -> Result<()> {
    use varco_web::model::llm::Precision;
    let n = ids.len() + feats.map_or(0, |f| f.shape[0]);
    let mut cache = model.llm.new_cache(ctx, n)?;
    let gpu = pollster::block_on(model.prefill(ctx, ids, feats, &mut cache)?.to_f32(ctx))?;
    let r = varco_web::reference::Reference::new(weights, cfg);
    let img = match rgb {
        Some(img) => {
            let (plan, tiles) = varco_web::image::tiles(img, &cfg.anyres)?;
            Some(r.image_features(&varco_web::image::normalize(&tiles), &plan)?)
        }
        None => None,
    };
    let cpu = r.logits(ids, img.as_ref())?;
    let (mut num, mut den) = (0f64, 0f64);
    for (g, c) in gpu.iter().zip(&cpu) {
        num += (*g as f64 - *c as f64).powi(2);
        den += (*c as f64).powi(2);
    }
    let rel = (num / den.max(1e-300)).sqrt();
    let argmax = |v: &[f32]| v.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0;
    let (ga, ca) = (argmax(&gpu), argmax(&cpu));
    eprintln!("check: {n} prompt tokens; GPU vs CPU reference logits: relative error {rel:.2e}; top-1 {ga} vs {ca}");
    let tol = match precision {
        Precision::F32 => Some(1e-3),
        Precision::F16 => Some(2e-2),
        Precision::Q4 => None,
    };
    if let Some(t) = tol {
        anyhow::ensure!(rel <= t, "check failed: relative error {rel:.2e} > {t:.0e}");
    }
    Ok(())
}
