//! The `varco` command line: `varco run` (a question about an image, streamed), `varco convert` (a checkpoint
//! into shards for the web), `varco info` (the adapter), `varco bench kernels`.

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use varco_web::bench::{run_kernels, BenchOptions};
use varco_web::gpu::tensor::WeightFormat;
use varco_web::gpu::{Context, ContextOptions, DType};
use varco_web::kernels::linear::MatvecShape;
use varco_web::loader::Precision;

/// Tokens of context `varco run` gives a checkpoint's session (a converted model's manifest names its own).
const DEFAULT_CONTEXT: usize = 8192;

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
    /// Convert a checkpoint (either layout) into a manifest and verified shards, for a CDN and the browser.
    Convert(ConvertArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(clap::Args)]
struct ConvertArgs {
    /// Checkpoint directory: config.json, tokenizer.json, a chat template, model.safetensors or shards with
    /// model.safetensors.index.json (the -HF or the original LLaVA-NeXT layout).
    #[arg(long)]
    input: std::path::PathBuf,
    /// Output directory (must not exist; written as OUTPUT.partial and renamed when complete).
    #[arg(long)]
    output: std::path::PathBuf,
    /// The LLM's linear layers: q4 (default), q8 or f16.
    #[arg(long, default_value = "q4")]
    llm: String,
    /// embed_tokens: q4 (default), q8 or f16.
    #[arg(long, default_value = "q4")]
    embed: String,
    /// lm_head: q8 (default), q4 or f16.
    #[arg(long, default_value = "q8")]
    lm_head: String,
    /// Vision tower and projector: q8 (default), f16 or q4.
    #[arg(long, default_value = "q8")]
    vision: String,
    /// Shard size in MiB (default 64; see docs/FORMAT.md).
    #[arg(long, default_value_t = 64)]
    shard_mib: u64,
    /// Shard size in bytes (a multiple of 256; overrides --shard-mib).
    #[arg(long)]
    shard_bytes: Option<u64>,
    /// Context length for the manifest's GPU-memory figure.
    #[arg(long, default_value_t = 8192)]
    context: usize,
    /// Print each matrix's quantization error (relative RMS) in q4, q8 and f16.
    #[arg(long)]
    report: bool,
    /// Also write the report as JSON.
    #[arg(long)]
    report_json: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// A checkpoint directory (either layout: config.json, tokenizer.json, chat template, safetensors), or a
    /// directory made by `varco convert` (manifest.json and shards).
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
    /// Checkpoints: f32 (exact, the default), f16 or q4 (quantized at load as `varco convert` does).
    /// Converted models: f32 for f32 activations; by default f16 where the GPU has shader-f16.
    #[arg(long)]
    precision: Option<String>,
    /// The answer's most tokens (default: the model's generation defaults, 1024 for VARCO).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Sampling temperature (0: greedy; default: the model's generation defaults).
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    top_k: Option<u32>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// Tokens of context the session holds (default: a converted model's own, else 8192).
    #[arg(long)]
    max_context: Option<usize>,
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
    /// Answer many requests with one model load: a JSON Lines file, one request a line,
    /// `{"id": ..., "image": PATH, "prompt": TEXT}` (`image` relative to the file's folder, optional;
    /// `max_new_tokens` optional). Prints one JSON line per request as it finishes: `{"id", "text",
    /// "prompt_tokens", "completion_tokens", "seconds"}`, or `{"id", "error"}` for a request that failed (the
    /// others go on).
    #[arg(long, conflicts_with_all = ["image", "prompt", "ocr", "ground", "refer", "check", "draw"])]
    batch: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// The whole model with the 14B's shapes and random weights (default formats), built on the GPU: decode,
    /// prefill, vision, time to first token, peak memory, a decode-step profile and the roofline.
    Model {
        /// 14b, or small (the same structure, tiny; for CPU drivers).
        #[arg(long, default_value = "14b")]
        shape: String,
        /// Contexts for the decode figure.
        #[arg(long, value_delimiter = ',', default_value = "1024,8192")]
        contexts: Vec<usize>,
        /// Decode steps timed per context.
        #[arg(long, default_value_t = 32)]
        steps: usize,
        /// Prompt tokens for the prefill figure (a 1024×768 image and its question).
        #[arg(long, default_value_t = 4725)]
        prompt: usize,
        /// Tiles for the vision-tower figure.
        #[arg(long, value_delimiter = ',', default_value = "7,37")]
        tiles: Vec<usize>,
        /// Runs of each figure (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// A converted model whose tokenizer and chat template the benchmark's session uses.
        #[arg(long, default_value = "web/demo/public/models/small")]
        like: std::path::PathBuf,
        /// Activations: f16 (the default where the GPU has shader-f16) or f32.
        #[arg(long)]
        act: Option<String>,
        /// Run the kernels' workgroup-memory reductions instead of subgroup operations (as a browser without
        /// subgroups does).
        #[arg(long)]
        no_subgroups: bool,
        /// Build the shaders without naga's runtime checks (index clamping, loop bounding) on any backend
        /// (the default leaves them out on Vulkan only).
        #[arg(long, conflicts_with = "runtime_checks")]
        no_runtime_checks: bool,
        /// Build the shaders with naga's runtime checks on any backend, to measure what they cost on Vulkan.
        #[arg(long)]
        runtime_checks: bool,
        /// The prefill and vision matmuls in packed f16 (f16 activations: tiles and their products in f16,
        /// summed in f32 across groups of 32), the portable-f16 tier of issue 14.
        #[arg(long)]
        packed_f16: bool,
        /// Prefill attention (head size 128, off the tensor cores) in 32 queries × 64 keys a step.
        #[arg(long)]
        attention_q32: bool,
        /// Variants of the portable tiled matmul, comma-separated: il (tile reads interleaved), pf (the next
        /// tile prefetched into registers; q4 and q8 weights), ur (its k steps unrolled), bw (with pf, q4: W's
        /// dequantizing spread over all invocations), ma (products as a multiply and an add), w8 (a subgroup
        /// over 8 × 4 invocations of the block), t16 (128 invocations of 16 × 8 outputs; q4, the 128-wide
        /// tile, with pf), or none; il, pf and ur by default. Ablations for measurement,
        /// with wrong products: xl (no loads after the first tile; with pf), xs (neither loads nor staging
        /// after it; with pf), xb (every invocation reads the same vec4s of W's staged tile).
        #[arg(long)]
        tiled_matmul: Option<String>,
        /// Keep the prefill and vision matmuls off the tensor cores (the cooperative-matrix tier, on by default
        /// where the adapter has it), to measure the portable tiers.
        #[arg(long)]
        no_coop: bool,
        /// Keep prefill and SigLIP attention off the tensor cores (on by default with the matmul tier).
        #[arg(long)]
        no_coop_attention: bool,
        /// Keep the decode step's q4 products in floats (TOP) instead of 8-bit integer dot products (on by
        /// default on a native GPU).
        #[arg(long)]
        no_int_dot: bool,
        /// The cooperative-matrix matmul's shape, KT:RI or KT:RI:BUFS (K values a stage : 16-row tiles a
        /// subgroup : staged copies), one of the built ones (32:4, the default; 64:2, 32:2, 64:4, and the
        /// double-buffered 32:2:2, 32:4:2).
        #[arg(long)]
        coop_shape: Option<String>,
        /// Only the decode figures and the decode step's profile.
        #[arg(long)]
        decode_only: bool,
        /// Keys per block of decode attention (32, 64 or 128, the default: `attention::decode_block`).
        #[arg(long)]
        decode_block: Option<u32>,
        /// Workgroups decode attention's splits aim for (512, the default, 256 or 1024).
        #[arg(long)]
        decode_workgroups: Option<u32>,
        /// Tokens a prefill chunk takes at most (default: the most, up to 8,192, whose buffers fit the
        /// device's binding limit; a session paces its chunks below that, `model::paced_chunk`).
        #[arg(long)]
        prefill_chunk: Option<usize>,
        /// Replace some of the decode step's fused-kernel shapes the model picks, as
        /// ROLE=WG:ROWS:BLOCKS[:top|:exact|:dot4|:loads],... (roles qkv, o, gate_up, down, lm_head; :loads
        /// times the step with the loads of a matrix but not its products: a bound, its tokens meaningless),
        /// and prepare=off|ffn|all: x prepared once (ffn: gate/up writes its output's 8-bit codes for down;
        /// all: attention, o and down write theirs too; DOT4 shapes only; the model takes ffn where it measured faster, `Prepare::measured`),
        /// warm=N: o's weights read into the cache beside decode attention's split where it has at most N
        /// workgroups (default 0, never: measured slower), warm_gate_up=MIB: gate/up's first rows with them,
        /// warm_wgs=N: the warming dispatch's workgroups (default 256), and
        /// greedy=lm_head|logits: greedy's first pass in lm_head's epilogue or (default) over the logits.
        #[arg(long)]
        decode_shapes: Option<String>,
        /// Also write the report to this file.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Also write the figures as JSON to this file (for scripts/bench-wasm.mjs's native-against-wasm
        /// table).
        #[arg(long)]
        figures: Option<std::path::PathBuf>,
    },
    /// Conversion throughput: converts a checkpoint (or a synthetic one with the 14B's shapes) into a
    /// temporary directory and prints MB/s and peak memory.
    Convert {
        /// A checkpoint directory to convert.
        #[arg(long, conflicts_with = "synthetic_layers")]
        input: Option<std::path::PathBuf>,
        /// Instead: a synthetic checkpoint with the 14B's names and shapes and this many LLM layers.
        #[arg(long)]
        synthetic_layers: Option<usize>,
        /// Where the synthetic checkpoint takes tokenizer.json and its chat template from.
        #[arg(long, default_value = "../shared/fixtures/tiny-varco-a/model-hf")]
        like: std::path::PathBuf,
    },
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
        /// Compute roofline of the tensor cores (dense f16 → f32) in TFLOP/s, for the cooperative-matrix rows.
        #[arg(long, default_value_t = 989.0)]
        peak_tensor_tflops: f64,
        /// MiB of weight copies to rotate through.
        #[arg(long, default_value_t = 512)]
        rotate_mib: u64,
        /// Matrix-vector shapes to try, as WG:ROWS,... (e.g. 64:4,128:2); by default the one the model
        /// picks for each matrix.
        #[arg(long)]
        matvec: Option<String>,
        /// Shapes of the decode step's fused kernel to try, as WG:ROWS:BLOCKS[:top|:exact|:dot4|:loads|:xq8],...
        /// (for the model's two shapes, bounds: `:loads` the loads alone, `:xq8` DOT4 on x already
        /// quantized); `all` for every shape it is built in; by default the model's, and with DOT4 also each
        /// matrix with x prepared once (the producers' 256-invocation workgroups, the readers' codes).
        #[arg(long)]
        fused: Option<String>,
        /// The matmuls in packed f16 (`bench model --packed-f16`'s tier; f16 activations).
        #[arg(long)]
        packed_f16: bool,
        /// Prefill attention (head size 128, off the tensor cores) in 32 queries × 64 keys a step.
        #[arg(long)]
        attention_q32: bool,
        /// Variants of the portable tiled matmul, comma-separated: il (tile reads interleaved), pf (the next
        /// tile prefetched into registers; q4 and q8 weights), ur (its k steps unrolled), bw (with pf, q4: W's
        /// dequantizing spread over all invocations), ma (products as a multiply and an add), w8 (a subgroup
        /// over 8 × 4 invocations of the block), t16 (128 invocations of 16 × 8 outputs; q4, the 128-wide
        /// tile, with pf), or none; il, pf and ur by default. Ablations for measurement,
        /// with wrong products: xl (no loads after the first tile; with pf), xs (neither loads nor staging
        /// after it; with pf), xb (every invocation reads the same vec4s of W's staged tile).
        #[arg(long)]
        tiled_matmul: Option<String>,
        /// Leave out the cooperative-matrix matmul (timed where the adapter has it, after a check against the
        /// tiled kernel's output).
        #[arg(long)]
        no_coop: bool,
        /// Leave out attention on the tensor cores (timed beside the other kernels where the tier is on).
        #[arg(long)]
        no_coop_attention: bool,
        /// Also write the table to this file.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::Convert(a) = cli.cmd {
        return convert(a);
    }
    let ctx = pollster::block_on(Context::new(ContextOptions::default())).context("no usable GPU adapter")?;
    if let Cmd::Bench { what: BenchCmd::Convert { input, synthetic_layers, like } } = cli.cmd {
        return bench_convert(input, synthetic_layers, &like);
    }
    match cli.cmd {
        Cmd::Convert(_) | Cmd::Bench { what: BenchCmd::Convert { .. } } => unreachable!("handled above"),
        Cmd::Run(args) => run(&ctx, args)?,
        Cmd::Info => {
            println!("{}", ctx.describe());
            println!("{:#?}", ctx.caps);
        }
        Cmd::Bench { what: BenchCmd::Model { shape, contexts, steps, prompt, tiles, runs, like, act, no_subgroups, no_runtime_checks, runtime_checks, packed_f16, attention_q32, tiled_matmul, no_coop, no_coop_attention, no_int_dot, coop_shape, decode_only, decode_block, decode_workgroups, prefill_chunk, decode_shapes, out, figures } } => {
            use varco_web::bench::model::{run_model, ModelBenchOptions, Text};
            let act = act.as_deref().map(DType::parse_act).transpose()?;
            let coop_shape = coop_shape.as_deref().map(varco_web::kernels::linear::CoopShape::parse).transpose()?;
            let tiled = tiled_matmul.as_deref().map(varco_web::gpu::TiledMatmul::parse).transpose()?;
            let ctx = if no_subgroups || no_runtime_checks || runtime_checks || packed_f16 || attention_q32 || tiled.is_some() || no_coop || no_coop_attention || no_int_dot || coop_shape.is_some() || decode_block.is_some() || decode_workgroups.is_some() {
                drop(ctx);
                let defaults = ContextOptions::default();
                let opts = ContextOptions { allow_subgroups: !no_subgroups, runtime_checks: (no_runtime_checks || runtime_checks).then_some(runtime_checks), packed_f16_matmul: packed_f16, attention_q32, tiled_matmul: tiled.unwrap_or(defaults.tiled_matmul), coop_matmul: !no_coop, coop_attention: !no_coop_attention, int_dot_decode: !no_int_dot, coop_shape: coop_shape.unwrap_or(defaults.coop_shape), decode_tuning: varco_web::gpu::DecodeTuning { block: decode_block, workgroups: decode_workgroups }, ..defaults };
                pollster::block_on(Context::new(opts)).context("no usable GPU adapter")?
            } else {
                ctx
            };
            let o = ModelBenchOptions { shape, contexts, steps, prompt, tiles, plan: varco_web::loader::plan::QuantPlan::DEFAULT, runs, act, decode_only, decode_shapes, prefill_chunk };
            let report = pollster::block_on(run_model(&ctx, &o, Text::from_dir(&like)?))?;
            println!("{}", report.markdown);
            if let Some(path) = out {
                std::fs::write(&path, &report.markdown).with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(path) = figures {
                std::fs::write(&path, serde_json::to_string_pretty(&report.figures)?).with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Cmd::Bench { what: BenchCmd::Kernels { iters, filter, act, peak_gbs, peak_tflops, peak_tensor_tflops, rotate_mib, matvec, fused, packed_f16, attention_q32, tiled_matmul, no_coop, no_coop_attention, out } } => {
            let tiled = tiled_matmul.as_deref().map(varco_web::gpu::TiledMatmul::parse).transpose()?;
            let ctx = if packed_f16 || attention_q32 || tiled.is_some() || no_coop || no_coop_attention {
                drop(ctx);
                let defaults = ContextOptions::default();
                let opts = ContextOptions { packed_f16_matmul: packed_f16, attention_q32, tiled_matmul: tiled.unwrap_or(defaults.tiled_matmul), coop_matmul: !no_coop, coop_attention: !no_coop_attention, ..defaults };
                pollster::block_on(Context::new(opts)).context("no usable GPU adapter")?
            } else {
                ctx
            };
            let act = match act.as_deref() {
                None if ctx.caps.f16 => DType::F16,
                None => DType::F32,
                Some(name) => DType::parse_act(name)?,
            };
            let matvec_shapes = matvec
                .iter()
                .flat_map(|m| m.split(','))
                .map(|s| {
                    let (a, b) = s.split_once(':').context("--matvec takes WG:ROWS pairs")?;
                    Ok(MatvecShape { wg: a.parse()?, rows: b.parse()? })
                })
                .collect::<Result<Vec<_>>>()?;
            let fused_shapes = match fused.as_deref() {
                None => Vec::new(),
                Some("all") => varco_web::kernels::linear::FUSED_SHAPES.to_vec(),
                Some(list) => list.split(',').map(|s| varco_web::kernels::linear::FusedShape::parse(s, true)).collect::<Result<Vec<_>, _>>()?,
            };
            let opts = BenchOptions { iters, filter, act, peak_gbs, peak_tflops, peak_tensor_tflops, rotate_bytes: rotate_mib << 20, matvec_shapes, fused_shapes };
            let table = run_kernels(&ctx, &opts)?;
            println!("{table}");
            if let Some(path) = out {
                std::fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}

fn format_arg(flag: &str, v: &str) -> Result<WeightFormat> {
    match v {
        "q4" => Ok(WeightFormat::Q4),
        "q8" => Ok(WeightFormat::Q8),
        "f16" => Ok(WeightFormat::F16),
        _ => anyhow::bail!("--{flag} {v}: expected q4, q8 or f16"),
    }
}

fn convert(a: ConvertArgs) -> Result<()> {
    use indicatif::{ProgressBar, ProgressStyle};
    use varco_web::convert::{self, Options};
    use varco_web::loader::plan::QuantPlan;
    let plan = QuantPlan {
        llm: format_arg("llm", &a.llm)?,
        embed: format_arg("embed", &a.embed)?,
        lm_head: format_arg("lm-head", &a.lm_head)?,
        vision: format_arg("vision", &a.vision)?,
    };
    let opts = Options { plan, shard_size: a.shard_bytes.unwrap_or(a.shard_mib << 20), context: a.context, report: a.report || a.report_json.is_some() };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}").expect("a valid progress template"),
    );
    let start = std::time::Instant::now();
    let out = convert::convert(&a.input, &a.output, &opts, &mut |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(p.tensor.to_string());
    });
    bar.finish_and_clear();
    let out = out?;
    let m = &out.manifest;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{}: {} tensors in {} shards, {:.1} MB ({:.1} MB/s); GPU memory {:.2} GB at {} tokens of context",
        a.output.display(),
        m.tensors.len(),
        m.shards.len(),
        m.total_bytes as f64 / 1e6,
        m.total_bytes as f64 / 1e6 / secs,
        m.memory.total as f64 / 1e9,
        m.memory.context
    );
    if opts.report {
        println!("{:<44} {:>14} {:>6} {:>10} {:>10} {:>10}", "tensor", "shape", "stored", "q4 err", "q8 err", "f16 err");
        for e in &out.errors {
            println!("{:<44} {:>14} {:>6} {:>10.3e} {:>10.3e} {:>10.3e}", e.name, format!("{}x{}", e.n, e.k), format!("{:?}", e.format).to_lowercase(), e.q4, e.q8, e.f16);
        }
    }
    if let Some(p) = &a.report_json {
        std::fs::write(p, serde_json::to_vec_pretty(&out.errors)?).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn bench_convert(input: Option<std::path::PathBuf>, synthetic_layers: Option<usize>, like: &std::path::Path) -> Result<()> {
    use varco_web::convert::{self, synthetic, Options};
    let tmp = tempfile::tempdir()?;
    let input = match (input, synthetic_layers) {
        (Some(i), _) => i,
        (None, layers) => {
            let dir = tmp.path().join("synthetic");
            std::fs::create_dir(&dir)?;
            let t = std::time::Instant::now();
            let shape = synthetic::Shape { text_layers: layers.unwrap_or(2), vision_layers: 1 };
            let bytes = synthetic::write(&dir, shape, 1)?;
            for f in ["tokenizer.json", "chat_template.json"] {
                std::fs::copy(like.join(f), dir.join(f)).with_context(|| format!("copying {f} from {}", like.display()))?;
            }
            eprintln!("synthetic checkpoint: {:.2} GB ({shape:?}) written in {:.1} s", bytes as f64 / 1e9, t.elapsed().as_secs_f64());
            dir
        }
    };
    let in_bytes: u64 = std::fs::read_dir(&input)?.filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == "safetensors")).map(|e| e.metadata().map_or(0, |m| m.len())).sum();
    let t = std::time::Instant::now();
    let out = convert::convert(&input, &tmp.path().join("out"), &Options::default(), &mut |_| {})?;
    let secs = t.elapsed().as_secs_f64();
    let hwm = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| s.lines().find(|l| l.starts_with("VmHWM")).map(|l| l.to_string()));
    println!(
        "convert: {:.2} GB in, {:.2} GB out in {secs:.1} s: {:.0} MB/s read, {:.0} MB/s written; peak memory {}",
        in_bytes as f64 / 1e9,
        out.manifest.total_bytes as f64 / 1e9,
        in_bytes as f64 / 1e6 / secs,
        out.manifest.total_bytes as f64 / 1e6 / secs,
        hwm.as_deref().unwrap_or("VmHWM: unknown")
    );
    Ok(())
}

