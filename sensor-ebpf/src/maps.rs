//! Maps and small helpers shared by the programs.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns,
    },
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use sensor_common::{Header, RECORD_VERSION, RecordKind, SockKey, SockValue, SslKey, counter};

/// All records go through one ring buffer: ordering across kinds (connect
/// before data before close) is kept per CPU. User space may resize it.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Backlog (bytes) at which a submit wakes the consumer; below it records
/// wake nobody and the consumer drains them on its own timer. A wakeup per
/// record costs the traced process an irq_work (an IPI under a hypervisor)
/// and the daemon a poll round. Patched by the loader; 0 keeps the kernel's
/// default (wake a consumer that has caught up, i.e. nearly every record
/// when the daemon keeps pace).
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

/// `bpf_ringbuf_submit` flags (include/uapi/linux/bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
/// `bpf_ringbuf_query` flag: bytes produced and not yet consumed.
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Submit flags for a record of `size` bytes already reserved: one wakeup
/// when this record carries the backlog across the threshold, none
/// otherwise (a consumer already woken is draining; a sleeping one has
/// its timer).
#[inline(always)]
pub fn submit_flags(size: usize) -> u64 {
    // SAFETY: global patched by the loader.
    let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    if threshold == 0 {
        return 0;
    }
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA);
    if waiting >= threshold && waiting < threshold + size as u64 + 8 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Submit flags for a record the daemon must see at once: an exec, whose
/// process may be gone within milliseconds while its identity is still to
/// be read from /proc.
#[inline(always)]
pub fn submit_flags_urgent() -> u64 {
    BPF_RB_FORCE_WAKEUP
}

/// Loss and error counters, per CPU (see `sensor_common::counter`).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// child pid -> parent tgid, filled at fork so exec can name the parent
/// without reading `task_struct` (whose layout is not stable).
#[map]
pub static FORK_PARENT: LruHashMap<u32, u32> = LruHashMap::with_max_entries(65536, 0);

/// Connected inet sockets per (tgid, fd), and the SSL object bound to each.
#[map]
pub static SOCKS: LruHashMap<SockKey, SockValue> = LruHashMap::with_max_entries(65536, 0);

/// Processes of agent sessions (tgid -> 1), set by user space when a
/// process becomes an agent and inherited at fork: their sockets' bytes
/// are counted for the connection's close record.
#[map]
pub static AGENTS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

/// (tgid, SSL *) -> socket fd.
#[map]
pub static SSL_FD: LruHashMap<SslKey, i32> = LruHashMap::with_max_entries(65536, 0);

#[inline(always)]
pub fn count(index: u32, by: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: valid, aligned map value. An atomic add (BPF_ATOMIC):
        // uprobe programs run with only migration disabled, so another task
        // on this CPU may preempt a plain read-modify-write and lose a count.
        // `AtomicU64` has no `fetch_add` on the BPF target, hence the intrinsic.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                slot, by,
            )
        };
    }
}

/// Fills the common header for the current task.
#[inline(always)]
pub fn header(kind: RecordKind) -> Header {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    Header {
        kind: kind as u32,
        version: RECORD_VERSION,
        flags: 0,
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        // SAFETY: helper without preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
    }
}

/// Sends a fixed-size record, counting a drop when the ring is full.
#[inline(always)]
pub fn emit<T: 'static>(record: T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(record);
            entry.submit(submit_flags(core::mem::size_of::<T>()));
        }
        None => count(counter::RINGBUF_DROPS, 1),
    }
}
