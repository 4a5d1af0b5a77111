//! The GPU context: adapter, device, queue, what the adapter can do, and the pipeline cache.
//!
//! One code path serves native (Vulkan/Metal/DX12) and wasm32 (the browser's WebGPU). The device is created
//! with the adapter's own maximum limits, so that large bindings work where the hardware allows them, and with
//! shader-f16 and subgroups when offered. Kernels pick their variant from [`Caps`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::gpu::buffer::{GpuBuffer, Live};
use crate::gpu::shader::{Defines, Shader};
use crate::{Error, Result};

thread_local! {
    /// Called when a device is lost (the browser's worker registers itself here: `web.rs`); one slot, since a
    /// page holds one engine.
    static LOST_HOOK: std::cell::RefCell<Option<Box<dyn Fn()>>> = const { std::cell::RefCell::new(None) };
}

/// Registers `f` to be called when a device is lost (after [`Context::lost`] says why).
pub fn on_device_lost(f: impl Fn() + 'static) {
    LOST_HOOK.with(|h| *h.borrow_mut() = Some(Box::new(f)));
}

fn lost_hook() {
    LOST_HOOK.with(|h| {
        if let Some(f) = h.borrow().as_ref() {
            f()
        }
    });
}

/// What the device can do, as far as the kernels care.
#[derive(Clone, Debug)]
pub struct Caps {
    /// `shader-f16`: f16 activations are allowed.
    pub f16: bool,
    /// Subgroup operations are enabled. The size lies somewhere in `subgroup_min_size..=subgroup_max_size`
    /// (a device may pick it per pipeline): the kernels' reductions work for any size in 4..=128.
    pub subgroups: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    /// Why the kernels run with or without subgroups, and with or without f16, in words for the user (a
    /// slow browser's cause is often here).
    pub subgroups_why: String,
    pub f16_why: String,
    pub timestamps: bool,
    pub max_binding: u64,
    pub max_buffer: u64,
    pub max_workgroup_storage: u32,
    pub max_invocations: u32,
    pub max_workgroups_per_dim: u32,
    pub min_storage_offset_alignment: u32,
    pub min_uniform_offset_alignment: u32,
    /// The cooperative-matrix (tensor-core) configurations the adapter reports, as `M×N×K A→C`; empty where
    /// it has none or cannot say (wgpu's web backend).
    pub cooperative_matrix: Vec<String>,
}