/// The model, its tokenizer, chat template and generation defaults, from a checkpoint or a converted
/// directory; the checkpoint itself too (for --check).
struct Loaded {
    model: varco_web::model::Model,
    tok: varco_web::tokenizer::Tokenizer,
    template: varco_web::chat::ChatTemplate,
    generation: varco_web::loader::manifest::Generation,
    /// The context the model was made for (a converted model's manifest), if it says.
    context: Option<usize>,
    checkpoint: Option<(varco_web::weights::WeightSource, Precision)>,
}

fn load(ctx: &Context, dir: &std::path::Path, precision: Option<&str>) -> Result<Loaded> {
    use varco_web::chat::ChatTemplate;
    use varco_web::loader::manifest::Generation;
    use varco_web::model::config::ModelConfig;
    use varco_web::tokenizer::Tokenizer;
    if dir.join(varco_web::loader::manifest::MANIFEST_FILE).exists() {
        let act = match precision {
            Some("f32") => Some(DType::F32),
            None => None,
            Some(p) => anyhow::bail!("--precision {p}: a converted model's weights are fixed; only f32 (activations) can be asked for"),
        };
        let c = varco_web::loader::stream::Converted::open_dir(ctx, dir, act)?;
        return Ok(Loaded {
            model: c.model,
            tok: c.tokenizer,
            template: c.template,
            generation: c.generation,
            context: Some(c.context),
            checkpoint: None,
        });
    }
    let precision = Precision::parse(precision.unwrap_or("f32"))?;
    let weights = varco_web::weights::WeightSource::open_dir(dir)?;
    let p = dir.join("config.json");
    let config = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let cfg = ModelConfig::from_json(&config, &weights)?;
    let tok_json = std::fs::read(dir.join("tokenizer.json")).with_context(|| format!("{}: no tokenizer.json", dir.display()))?;
    let model = varco_web::loader::load_checkpoint(ctx, &weights, &cfg, precision)?;
    Ok(Loaded {
        model,
        tok: Tokenizer::from_bytes(&tok_json)?,
        template: ChatTemplate::from_dir(dir)?,
        generation: Generation::from_dir(dir, cfg.text.eos_token_id)?,
        context: None,
        checkpoint: Some((weights, precision)),
    })
}

