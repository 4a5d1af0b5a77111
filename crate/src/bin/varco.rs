//! The `varco` command line: `varco info` (the adapter), `varco bench kernels`. Model commands (run,
//! convert) arrive with their issues.

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
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
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