/// How to get a device. The defaults ask for everything the adapter offers; tests switch features off to
/// exercise the fallback paths on an adapter that has them.
#[derive(Clone, Debug)]
pub struct ContextOptions {
    pub allow_f16: bool,
    pub allow_subgroups: bool,
    /// Cap on the storage binding size, to test buffer splitting on adapters with large limits.
    pub max_binding_override: Option<u64>,
    /// naga's runtime checks in our shaders (every storage and workgroup index clamped, every loop bounded).
    /// None (the default): off on the Vulkan backend, on elsewhere ([`Context::runtime_checks`] says why).
    /// Measured on the H200 (BENCHMARKS.md, eleventh session): without them decode at 1k context runs at
    /// 203.5 against 192.3 tokens/s, and a photo's first token came in 1.48 against 1.62 s. A browser keeps
    /// its own checks whatever this says.
    pub runtime_checks: Option<bool>,
    /// The prefill/vision matmul's packed-f16 tier (f16 activations only): tiles staged and multiplied in
    /// f16, summed in f32 across groups of 32 (shaders/matmul.wgsl, PACKED). Off by default until the H200
    /// shows what it gains (issue 14); `varco bench model --packed-f16` turns it on.
    pub packed_f16_matmul: bool,
    /// Prefill attention for head size 128 off the tensor cores in 32 queries × 64 keys a step
    /// (shaders/attention_q32.wgsl) instead of attention_tiled.wgsl's 64 × 32, where the device has its
    /// 32 KiB of workgroup memory. Off by default until the H200 measures it (issue 14); `varco bench
    /// kernels|model --attention-q32` turns it on.
    pub attention_q32: bool,
    /// The prefill/vision matmul's cooperative-matrix (tensor-core) tier (shaders/matmul_coop.wgsl), where
    /// the adapter offers 16×16×16 f16→f32 cooperative matrices, shader-f16 and subgroups of exactly 32
    /// (native only: wgpu's experimental feature). On by default: on the H100 it matches the f64 reference
    /// (tests/kernels.rs, run there) and the fixture model's answers (generate.rs), and prefills 2.7× faster
    /// (BENCHMARKS.md); `varco bench model --no-coop` measures the other tiers.
    pub coop_matmul: bool,
    /// Prefill and SigLIP attention on the tensor cores too (shaders/attention_coop.wgsl), where the matmul
    /// tier is on. On by default: on the H100 it matches the f64 reference (tests/kernels.rs) and the fixture
    /// model's answers (generate.rs), and takes the first token of a photo from 3.44 to 1.84 s (BENCHMARKS.md);
    /// `varco bench model --no-coop-attention` measures without it.
    pub coop_attention: bool,
    /// The decode step's q4 matrix-vector products as 8-bit integer dot products (matvec_fused.wgsl DOT4: x
    /// rounded to 8 bits a block of 32, as llama.cpp does), on a GPU (not a CPU renderer; in a browser whose
    /// WGSL has `packed_4x8_integer_dot_product`). On by default: on the H200 it takes native decode from
    /// 134.2 to 192.2 tokens/s at 1k context, and Chromium's from 124.1 to 161.4 (f32 activations; BENCHMARKS.md);
    /// `varco bench model --no-int-dot` measures without it.
    pub int_dot_decode: bool,
    /// How the portable tiled matmul (shaders/matmul.wgsl, the tier without tensor cores) reads and stages
    /// its tiles; all three variants by default: on the H100 they take its q4 matmul from 22.4 to 32.7
    /// TFLOP/s in f32 and a photo's first token on that tier from 7.90 to 5.85 s (BENCHMARKS.md, twelfth
    /// session); `varco bench kernels|model --tiled-matmul none` measures without them.
    pub tiled_matmul: TiledMatmul,
    /// How the cooperative-matrix matmul runs (one of `kernels::linear::COOP_SHAPES`; the first by default).
    /// `varco bench model --coop-shape KT:RI` compares the others in the whole model.
    pub coop_shape: CoopShape,
    /// How decode attention splits its work (keys a block, workgroups in all), where forced; the default
    /// forces nothing: the model's choice (`kernels::attention::decode_block` says why). `varco bench model
    /// --decode-block N --decode-workgroups N` measures others.
    pub decode_tuning: DecodeTuning,
}

/// How the decode kernel splits its work where a benchmark or a test forces it (None: the model's choice).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeTuning {
    /// Keys a block, one of `kernels::attention::DECODE_BLOCKS`.
    pub block: Option<u32>,
    /// Workgroups the splits aim for, one of `kernels::attention::DECODE_WORKGROUPS`.
    pub workgroups: Option<u32>,
}

impl DecodeTuning {
    /// What `self` leaves open taken from `other` (a call's tuning over the context's).
    pub fn or(self, other: DecodeTuning) -> DecodeTuning {
        DecodeTuning { block: self.block.or(other.block), workgroups: self.workgroups.or(other.workgroups) }
    }
}

/// Variants of the portable tiled matmul (shaders/matmul.wgsl): `interleave` (MM_IL) gives the 16 invocations
/// along a side of the workgroup consecutive vec4s of the staged tiles, so a step's workgroup-memory reads
/// are half the transactions; `prefetch` (MM_PF; q4 and q8 weights) loads tile kt + 1 into registers while
/// tile kt is multiplied; `unroll` (MM_UR) unrolls the 32 k steps of a tile; `balance` (MM_BW; with the
/// prefetch, q4) spreads the dequantizing of W's tile over all the invocations, half a code word each;
/// `mul_add` (MM_MA) writes the products as a multiply and an add instead of fma(); `warp8` (MM_W8) arranges
/// a subgroup's 32 invocations 8 × 4 over the output block instead of 16 × 2; `tall` (MM_T16; the 128-wide
/// tile, prefetched q4 weights, neither bw nor w8) gives 128 invocations 16 rows × 8 columns each where 256
/// had 8 × 8 (half the workgroup-memory reads a product). `no_loads` (MM_XL),
/// `no_staging` (MM_XS) and `no_w_reads` (MM_XB) are ablations for measurement, with wrong products: no loads
/// after the first tile; neither loads nor staging after it (what the inner loop costs alone); every
/// invocation reading the same vec4s of W's staged tile (the inner loop without its workgroup-memory traffic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiledMatmul {
    pub interleave: bool,
    pub prefetch: bool,
    pub unroll: bool,
    pub balance: bool,
    pub mul_add: bool,
    pub no_loads: bool,
    pub no_staging: bool,
    pub warp8: bool,
    pub tall: bool,
    pub no_w_reads: bool,
}

