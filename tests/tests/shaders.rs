//! GPU-free: every shader variant the kernels can request parses and validates with naga (the compiler
//! inside wgpu), and the preprocessor keeps variants apart.
#![cfg(not(target_arch = "wasm32"))]

use varco_web::gpu::shader::{Defines, ALL, MATVEC};
use varco_web::kernels::variants;

fn validate(name: &str, key: &str, src: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| format!("{name}[{key}]: parse: {}", e.emit_to_string(src)))?;
    let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
    v.validate(&module).map_err(|e| format!("{name}[{key}]: validate: {}", e.emit_to_string(src)))?;
    Ok(())
}

#[test]
fn every_variant_validates() {
    let all = variants();
    assert!(all.len() > 200, "the variant list shrank to {}", all.len());
    let mut errors = Vec::new();
    for (shader, defines) in &all {
        let src = shader.expand(defines).expect("expand");
        if let Err(e) = validate(shader.name, &defines.key(), &src) {
            errors.push(e);
        }
    }
    assert!(errors.is_empty(), "{} of {} variants fail:\n{}", errors.len(), all.len(), errors.join("\n\n"));
    // every shader file is covered
    for s in ALL {
        assert!(all.iter().any(|(v, _)| v.name == s.name), "{} has no variant in kernels::variants()", s.name);
    }
}

/// The model's choice of fused-kernel shape: the 14B's many-row matrices (gate/up, lm_head) in the wide
/// shape, its other matrices and every matrix of rows within one step in FUSED_SHAPE (the H200's whole-step
/// A/B, BENCHMARKS.md); and always a shape that is built (validated above).
#[test]
fn fused_shapes_the_model_picks() {
    use varco_web::kernels::linear::{fused_shape_for, FUSED_SHAPE, FUSED_SHAPES, WIDE_ROWS, WIDE_SHAPE};
    // (rows, 16-byte blocks a row): the 14B's q/k/v, o, gate/up and down in q4 (160 and 432 blocks), its
    // lm_head in q8 (320), and the tiny test model's head (151,680 rows of 2 blocks)
    for (n, kb, want) in [(7168, 160, FUSED_SHAPE), (5120, 160, FUSED_SHAPE), (27648, 160, WIDE_SHAPE), (5120, 432, FUSED_SHAPE), (151_680, 320, WIDE_SHAPE), (151_680, 2, FUSED_SHAPE)] {
        assert_eq!(fused_shape_for(n, kb), want, "{n} rows of {kb} blocks");
    }
    // the benchmark's loads-only products are never a shape the model can take
    assert!(FUSED_SHAPES.iter().all(|s| s.math != varco_web::kernels::linear::FusedMath::LoadsOnly));
    for n in [1, 37, 5120, 7168, 27648, WIDE_ROWS - 1, WIDE_ROWS, 151_680] {
        for kb in 1..2000 {
            let s = fused_shape_for(n, kb);
            assert!(FUSED_SHAPES.contains(&s), "n {n} kb {kb}: {s:?} is not built");
        }
    }
}

