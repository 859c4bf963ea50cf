//! Builds the kernel programs (`sensor-ebpf`) for the BPF target with
//! aya-build and leaves the object in `OUT_DIR/sensor`, where
//! `src/bpf.rs` embeds it with `include_bytes_aligned!`.
//!
//! The BPF target needs `-Z build-std=core`, so this uses the `rust-web`
//! toolchain (Debian's rustc with its library source, linked into rustup by
//! `cargo xtask setup`) and sets `RUSTC_BOOTSTRAP=1` only for that inner
//! build. `AYA_BUILD_SKIP=1` writes an empty object instead, for fast
//! `cargo check`/`clippy` on machines without the BPF toolchain.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let toolchain = std::env::var("SENSOR_EBPF_TOOLCHAIN").unwrap_or_else(|_| "rust-web".into());
    println!("cargo:rerun-if-env-changed=SENSOR_EBPF_TOOLCHAIN");
    let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
    let object = std::path::Path::new(&out_dir).join("sensor");
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        std::fs::write(&object, []).context("writing the empty eBPF stub")?;
    }
    // SAFETY: build scripts are single-threaded here. aya-build reads
    // RUSTC_BOOTSTRAP from this process's environment to turn on build-std
    // for the inner build only; the outer build stays on stable behaviour.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let ebpf = aya_build::Package {
        name: "sensor-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../sensor-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom(&toolchain))
        .context("building the eBPF programs (run `cargo xtask setup` if the toolchain is missing)")
}