impl TiledMatmul {
    /// The plain kernel, as before the variants.
    pub const NONE: TiledMatmul = TiledMatmul { interleave: false, prefetch: false, unroll: false, balance: false, mul_add: false, no_loads: false, no_staging: false, warp8: false, tall: false, no_w_reads: false };
    /// The default: interleaved, prefetched, unrolled.
    pub const ALL: TiledMatmul = TiledMatmul { interleave: true, prefetch: true, unroll: true, ..TiledMatmul::NONE };

    fn flags(&mut self) -> [(&mut bool, &'static str); 10] {
        [(&mut self.interleave, "il"), (&mut self.prefetch, "pf"), (&mut self.unroll, "ur"), (&mut self.balance, "bw"), (&mut self.mul_add, "ma"), (&mut self.warp8, "w8"), (&mut self.tall, "t16"), (&mut self.no_loads, "xl"), (&mut self.no_staging, "xs"), (&mut self.no_w_reads, "xb")]
    }

    /// From `il,pf,ur,bw,ma,w8,t16,xl,xs,xb` (any of them, comma-separated; `none` for none).
    pub fn parse(s: &str) -> Result<Self> {
        let mut t = TiledMatmul::NONE;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty() && *p != "none") {
            match t.flags().into_iter().find(|f| f.1 == part) {
                Some((on, _)) => *on = true,
                None => return Err(Error::request(format!("tiled matmul variant {part:?}: expected il, pf, ur, bw, ma, w8, t16, xl, xs, xb or none"))),
            }
        }
        Ok(t)
    }

    /// The variants on, as [`TiledMatmul::parse`] takes them; `none` for none.
    pub fn label(mut self) -> String {
        let on: Vec<&str> = self.flags().into_iter().filter(|f| *f.0).map(|f| f.1).collect();
        if on.is_empty() { "none".into() } else { on.join(",") }
    }
}

/// How the cooperative-matrix kernel (shaders/matmul_coop.wgsl) runs: `kt` K values a stage (32 or 64),
/// `ri` 16-row accumulator tiles a subgroup (2: 8 subgroups of 2 × 4 tiles; 4: 4 subgroups of 4 × 4), and
/// `bufs` staged copies of the X and W tiles in workgroup memory (1, or 2: the next stage is written into one
/// while the tensor cores read the other, one barrier a stage instead of two). Here rather than with the
/// kernel because a context carries the choice; `kernels::linear` lists the built ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoopShape {
    pub kt: u32,
    pub ri: u32,
    pub bufs: u32,
}

impl CoopShape {
    /// The model's shape unless a caller asks for another (`kernels::linear::COOP_SHAPES` starts with it).
    pub const DEFAULT: CoopShape = CoopShape { kt: 32, ri: 4, bufs: 1 };

    /// Invocations a workgroup (a 128 × 128 block of Y either way).
    pub fn invocations(self) -> u32 {
        512 / self.ri
    }

    /// The workgroup memory the kernel declares: `bufs` copies of the 128-row X and W tiles (KT halves a row
    /// and 8 of padding), and a 16 × 16 f32 scratch a subgroup.
    pub fn workgroup_bytes(self) -> u32 {
        self.bufs * 2 * 128 * (self.kt + 8) * 2 + self.invocations() / 32 * 256 * 4
    }

    /// `KT:RI`, or `KT:RI:2` when double-buffered (what `varco bench model --coop-shape` takes).
    pub fn label(self) -> String {
        if self.bufs == 1 { format!("{}:{}", self.kt, self.ri) } else { format!("{}:{}:{}", self.kt, self.ri, self.bufs) }
    }
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions { allow_f16: true, allow_subgroups: true, max_binding_override: None, runtime_checks: None, packed_f16_matmul: false, attention_q32: false, tiled_matmul: TiledMatmul::ALL, coop_matmul: true, coop_attention: true, int_dot_decode: true, coop_shape: CoopShape::DEFAULT, decode_tuning: DecodeTuning::default() }
    }
}

