// Built-in ids every kernel takes, as one struct so that the subgroup variant adds its two fields in one place.
struct Ids {
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
#ifdef SUBGROUP
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_size) sg_size: u32,
#endif
}

// A flat workgroup index for grids folded over x and z (more than 65,535 workgroups).
fn flat_wg(ids: Ids) -> u32 {
    return ids.wg.x + ids.wg.z * ids.nwg.x;
}