impl RunArgs {
    /// The sampling settings the options ask for (`max_new_tokens` where a request sets its own).
    fn settings(&self, max_new_tokens: Option<usize>) -> varco_web::generate::Settings {
        varco_web::generate::Settings {
            max_new_tokens: max_new_tokens.or(self.max_new_tokens),
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            repetition_penalty: self.repetition_penalty,
            ignore_eos: false,
        }
    }

    /// A session on the loaded model, holding `--max-context` tokens (default: a converted model's own, else
    /// DEFAULT_CONTEXT; never beyond the model's positions).
    fn session(&self, ctx: &Context, model: varco_web::model::Model, tok: varco_web::tokenizer::Tokenizer, template: varco_web::chat::ChatTemplate, generation: varco_web::loader::manifest::Generation, context: Option<usize>) -> Result<varco_web::session::Session> {
        let context = self.max_context.or(context).unwrap_or(DEFAULT_CONTEXT).min(model.cfg.text.max_positions);
        Ok(pollster::block_on(varco_web::session::Session::new(ctx, model, tok, template, generation, context))?)
    }
}

/// An image file, decoded as the engine decodes one.
fn read_image(path: &std::path::Path) -> Result<image::RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(varco_web::image::decode(&bytes, Default::default())?)
}

/// The user's message: the image first where there is one, then the text.
fn user_message(image: bool, text: String) -> varco_web::chat::Message {
    use varco_web::chat::{Message, Part};
    let mut parts = Vec::new();
    if image {
        parts.push(Part::Image);
    }
    parts.push(Part::Text { text });
    Message::user(parts)
}

