// Head size 128's register-tiled prefill kernels (attention_tiled.wgsl, attention_q32.wgsl): four consecutive
// values of a row of Q (scaled), K or V as f32, zeros past the queries or keys, and eight of O written.
// Needs attention_io.wgsl and D.

fn q4(t: u32, h: u32, d: u32) -> vec4<f32> {
    if (t >= p.n_q) {
        return vec4<f32>(0.0);
    }
    let b = p.q_offset + t * p.q_stride + h * D + d;
    return vec4<f32>(f32(q[b]), f32(q[b + 1u]), f32(q[b + 2u]), f32(q[b + 3u])) * p.scale;
}

fn k4(g: u32, s: u32, d: u32, end: u32) -> vec4<f32> {
    if (s >= end) {
        return vec4<f32>(0.0);
    }
    let b = p.k_offset + g * p.k_head_stride + s * p.k_seq_stride + d;
    return vec4<f32>(f32(k[b]), f32(k[b + 1u]), f32(k[b + 2u]), f32(k[b + 3u]));
}

fn v4(g: u32, s: u32, d: u32, end: u32) -> vec4<f32> {
    if (s >= end) {
        return vec4<f32>(0.0);
    }
    let b = p.v_offset + g * p.v_head_stride + s * p.v_seq_stride + d;
    return vec4<f32>(f32(v[b]), f32(v[b + 1u]), f32(v[b + 2u]), f32(v[b + 3u]));
}

// Query t's dimensions d .. d + 7 of head h: (a, b) times inv, where t is one of the queries.
fn store8(t: u32, h: u32, d: u32, a: vec4<f32>, b: vec4<f32>, inv: f32) {
    if (t < p.n_q) {
        let at = p.o_offset + t * p.o_stride + h * D + d;
        o[at] = act(a.x * inv);
        o[at + 1u] = act(a.y * inv);
        o[at + 2u] = act(a.z * inv);
        o[at + 3u] = act(a.w * inv);
        o[at + 4u] = act(b.x * inv);
        o[at + 5u] = act(b.y * inv);
        o[at + 6u] = act(b.z * inv);
        o[at + 7u] = act(b.w * inv);
    }
}
