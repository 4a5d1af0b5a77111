// Parameters and bindings shared by attention.wgsl, attention_tiled.wgsl and attention_coop.wgsl (the Rust
// side fills one struct for all three: kernels/attention.rs).

const NEG: f32 = -1.0e30;

// exp with its argument clamped: some implementations (SwiftShader) return NaN for exp(-1e30).
fn exp_c(x: f32) -> f32 {
    return exp(max(x, -87.0));
}

struct Params {
    n_q: u32,
    n_kv: u32,
    n_heads: u32,
    n_kv_heads: u32,
    q_stride: u32,
    o_stride: u32,
    k_head_stride: u32,
    k_seq_stride: u32,
    v_head_stride: u32,
    v_seq_stride: u32,
    pos_offset: u32,
    q_offset: u32, // first element of Q (its column in a fused qkv row)
    k_offset: u32,
    v_offset: u32,
    scale: f32,
    o_offset: u32,  // first element of O
}

@group(0) @binding(0) var<uniform> p: Params;
#ifdef COOP
// the cooperative-matrix kernel reads f16 four at a time (every offset and stride a multiple of 4)
@group(0) @binding(1) var<storage, read> q: array<vec4<f16>>;  // (n_q, q_stride / 4)
@group(0) @binding(2) var<storage, read> k: array<vec4<f16>>;  // by k_head_stride / 4, k_seq_stride / 4
@group(0) @binding(3) var<storage, read> v: array<vec4<f16>>;  // by v_head_stride / 4, v_seq_stride / 4
#else
@group(0) @binding(1) var<storage, read> q: array<act>;        // (n_q, q_stride)
@group(0) @binding(2) var<storage, read> k: array<act>;        // by k_head_stride, k_seq_stride
@group(0) @binding(3) var<storage, read> v: array<act>;        // by v_head_stride, v_seq_stride
#endif
@group(0) @binding(4) var<storage, read_write> o: array<act>;  // (n_q, o_stride)
