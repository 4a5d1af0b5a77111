//! The f64 references themselves, checked against candle-core's CPU ops, so a wrong reference cannot
//! make a wrong kernel pass.
#![cfg(not(target_arch = "wasm32"))]

use candle_core::{DType, Device, Tensor, D};
use varco_tests::harness::{assert_close, Rng};
use varco_tests::reference as r;

#[test]
fn linear_matches_candle() {
    let mut rng = Rng::new(11);
    let (m, n, k) = (7, 13, 37);
    let x = rng.normals(m * k, 1.0);
    let w = rng.normals(n * k, 1.0);
    let b = rng.normals(n, 1.0);
    let dev = Device::Cpu;
    let xt = Tensor::from_slice(&x, (m, k), &dev).unwrap().to_dtype(DType::F64).unwrap();
    let wt = Tensor::from_slice(&w, (n, k), &dev).unwrap().to_dtype(DType::F64).unwrap();
    let bt = Tensor::from_slice(&b, n, &dev).unwrap().to_dtype(DType::F64).unwrap();
    let want = xt.matmul(&wt.t().unwrap()).unwrap().broadcast_add(&bt).unwrap();
    let want: Vec<f64> = want.flatten_all().unwrap().to_vec1().unwrap();
    let got: Vec<f32> = r::linear(&x, &w, Some(&b), m, n, k).iter().map(|&v| v as f32).collect();
    assert_close("reference linear vs candle", &got, &want, 1e-6);
}

#[test]
fn attention_matches_candle() {
    let mut rng = Rng::new(12);
    let (t, d) = (9, 16);
    let q = rng.normals(t * d, 1.0);
    let k = rng.normals(t * d, 1.0);
    let v = rng.normals(t * d, 1.0);
    let dev = Device::Cpu;
    let f = |a: &[f32]| Tensor::from_slice(a, (t, d), &dev).unwrap().to_dtype(DType::F64).unwrap();
    let s = (f(&q).matmul(&f(&k).t().unwrap()).unwrap() * 0.25).unwrap();
    let e = s.broadcast_sub(&s.max_keepdim(D::Minus1).unwrap()).unwrap().exp().unwrap();
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
    let want: Vec<f64> = p.matmul(&f(&v)).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let got: Vec<f32> = r::attention(&q, t, 1, 1, d, t, |_, s, i| (k[s * d + i], v[s * d + i]), false, 0, 0.25).iter().map(|&x| x as f32).collect();
    assert_close("reference attention vs candle", &got, &want, 1e-6);
}

#[test]
fn erf_matches_known_values() {
    for (x, want) in [(0.0, 0.0), (0.5, 0.520_499_877_813_046_5), (1.0, 0.842_700_792_949_714_9), (2.0, 0.995_322_265_018_952_7), (-3.0, -0.999_977_909_503_001_4)] {
        assert!((r::erf(x) - want).abs() < 1e-9, "erf({x}) = {} vs {want}", r::erf(x));
    }
}
