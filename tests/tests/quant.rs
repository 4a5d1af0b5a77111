//! The 4-bit format on the CPU: the documented bit layout, round-trip error bounds, padding.
#![cfg(not(target_arch = "wasm32"))]

use varco_tests::harness::Rng;
use varco_web::quant::{compare_formats, QFormat, QMatrix, GROUP};

#[test]
fn layout_matches_the_documentation() {
    // codes j % 16 for j in 0..32: values (code − 8)·0.5, the largest magnitude −4 → scale 0.5
    let row: Vec<f32> = (0..32).map(|j| ((j % 16) as f32 - 8.0) * 0.5).collect();
    let q = QMatrix::quantize(QFormat::Q4, &row, 1, 32);
    assert_eq!(q.scales[0].to_f32(), 0.5);
    assert_eq!(q.qs, vec![0x7654_3210, 0xFEDC_BA98, 0x7654_3210, 0xFEDC_BA98]);
    assert_eq!(q.dequantize(), row);
}

#[test]
fn ragged_rows_pad_with_zero_codes() {
    let mut rng = Rng::new(1);
    let w = rng.normals(3 * 40, 1.0);
    let q = QMatrix::quantize(QFormat::Q4, &w, 3, 40);
    assert_eq!(q.groups(), 2);
    assert_eq!(q.qs.len(), 3 * 2 * 4);
    assert_eq!(q.scales.len(), 6);
    for r in 0..3 {
        // values 40..64 of each row's second group are padding: code 8 (zero)
        let w1 = q.qs[(r * 2 + 1) * 4 + 1];
        assert_eq!(w1, 0x8888_8888, "row {r}");
    }
    assert_eq!(q.dequantize().len(), 3 * 40);
}

#[test]
fn round_trip_error_is_bounded_by_the_step() {
    let mut rng = Rng::new(2);
    let (n, k) = (17, 300);
    let w = rng.normals(n * k, 0.02);
    let q = QMatrix::quantize(QFormat::Q4, &w, n, k);
    let deq = q.dequantize();
    for r in 0..n {
        for c in 0..k {
            let d = q.scales[r * q.groups() + c / GROUP].to_f32().abs();
            let e = (w[r * k + c] - deq[r * k + c]).abs();
            // half a step, or a whole one for the +8 end that clamps to +7, plus f16 rounding of the scale
            assert!(e <= d * 1.0 + 1e-6, "({r},{c}): error {e} with step {d}");
            if w[r * k + c].abs() <= 7.0 * d {
                assert!(e <= d * 0.5 * 1.01 + 1e-7, "({r},{c}): error {e} > half step {d}");
            }
        }
    }
    let rel = compare_formats(&w)[0].2;
    assert!(rel > 0.05 && rel < 0.1, "relative RMS error {rel} of the chosen format on Gaussian weights");
}

#[test]
fn all_zero_groups_stay_zero() {
    let q = QMatrix::quantize(QFormat::Q4, &[0.0; 64], 2, 32);
    assert!(q.dequantize().iter().all(|&v| v == 0.0));
}

#[test]
fn q8_layout_matches_the_documentation() {
    // codes 8·j (0, 8, …, 248): values (code − 128)·0.125; the largest magnitude −16 at code 0 → d = 16 / 128
    let row: Vec<f32> = (0..32).map(|j| ((8 * j) as f32 - 128.0) * 0.125).collect();
    let q = QMatrix::quantize(QFormat::Q8, &row, 1, 32);
    assert_eq!(q.scales[0].to_f32(), 0.125);
    assert_eq!(q.qs.len(), 8, "eight words a group");
    // value j is byte j % 4 of word j / 4
    assert_eq!(q.qs[0], u32::from_le_bytes([0, 8, 16, 24]));
    assert_eq!(q.qs[7], u32::from_le_bytes([224, 232, 240, 248]));
    assert_eq!(q.dequantize(), row);
    // ragged rows pad with the zero code 128
    let q = QMatrix::quantize(QFormat::Q8, &[1.0; 40], 1, 40);
    assert_eq!(q.qs[8 + 2], 0x8080_8080);
}

#[test]
fn q8_error_is_a_sixteenth_of_q4s() {
    let mut rng = Rng::new(3);
    let w = rng.normals(64 * 256, 1.0);
    let e4 = varco_web::quant::relative_error(QFormat::Q4, &w, 64, 256);
    let e8 = varco_web::quant::relative_error(QFormat::Q8, &w, 64, 256);
    assert!((0.08..0.09).contains(&e4), "q4 {e4}");
    assert!(e8 > e4 / 20.0 && e8 < e4 / 12.0, "q8 {e8} vs q4 {e4}");
}
