// Built-in ids every kernel takes, as one struct so that the subgroup variant adds its two fields in one place.
// workgroup_id and num_workgroups are separate entry-point parameters: WGSL's uniformity analysis (strict in
// Chrome's Tint) treats a whole struct parameter as non-uniform, and loops with barriers must be bounded by
// uniform values such as the workgroup id.
struct Ids {
    @builtin(local_invocation_index) lid: u32,
#ifdef SUBGROUP
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
#endif
}

// A flat workgroup index for grids folded over x and z (more than 65,535 workgroups).
fn flat_wg(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.z * nwg.x;
}