type PipelineKey = (&'static str, String);

pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub caps: Caps,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    /// Pipeline address → its label (the shader name and defines), for per-kernel profiles.
    pipeline_names: Mutex<HashMap<usize, String>>,
    /// Pipeline address → its bind group layout (asked once: in a browser each ask is a call).
    layouts: Mutex<HashMap<usize, wgpu::BindGroupLayout>>,
    pub(crate) params_pool: Mutex<Vec<GpuBuffer>>,
    pub stats: Stats,
    /// Whether our shaders are built with naga's runtime checks ([`ContextOptions::runtime_checks`]). Off by
    /// default on Vulkan because there the driver bounds every buffer access already: wgpu enables
    /// `robustBufferAccess` wherever the device has it, and every Vulkan implementation must (the Vulkan
    /// guide, "Robustness"), so an index past a binding reads zero or a value from that buffer and writes, if
    /// at all, only inside that buffer. What naga's checks add beyond that — clamped workgroup-memory indices
    /// and bounded loops — guards against kernel bugs the kernels are tested not to have: every kernel's
    /// writes against guard regions, its results against the f64 reference, in CI on lavapipe (Vulkan, so
    /// without these checks). Metal, DX12 and GL promise no such bound, and keep them.
    pub runtime_checks: bool,
    /// [`ContextOptions::packed_f16_matmul`], where the device has shader-f16.
    pub packed_f16_matmul: bool,
    /// [`ContextOptions::tiled_matmul`].
    pub tiled_matmul: TiledMatmul,
    /// [`ContextOptions::attention_q32`].
    pub attention_q32: bool,
    /// [`ContextOptions::coop_matmul`], where the device has what that tier needs.
    pub coop_matmul: bool,
    /// [`ContextOptions::coop_attention`], where the matmul tier is on.
    pub coop_attention: bool,
    /// [`ContextOptions::int_dot_decode`], on a GPU (not a CPU renderer), in a browser where its WGSL has
    /// `packed_4x8_integer_dot_product`.
    pub int_dot_decode: bool,
    /// Why [`Context::int_dot_decode`] is what it is (for the page's capability panel).
    pub int_dot_why: String,
    /// [`ContextOptions::coop_shape`].
    pub coop_shape: CoopShape,
    /// [`ContextOptions::decode_tuning`].
    pub decode_tuning: DecodeTuning,
    /// What is alive on the device now (buffers, their bytes, bind groups), on both targets.
    pub live: Arc<Live>,
    /// Why the device was lost (a driver reset, the GPU switched, `destroy()`), once it was: every later use
    /// fails, and the caller must make a new context.
    lost: Arc<Mutex<Option<String>>>,
    /// Test builds only: the buffer creation (counted from 1) that the device is to refuse.
    #[cfg(feature = "test-hooks")]
    refuse_at: std::sync::atomic::AtomicU64,
}

/// What the library has asked of the GPU: a test pins a decode step's dispatches and buffer allocations to
/// their designed values; the model benchmark reports peak memory.
#[derive(Default, Debug)]
pub struct Stats {
    pub dispatches: AtomicU64,
    /// Buffers created (every allocation of the library goes through [`Context::create_buffer`]).
    pub buffers: AtomicU64,
    pub submits: AtomicU64,
    /// Bind groups created.
    pub bind_groups: AtomicU64,
    /// The most buffer memory in use at any submit (native: wgpu's allocator counters; 0 in the browser).
    pub peak_bytes: AtomicU64,
}

/// A snapshot of [`Stats`]' counters; subtract two to get what happened in between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub dispatches: u64,
    pub buffers: u64,
    pub bind_groups: u64,
    pub submits: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, o: Counts) -> Counts {
        Counts {
            dispatches: self.dispatches - o.dispatches,
            buffers: self.buffers - o.buffers,
            bind_groups: self.bind_groups - o.bind_groups,
            submits: self.submits - o.submits,
        }
    }
}

