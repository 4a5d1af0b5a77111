//! vendor/wgpu is in use and still carries its one change (vendor/README.md): cargo only warns when a
//! `[patch.crates-io]` entry stops matching the pinned version, and the web build would then quietly lose
//! subgroups again.
#![cfg(not(target_arch = "wasm32"))]

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `key = "value"` from a TOML fragment's lines.
fn value<'a>(lines: &'a str, key: &str) -> Option<&'a str> {
    lines.lines().find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix('=')?.trim().strip_prefix('"')?.strip_suffix('"'))
}

#[test]
fn wgpu_resolves_to_the_vendored_copy_of_the_pinned_version() {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let entries: Vec<&str> = lock.split("[[package]]").filter(|p| value(p, "name") == Some("wgpu")).collect();
    assert_eq!(entries.len(), 1, "one wgpu in the lock file");
    assert_eq!(value(entries[0], "source"), None, "wgpu comes from a path (vendor/wgpu), not a registry: {}", entries[0]);
    let vendored = std::fs::read_to_string(root().join("vendor/wgpu/Cargo.toml")).unwrap();
    let version = value(&vendored, "version").unwrap();
    assert_eq!(value(entries[0], "version"), Some(version));
    let workspace = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(workspace.contains(&format!("wgpu = {{ version = \"={version}\"")), "the workspace pins wgpu {version}, the vendored version");
}

#[test]
fn the_vendored_web_backend_maps_subgroups() {
    let src = std::fs::read_to_string(root().join("vendor/wgpu/src/backend/webgpu.rs")).unwrap();
    let table = src.split("const FEATURES_MAPPING").nth(1).unwrap().split("];").next().unwrap();
    assert!(table.contains("(wgt::Features::SUBGROUP, webgpu_sys::GpuFeatureName::Subgroups)"), "the mapping vendor/wgpu-subgroups.patch adds");
}