/// Options naming kernel shapes and activation types: the accepted forms, and clear refusals.
#[test]
fn shape_and_activation_options_parse() {
    use varco_web::gpu::DType;
    use varco_web::kernels::linear::{DecodeShapes, FusedMath, FusedShape, Prepare, FUSED_SHAPE, WIDE_SHAPE};
    assert_eq!(FusedShape::parse("32:8:1", false).unwrap(), WIDE_SHAPE);
    assert_eq!(WIDE_SHAPE.math, FusedMath::Top);
    let exact = FusedShape { math: FusedMath::Exact, ..WIDE_SHAPE };
    assert_eq!(FusedShape::parse("32:8:1:exact", false).unwrap(), exact);
    assert_eq!(exact.to_string(), "32:8:1:exact");
    assert_eq!(FusedShape::parse(&FUSED_SHAPE.to_string(), false).unwrap(), FUSED_SHAPE);
    assert_eq!(FusedShape::parse("32:4:2:loads", true).unwrap(), FusedShape { math: FusedMath::LoadsOnly, ..FUSED_SHAPE });
    assert_eq!(FusedShape::parse("64:4:2", false).unwrap().math, FusedMath::Exact);
    // the loads-only copy is the kernel benchmark's, never the model's; and only of the first two shapes
    for (bad, loads) in [("32:4", true), ("33:4:2", true), ("32:4:2:1", true), ("a:b:c", true), ("", true), ("32:4:2:loads", false), ("64:4:2:loads", true), ("64:4:2:top", true), ("32:4:2:top:top", true), ("32:4:2:loads:top", true)] {
        let e = FusedShape::parse(bad, loads).unwrap_err().to_string();
        assert!(e.contains("WG:ROWS:BLOCKS") && e.contains("32:4:2"), "{bad:?}: {e}");
    }
    let base = DecodeShapes { qkv: FUSED_SHAPE, o: FUSED_SHAPE, gate_up: FUSED_SHAPE, down: FUSED_SHAPE, lm_head: FUSED_SHAPE, prepare: Prepare::Off, warm: 0, warm_gate_up_mib: 0, warm_workgroups: 256, greedy_in_lm_head: false };
    assert_eq!(base.with("prepare=ffn", false).unwrap().prepare, Prepare::Ffn);
    assert_eq!(base.with("prepare=all", false).unwrap().prepare, Prepare::All);
    assert_eq!(base.with("prepare=all,prepare=off", false).unwrap().prepare, Prepare::Off);
    assert!(base.with("prepare=on", false).unwrap_err().to_string().contains("expected off, ffn or all"));
    let w = base.with("warm=64,warm_gate_up=8,warm_wgs=1024", false).unwrap();
    assert_eq!((w.warm, w.warm_gate_up_mib, w.warm_workgroups), (64, 8, 1024));
    assert!(base.with("warm_wgs=0", false).is_err() && base.with("warm_wgs=70000", false).is_err());
    assert!(base.with("warm=yes", false).unwrap_err().to_string().contains("warm=\"yes\""));
    assert!(base.with("warm_gate_up=-1", false).is_err());
    assert!(base.with("greedy=lm_head", false).unwrap().greedy_in_lm_head);
    assert!(!base.with("greedy=lm_head,greedy=logits", false).unwrap().greedy_in_lm_head);
    assert!(base.with("greedy=fast", false).unwrap_err().to_string().contains("expected lm_head"));
    // the model's ffn (DOT4 gate/up in 8 rows, DOT4 down) stays while gate/up and down can prepare, and goes
    // off when a spec gives gate/up four rows (16 slices: 512 invocations) without naming prepare
    let dot4 = |s: FusedShape| FusedShape { math: FusedMath::Dot4, ..s };
    let ffn = DecodeShapes { gate_up: dot4(WIDE_SHAPE), down: dot4(FUSED_SHAPE), prepare: Prepare::Ffn, ..base };
    assert!(ffn.can_prepare_ffn(256) && !ffn.can_prepare_ffn(128) && !base.can_prepare_ffn(256));
    assert_eq!(ffn.with("lm_head=32:8:1", false).unwrap().prepare, Prepare::Ffn);
    assert_eq!(ffn.with("gate_up=32:4:2:dot4", false).unwrap().prepare, Prepare::Off);
    assert_eq!(ffn.with("down=32:4:2:top", false).unwrap().prepare, Prepare::Off);
    assert_eq!(ffn.with("gate_up=32:4:2:dot4,prepare=ffn", false).unwrap().prepare, Prepare::Ffn);
    let s = base.with(" gate_up = 32:8:1 ,lm_head=32:8:1", false).unwrap();
    assert_eq!(s, DecodeShapes { gate_up: WIDE_SHAPE, lm_head: WIDE_SHAPE, ..base });
    assert!(base.with("x=32:4:2", false).unwrap_err().to_string().contains("no matrix \"x\""));
    // loads only: the benchmark's whole-step bound, never otherwise
    assert!(base.with("down=32:4:2:loads", false).is_err());
    assert_eq!(base.with("down=32:4:2:loads", true).unwrap().down, FusedShape { math: FusedMath::LoadsOnly, ..FUSED_SHAPE });
    assert_eq!(base.with("o=32:8:1:dot4", false).unwrap().o, FusedShape { math: FusedMath::Dot4, ..WIDE_SHAPE });
    assert_eq!(FusedShape { math: FusedMath::Dot4, ..FUSED_SHAPE }.to_string(), "32:4:2:dot4");
    assert!(base.with("qkv", false).unwrap_err().to_string().contains("ROLE=WG:ROWS:BLOCKS"));
    assert_eq!(DType::parse_act("f16").unwrap(), DType::F16);
    assert_eq!(DType::parse_act("f32").unwrap(), DType::F32);
    assert!(DType::parse_act("f64").unwrap_err().to_string().contains("expected f16 or f32"));
}