impl Stats {
    /// The counters now.
    pub fn counts(&self) -> Counts {
        Counts {
            dispatches: self.dispatches.load(Ordering::Relaxed),
            buffers: self.buffers.load(Ordering::Relaxed),
            bind_groups: self.bind_groups.load(Ordering::Relaxed),
            submits: self.submits.load(Ordering::Relaxed),
        }
    }
}

/// Whether the browser's WGSL has language feature `name` (`navigator.gpu.wgslLanguageFeatures.has`), asked
/// through `has` alone: wgpu's own reading iterates `keys()`, which Dawn for Node answers with an array,
/// and then panics.
#[cfg(target_arch = "wasm32")]
pub fn browser_wgsl_has(name: &str) -> bool {
    use wasm_bindgen::JsCast;
    let get = |o: &wasm_bindgen::JsValue, k: &str| js_sys::Reflect::get(o, &k.into()).ok().filter(|v| !v.is_undefined() && !v.is_null());
    let Some(set) = get(&js_sys::global(), "navigator").and_then(|n| get(&n, "gpu")).and_then(|g| get(&g, "wgslLanguageFeatures")) else {
        return false;
    };
    get(&set, "has").and_then(|f| f.dyn_into::<js_sys::Function>().ok()).and_then(|f| f.call1(&set, &name.into()).ok()).is_some_and(|v| v.is_truthy())
}

#[cfg(not(target_arch = "wasm32"))]
pub fn browser_wgsl_has(_name: &str) -> bool {
    false
}

/// Waits before each further request for an adapter in a browser, in milliseconds: a browser whose GPU
/// process is still starting answers null (Chromium 156 on the H200 did for a page opened with it, 90 ms
/// after the GPU process started, and gave the adapter 250 ms later; BENCHMARKS.md, ninth session). A
/// browser without WebGPU on this GPU says so 1.5 s later than it could; native adapters do not come back,
/// so the native build asks once.
pub const ADAPTER_RETRY_MS: [u32; 4] = [100, 200, 400, 800];

async fn request_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    let options = wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        force_fallback_adapter: false,
        compatible_surface: None,
        apply_limit_buckets: false,
    };
    let waits: &[u32] = if cfg!(target_arch = "wasm32") { &ADAPTER_RETRY_MS } else { &[] };
    let mut asked = 1;
    loop {
        match instance.request_adapter(&options).await {
            Ok(adapter) => return Ok(adapter),
            Err(e) if asked > waits.len() => {
                let tries = if asked > 1 { format!(" (asked {asked} times over {:.1} s)", waits.iter().sum::<u32>() as f64 / 1e3) } else { String::new() };
                return Err(Error::NoAdapter(format!("{e}{tries}")));
            }
            Err(_) => {
                sleep_ms(waits[asked - 1]).await;
                asked += 1;
            }
        }
    }
}

