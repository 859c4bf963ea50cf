//! Kernel programs of the sensor.
//!
//! Entry points are thin: each one calls a fallible `try_*` helper and turns
//! an error into "do nothing" (a counter is bumped where a loss is possible).
//! Only stable attach points are used: tracepoints and uprobes (kprobes,
//! fentry and LSM programs are not available on every kernel we target).
#![no_std]
#![no_main]
// Atomic adds on map values (see `maps::count`); the BPF target is built
// with `-Z build-std` under RUSTC_BOOTSTRAP already.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod maps;
mod net;
mod policy;
mod process;
mod tls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
