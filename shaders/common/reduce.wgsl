// Workgroup-wide reductions over WG invocations (a power of two). Every invocation gets the result.
// Call from uniform control flow. SUBGROUP: reduce inside each subgroup first, then across subgroups through
// workgroup memory (subgroups are contiguous ranges of local_invocation_index); otherwise a tree in workgroup
// memory.
var<workgroup> red_buf: array<f32, WG>;

#ifdef SUBGROUP
fn red_finish(s: f32, ids: Ids, op: u32) -> f32 {
    if (ids.sg_lane == 0u) {
        red_buf[ids.lid / ids.sg_size] = s;
    }
    workgroupBarrier();
    let n = (WG + ids.sg_size - 1u) / ids.sg_size;
    var t = red_buf[0];
    for (var i = 1u; i < n; i++) {
        let v = red_buf[i];
        if (op == 0u) { t += v; } else if (op == 1u) { t = max(t, v); } else { t = min(t, v); }
    }
    workgroupBarrier();
    return t;
}
fn wg_sum(v: f32, ids: Ids) -> f32 { return red_finish(subgroupAdd(v), ids, 0u); }
fn wg_max(v: f32, ids: Ids) -> f32 { return red_finish(subgroupMax(v), ids, 1u); }
fn wg_min(v: f32, ids: Ids) -> f32 { return red_finish(subgroupMin(v), ids, 2u); }
#else
fn red_tree(v: f32, ids: Ids, op: u32) -> f32 {
    red_buf[ids.lid] = v;
    workgroupBarrier();
    for (var o = WG / 2u; o > 0u; o >>= 1u) {
        if (ids.lid < o) {
            let a = red_buf[ids.lid];
            let b = red_buf[ids.lid + o];
            if (op == 0u) { red_buf[ids.lid] = a + b; } else if (op == 1u) { red_buf[ids.lid] = max(a, b); } else { red_buf[ids.lid] = min(a, b); }
        }
        workgroupBarrier();
    }
    let t = red_buf[0];
    workgroupBarrier();
    return t;
}
fn wg_sum(v: f32, ids: Ids) -> f32 { return red_tree(v, ids, 0u); }
fn wg_max(v: f32, ids: Ids) -> f32 { return red_tree(v, ids, 1u); }
fn wg_min(v: f32, ids: Ids) -> f32 { return red_tree(v, ids, 2u); }
#endif