fn run(ctx: &Context, a: RunArgs) -> Result<()> {
    use std::io::Write;
    use varco_web::answer::prompts;
    use varco_web::session::Request;

    if let Some(path) = a.batch.clone() {
        return run_batch(ctx, a, &path);
    }
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
    let font = match &a.draw {
        Some(_) => Some(varco_web::draw::load_font(a.font.as_deref())?),
        None => None,
    };
    anyhow::ensure!(a.draw.is_none() || a.image.is_some(), "--draw needs --image");
    let image = a.image.as_deref().map(read_image).transpose()?;
    let Loaded { model, tok, template, generation, context, checkpoint } = load(ctx, &a.model, a.precision.as_deref())?;
    let messages = vec![user_message(image.is_some(), question)];
    if a.check {
        let Some((weights, precision)) = &checkpoint else {
            anyhow::bail!("--check compares with the CPU reference of a checkpoint: give a checkpoint directory, not a converted one")
        };
        let text = template.render(&messages, true)?;
        let ids = varco_web::chat::PromptIds::new(&tok, &text)?;
        check(ctx, &model, weights, &ids.llava_next, image.as_ref(), *precision)?;
    }
    let mut session = a.session(ctx, model, tok, template, generation, context)?;
    let req = Request { settings: a.settings(None), ..Request::chat(messages, image) };
    let stdout = std::io::stdout();
    let json = a.json;
    let answer = pollster::block_on(session.answer(
        ctx,
        &req,
        &mut |piece| {
            if !json {
                let mut o = stdout.lock();
                let _ = o.write_all(piece.as_bytes());
                let _ = o.flush();
            }
        },
        &|| false,
    ))?;
    if let (Some(path), Some(img), Some(font)) = (&a.draw, &req.image, &font) {
        let drawn = varco_web::draw::draw(img, &answer.spans, font);
        // written beside, then moved, so a failed run never leaves half a PNG
        let tmp = path.with_extension("partial.png");
        drawn.save(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!();
    }
    Ok(())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    id: serde_json::Value,
    #[serde(default)]
    image: Option<std::path::PathBuf>,
    prompt: String,
    #[serde(default)]
    max_new_tokens: Option<usize>,
}

/// `varco run --batch`: every line is read and checked before the model loads, so a typo on line 900 costs
/// nothing; then the requests run in order on one session.
fn run_batch(ctx: &Context, a: RunArgs, path: &std::path::Path) -> Result<()> {
    use std::io::Write;
    use varco_web::session::Request;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    let mut reqs = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let r: BatchRequest = serde_json::from_str(line).with_context(|| format!("{}:{}: not a request ({{\"id\", \"prompt\", \"image\"?, \"max_new_tokens\"?}})", path.display(), i + 1))?;
        if let Some(img) = &r.image {
            let p = base.join(img);
            anyhow::ensure!(p.is_file(), "{}:{}: image {} does not exist", path.display(), i + 1, p.display());
        }
        reqs.push(r);
    }
    anyhow::ensure!(!reqs.is_empty(), "{}: no requests", path.display());
    let Loaded { model, tok, template, generation, context, .. } = load(ctx, &a.model, a.precision.as_deref())?;
    let mut session = a.session(ctx, model, tok, template, generation, context)?;
    let stdout = std::io::stdout();
    for r in reqs {
        let t0 = std::time::Instant::now();
        let result = (|| -> Result<varco_web::session::Answer> {
            let image = r.image.as_ref().map(|p| read_image(&base.join(p))).transpose()?;
            let messages = vec![user_message(image.is_some(), r.prompt.clone())];
            let req = Request { settings: a.settings(r.max_new_tokens), ..Request::chat(messages, image) };
            Ok(pollster::block_on(session.answer(ctx, &req, &mut |_| {}, &|| false))?)
        })();
        let line = match result {
            Ok(ans) => serde_json::json!({"id": r.id, "text": ans.text, "prompt_tokens": ans.usage.prompt_tokens,
                "completion_tokens": ans.usage.completion_tokens, "seconds": t0.elapsed().as_secs_f64()}),
            Err(e) => serde_json::json!({"id": r.id, "error": format!("{e:#}")}),
        };
        let mut o = stdout.lock();
        writeln!(o, "{line}")?;
        o.flush()?;
    }
    Ok(())
}

/// Compares the GPU's logits after the prompt with the CPU reference's.
fn check(ctx: &Context, model: &varco_web::model::Model, weights: &varco_web::weights::WeightSource, ids: &[i64], rgb: Option<&image::RgbImage>, precision: Precision) -> Result<()> {
    use varco_web::model::decode::Workspace;
    let cfg = &model.cfg;
    let feats = rgb.map(|img| model.encode_image(ctx, img)).transpose()?.map(|(_, f)| f);
    let n = ids.len() + feats.as_ref().map_or(0, |f| f.shape[0]);
    let mut cache = model.llm.new_cache(ctx, n)?;
    let ws = Workspace::new(ctx, model, n)?;
    let runs = varco_web::session::text_runs(ids, cfg.text.vocab)?;
    let inputs = varco_web::session::prompt_inputs(&runs, feats.as_ref())?;
    model.prefill(ctx, &inputs, &mut cache, &ws)?;
    let gpu = pollster::block_on(ws.logits().to_f32(ctx))?;
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