/// The text a browser gets: every `enable` directive before any declaration (Chrome refuses it otherwise),
/// subgroups named where the variant uses them, and otherwise the very text naga validated above.
#[test]
fn every_variant_is_valid_wgsl_for_a_browser_too() {
    for (shader, defines) in &variants() {
        let web = shader.expand_for(defines, true).unwrap();
        let lines: Vec<&str> = web.lines().collect();
        let first_other = lines.iter().position(|l| !l.starts_with("enable ")).unwrap();
        assert!(lines[first_other..].iter().all(|l| !l.trim_start().starts_with("enable ")), "{}[{}]: a directive after a declaration", shader.name, defines.key());
        let enables = &lines[..first_other];
        assert_eq!(enables.contains(&"enable subgroups;"), defines.has("SUBGROUP"), "{}[{}]", shader.name, defines.key());
        assert_eq!(enables.contains(&"enable f16;"), defines.has("ACT_F16"), "{}[{}]", shader.name, defines.key());
        assert_eq!(web.replace("enable subgroups;\n", ""), shader.expand_for(defines, false).unwrap(), "{}[{}]", shader.name, defines.key());
    }
}

#[test]
fn preprocessor_selects_and_rejects() {
    let q4 = MATVEC.expand(&Defines::new().flag("W_Q").flag("W_Q4").value("WG", 64).value("R", 4)).unwrap();
    let f16w = MATVEC.expand(&Defines::new().flag("W_F16").value("WG", 64).value("R", 4)).unwrap();
    assert!(q4.contains("scales") && !f16w.contains("var<storage, read> scales"));
    assert!(q4.contains("const WG: u32 = 64u;") && q4.contains("alias act = f32;"));
    let h = MATVEC.expand(&Defines::new().flag("ACT_F16").flag("W_Q").flag("W_Q4").value("WG", 64).value("R", 4)).unwrap();
    assert!(h.starts_with("enable f16;"));
    assert!(!q4.contains('#'), "directives left in the output");
    assert_ne!(Defines::new().flag("A").key(), Defines::new().flag("A").value("B", 1).key());
    let bad = varco_web::gpu::Shader { name: "bad", source: "#ifdef A\nfn f() {}\n" };
    assert!(bad.expand(&Defines::new()).is_err(), "an unterminated #ifdef must be an error");
    let bad = varco_web::gpu::Shader { name: "bad", source: "#include \"nope.wgsl\"\n" };
    assert!(bad.expand(&Defines::new()).is_err());
}

/// The cooperative-matrix matmul's shapes: the workgroup memory each declares, as naga lays the shader out,
/// is what `CoopShape::workgroup_bytes` says (the kernel's check against the adapter's limit uses it) and fits
/// the 48 KB NVIDIA's Vulkan driver allows; `--coop-shape` takes each built shape's label and refuses others.
#[test]
fn coop_shapes_fit_and_parse() {
    use varco_web::gpu::shader::MATMUL_COOP;
    use varco_web::gpu::tensor::WeightFormat;
    use varco_web::kernels::linear::{coop_defines, CoopShape, COOP_SHAPES};
    for shape in COOP_SHAPES {
        for format in [WeightFormat::Q4, WeightFormat::Q8, WeightFormat::F16] {
            let src = MATMUL_COOP.expand(&coop_defines(shape, format, true)).unwrap();
            let module = naga::front::wgsl::parse_str(&src).unwrap();
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(module.to_ctx()).unwrap();
            let declared: u32 = module.global_variables.iter().filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup).map(|(_, g)| layouter[g.ty].size).sum();
            assert_eq!(declared, shape.workgroup_bytes(), "{} {format:?}", shape.label());
            assert!(declared <= 48 << 10, "{}: {declared} bytes", shape.label());
        }
        assert_eq!(CoopShape::parse(&shape.label()).unwrap(), shape);
    }
    assert_eq!(CoopShape::parse("32:4").unwrap(), CoopShape::DEFAULT);
    assert_eq!(CoopShape::parse("32:2:2").unwrap(), CoopShape { kt: 32, ri: 2, bufs: 2 });
    for bad in ["64:2:2", "64", "32:2:3", "a:b", "32:2:2:2", ""] {
        let e = CoopShape::parse(bad).unwrap_err().to_string();
        assert!(e.contains("expected KT:RI or KT:RI:BUFS") && e.contains("32:4:2"), "{bad}: {e}");
    }
}
