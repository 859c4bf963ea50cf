//! Empty library target: `sensor/build.rs` depends on this package so cargo
//! rebuilds the daemon when the kernel programs' dependencies change. The
//! programs themselves are the `sensor` binary target (`src/main.rs`).
#![no_std]