/// A timer of the page or worker the module runs in (`setTimeout` on the global object, which both have).
#[cfg(target_arch = "wasm32")]
async fn sleep_ms(ms: u32) {
    use wasm_bindgen::JsCast;
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let set_timeout = js_sys::Reflect::get(&js_sys::global(), &"setTimeout".into()).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        match set_timeout {
            Some(f) => drop(f.call2(&wasm_bindgen::JsValue::UNDEFINED, &resolve, &ms.into())),
            None => drop(resolve.call0(&wasm_bindgen::JsValue::UNDEFINED)),
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

#[cfg(not(target_arch = "wasm32"))]
async fn sleep_ms(_ms: u32) {}

impl Context {
    /// Finds an adapter (in a browser, asking again while it answers null: [`ADAPTER_RETRY_MS`]) and creates a
    /// device with its maximum limits.
    pub async fn new(opts: ContextOptions) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = request_adapter(&instance).await?;
        let info = adapter.get_info();
        let offered = adapter.features();
        let mut features = wgpu::Features::empty();
        let f16 = opts.allow_f16 && offered.contains(wgpu::Features::SHADER_F16);
        if f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        // Subgroup reductions assume every subgroup lies inside one reduction team (a power of two ≥ the
        // subgroup size); 4..=128 covers every GPU we know of.
        let sg_ok = info.subgroup_min_size >= 4 && info.subgroup_max_size <= 128;
        let subgroups = opts.allow_subgroups && sg_ok && offered.contains(wgpu::Features::SUBGROUP);
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        let web = cfg!(target_arch = "wasm32");
        let subgroups_why = if subgroups {
            format!("the adapter offers subgroups (size {}..{})", info.subgroup_min_size, info.subgroup_max_size)
        } else if !opts.allow_subgroups {
            "subgroups switched off by the caller".into()
        } else if !offered.contains(wgpu::Features::SUBGROUP) {
            if web { "the browser does not offer subgroups (Chrome and Edge do from version 134 on)" } else { "the adapter does not offer subgroups" }.into()
        } else {
            format!("the adapter's subgroup sizes {}..{} lie outside the 4..128 the reductions assume", info.subgroup_min_size, info.subgroup_max_size)
        };
        let f16_why = if f16 {
            "the adapter offers shader-f16".into()
        } else if !opts.allow_f16 {
            "shader-f16 switched off by the caller".into()
        } else if web {
            "the browser does not offer shader-f16 (Chrome on NVIDIA GPUs under Linux withholds it; CPU renderers lack it)".into()
        } else {
            "the adapter does not offer shader-f16".into()
        };
        let timestamps = offered.contains(wgpu::Features::TIMESTAMP_QUERY);
        if timestamps {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let coop_props = if offered.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) { adapter.cooperative_matrix_properties() } else { Vec::new() };
        let coop_matmul = opts.coop_matmul
            && f16
            && subgroups
            && info.subgroup_min_size == 32
            && info.subgroup_max_size == 32
            && coop_props.iter().any(|c| {
                (c.m_size, c.n_size, c.k_size) == (16, 16, 16)
                    && c.ab_type == wgpu::CooperativeScalarType::F16
                    && c.cr_type == wgpu::CooperativeScalarType::F32
            });
        if coop_matmul {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("varco"),
                required_features: features,
                required_limits: limits.clone(),
                // SAFETY: the one experimental feature asked for is cooperative matrices, and only when the
                // caller chose that tier; its one shader is validated by naga like every other (tests/shaders.rs)
                // and checked against the f64 reference on a GPU that has it (tests/kernels.rs, ignored where
                // the adapter lacks it).
                experimental_features: if coop_matmul { unsafe { wgpu::ExperimentalFeatures::enabled() } } else { wgpu::ExperimentalFeatures::disabled() },
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Device(e.to_string()))?;
        let lost = Arc::new(Mutex::new(None));
        let slot = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let why = match reason {
                wgpu::DeviceLostReason::Destroyed => "the device was destroyed".to_string(),
                _ => format!("the GPU stopped answering ({})", if message.is_empty() { "no reason given" } else { message.as_str() }),
            };
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            lost_hook();
        });
        // Errors outside an error scope (a shader the browser's compiler refuses, an out-of-memory) are
        // logged rather than aborting: the tests' poisoned outputs expose any dispatch that did not run.
        device.on_uncaptured_error(std::sync::Arc::new(|e| {
            log::error!("WebGPU: {e}");
            #[cfg(not(target_arch = "wasm32"))]
            eprintln!("WebGPU error: {e}");
        }));
        let mut max_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        if let Some(cap) = opts.max_binding_override {
            max_binding = max_binding.min(cap);
        }
        let caps = Caps {
            f16,
            subgroups,
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            subgroups_why,
            f16_why,
            timestamps,
            max_binding,
            max_buffer: limits.max_buffer_size,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_invocations: limits.max_compute_invocations_per_workgroup,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            min_storage_offset_alignment: limits.min_storage_buffer_offset_alignment,
            min_uniform_offset_alignment: limits.min_uniform_buffer_offset_alignment,
            cooperative_matrix: coop_props
                .iter()
                .map(|c| {
                    let sat = if c.saturating_accumulation { " saturating" } else { "" };
                    format!("{}×{}×{} {:?}→{:?}{sat}", c.m_size, c.n_size, c.k_size, c.ab_type, c.cr_type)
                })
                .collect(),
        };
        let packed_f16_matmul = opts.packed_f16_matmul && caps.f16;
        // a CPU renderer (lavapipe natively, SwiftShader in a browser: wgpu reports both as Cpu) keeps the
        // float products, unmeasured there; a browser reports no device type for a GPU ("Other"), so there
        // the WGSL language feature decides
        let gpu_kind = if web { info.device_type != wgpu::DeviceType::Cpu } else { matches!(info.device_type, wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu) };
        let wgsl_has_dot4 = !web || browser_wgsl_has("packed_4x8_integer_dot_product");
        let int_dot_decode = opts.int_dot_decode && gpu_kind && wgsl_has_dot4;
        let int_dot_why = if int_dot_decode {
            "8-bit integer dot products (dot4I8Packed) on a GPU".to_string()
        } else if !opts.int_dot_decode {
            "integer dot products switched off by the caller".into()
        } else if !gpu_kind {
            format!("a {:?} adapter keeps the float products (integer dot products measured on GPUs only)", info.device_type)
        } else {
            "the browser's WGSL lacks packed_4x8_integer_dot_product".into()
        };
        let runtime_checks = opts.runtime_checks.unwrap_or(info.backend != wgpu::Backend::Vulkan);
        Ok(Context {
            device,
            queue,
            info,
            caps,
            pipelines: Mutex::new(HashMap::new()),
            pipeline_names: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            params_pool: Mutex::new(Vec::new()),
            stats: Stats::default(),
            runtime_checks,
            packed_f16_matmul,
            tiled_matmul: opts.tiled_matmul,
            attention_q32: opts.attention_q32,
            coop_matmul,
            coop_attention: coop_matmul && opts.coop_attention,
            int_dot_decode,
            int_dot_why,
            coop_shape: opts.coop_shape,
            decode_tuning: opts.decode_tuning,
            live: Arc::new(Live::default()),
            lost,
            #[cfg(feature = "test-hooks")]
            refuse_at: AtomicU64::new(0),
        })
    }

    /// Why the device was lost, if it was.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One line about the adapter, for logs and benchmark tables.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}); shader-f16 {}, subgroups {} ({}..{}), max binding {} MiB, workgroup storage {} KiB",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            self.caps.f16,
            self.caps.subgroups,
            self.caps.subgroup_min_size,
            self.caps.subgroup_max_size,
            self.caps.max_binding >> 20,
            self.caps.max_workgroup_storage >> 10
        )
    }

    /// The compute pipeline for `shader` with `defines`, compiled once and cached under both.
    pub fn pipeline(&self, shader: &Shader, defines: &Defines) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = (shader.name, defines.key());
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let source = shader.expand(defines)?;
        let label = format!("{}[{}]", shader.name, key.1);
        let desc = wgpu::ShaderModuleDescriptor { label: Some(&label), source: wgpu::ShaderSource::Wgsl(source.into()) };
        let module = if self.runtime_checks {
            self.device.create_shader_module(desc)
        } else {
            // SAFETY: on Vulkan (whose robustBufferAccess keeps every buffer access inside its buffer) or at
            // the caller's request; see `Context::runtime_checks`. Every kernel's writes are tested against
            // guard regions, and its results against the reference, without these checks on lavapipe;
            // out-of-bounds reads that do not change a result are not detected by those tests.
            unsafe { self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
        };
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let pipeline = Arc::new(pipeline);
        self.pipeline_names.lock().unwrap().insert(Arc::as_ptr(&pipeline) as usize, label);
        self.pipelines.lock().unwrap().insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// The labels of every pipeline made so far (which variants a run took, for tests).
    pub fn pipeline_labels(&self) -> Vec<String> {
        self.pipeline_names.lock().unwrap().values().cloned().collect()
    }

    /// The label (shader name and defines) of a pipeline from [`Context::pipeline`].
    pub fn pipeline_name(&self, p: &Arc<wgpu::ComputePipeline>) -> String {
        self.pipeline_names.lock().unwrap().get(&(Arc::as_ptr(p) as usize)).cloned().unwrap_or_default()
    }

    /// The bind group layout of a pipeline from [`Context::pipeline`].
    pub(crate) fn bind_group_layout(&self, p: &Arc<wgpu::ComputePipeline>) -> wgpu::BindGroupLayout {
        self.layouts.lock().unwrap().entry(Arc::as_ptr(p) as usize).or_insert_with(|| p.get_bind_group_layout(0)).clone()
    }

    /// Runs `f`, catching the GPU's out-of-memory refusals of what it allocates: an allocation the GPU
    /// cannot make is an [`Error::OutOfMemory`] naming `what` and `bytes`, instead of a buffer that fails
    /// every later use.
    pub async fn out_of_memory_scope<T>(&self, what: &str, bytes: u64, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        // a buffer larger than the device takes is refused as a validation error: the same failure to the
        // user (and what the test hook provokes); any other validation error is the engine's own fault
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let out = f.await;
        let (oom, invalid) = (oom.pop().await, invalid.pop().await);
        match (oom, invalid) {
            (Some(e), _) => Err(Error::OutOfMemory { what: what.to_string(), bytes, detail: e.to_string() }),
            (None, Some(e)) if e.to_string().to_lowercase().contains("buffer size") => Err(Error::OutOfMemory { what: what.to_string(), bytes, detail: e.to_string() }),
            (None, Some(e)) => Err(Error::kernel("gpu", format!("the GPU refused a command: {e}"))),
            (None, None) => out,
        }
    }

    /// Creates a buffer, counted in [`Stats::buffers`] and, while it lives, in [`Context::live`].
    pub fn create_buffer(&self, desc: &wgpu::BufferDescriptor) -> GpuBuffer {
        let n = self.stats.buffers.fetch_add(1, Ordering::Relaxed) + 1;
        #[cfg(feature = "test-hooks")]
        if self.refuse_at.load(Ordering::Relaxed) == n {
            // more than the device allows in one buffer: it refuses the allocation as it would one that
            // does not fit its memory, inside whatever error scope the caller pushed
            let size = (self.caps.max_buffer + 4096).next_multiple_of(4);
            return GpuBuffer::new(self.device.create_buffer(&wgpu::BufferDescriptor { size, ..desc.clone() }), &self.live);
        }
        let _ = n;
        GpuBuffer::new(self.device.create_buffer(desc), &self.live)
    }

    /// Test builds only: the `nth` buffer created from now on (1: the next) is refused by the device.
    #[cfg(feature = "test-hooks")]
    pub fn refuse_allocation(&self, nth: u64) {
        self.refuse_at.store(self.stats.buffers.load(Ordering::Relaxed) + nth, Ordering::Relaxed);
    }

    /// Bytes of GPU memory held by buffers now (native; 0 where the backend does not count).
    pub fn buffer_memory(&self) -> u64 {
        self.device.get_internal_counters().hal.buffer_memory.read().max(0) as u64
    }

    /// Called at every submit: counts it and updates the peak memory.
    pub(crate) fn note_submit(&self) {
        self.stats.submits.fetch_add(1, Ordering::Relaxed);
        self.stats.peak_bytes.fetch_max(self.buffer_memory(), Ordering::Relaxed);
    }

    /// Number of distinct pipelines compiled so far.
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.lock().unwrap().len()
    }

    /// Maps a MAP_READ buffer written by submission `index` and returns its bytes, waiting for that
    /// submission only (natively; later ones may still run).
    pub async fn read_mapped(&self, buffer: &wgpu::Buffer, index: wgpu::SubmissionIndex) -> Result<Vec<u8>> {
        let (tx, rx) = futures_channel::oneshot::channel();
        buffer.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
            .map_err(|e| Error::Readback(e.to_string()))?;
        #[cfg(target_arch = "wasm32")]
        let _ = index;
        rx.await
            .map_err(|_| Error::Readback("the map callback was dropped".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let bytes = buffer.slice(..).get_mapped_range().map_err(|e| Error::Readback(format!("{e:?}")))?.to_vec();
        buffer.unmap();
        Ok(bytes)
    }

    /// Copies `size` bytes at `offset` of `buffer` back to the CPU. Native: blocks on the device; wasm32:
    /// awaits the browser's map callback.
    pub async fn read_bytes(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        let size = size.next_multiple_of(4);
        let staging = self.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        let index = self.queue.submit([enc.finish()]);
        self.read_mapped(&staging, index).await
    }

    /// Waits until all submitted work is done (native); on wasm32 a tiny readback serves as the fence.
    pub async fn sync(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Device(e.to_string()))?;
            Ok(())
        }
        #[cfg(target_arch = "wasm32")]
        {
            let b = self.create_buffer(&wgpu::BufferDescriptor {
                label: Some("fence"),
                size: 4,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            self.read_bytes(&b, 0, 4).await.map(|_| ())
        }
    }
}
