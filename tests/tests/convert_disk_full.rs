//! A write failure in the middle of a conversion (here: a file-size limit the process sets on itself, the
//! way a full disk fails a write) gives a clear error and leaves neither the output nor its partial
//! directory. Its own test binary: the limit applies to the whole process.
#![cfg(not(target_arch = "wasm32"))]

use varco_tests::fixtures;
use varco_web::convert::{self, partial_path, Options};

#[test]
fn a_failed_write_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Safety: plain libc calls; SIGXFSZ ignored so that the write fails with EFBIG instead of killing us.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit { rlim_cur: 3 << 20, rlim_max: libc::RLIM_INFINITY };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let opts = Options { shard_size: 4 << 20, ..Options::default() };
    let e = convert::convert(&fixtures::root().join("model-hf"), &out, &opts, &mut |_| {}).err().expect("the conversion fails").to_string();
    assert!(e.contains("shard-00000.bin") && e.contains("file-size limit"), "{e}");
    assert!(!out.exists() && !partial_path(&out).exists(), "output left behind");
}
