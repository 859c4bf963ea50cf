//! Policy enforcement at connect: `cgroup/connect4` and `cgroup/connect6`
//! programs attached (multi) to the root of the cgroup v2 hierarchy, so
//! they run for every task on the host, before the kernel starts a
//! connection (`__cgroup_bpf_run_filter_sock_addr` from `inet_connect` /
//! `__inet_stream_connect`, net/ipv4/af_inet.c).
//!
//! User space writes verdicts keyed by (cgroup id, destination address,
//! port). Most connects stop at the first lookup: the destination is in no
//! rule. A refused connect returns `ECONNREFUSED` to the caller
//! (`bpf_set_retval`, 5.18+) and leaves a record for the daemon. The
//! programs live only as long as the daemon's link fds: a crash or a stop
//! detaches them, so nothing stays denied (fails open).

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, generated::bpf_set_retval},
    macros::{cgroup_sock_addr, map},
    maps::HashMap,
    programs::SockAddrContext,
};
use sensor_common::{
    RecordKind, counter,
    policy::{ANY_PORT, PolicyBlockRecord, PolicyKey, PolicyVerdict, UNJUDGED_CGROUP, v4_mapped},
};

use crate::maps::{count, emit, header};

/// Program return values for `cgroup/connect*`.
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;
const ECONNREFUSED: i32 = 111;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// (cgroup, address, port) -> verdict, written by user space.
#[map]
pub static POLICY_VERDICTS: HashMap<PolicyKey, PolicyVerdict> = HashMap::with_max_entries(65536, 0);

/// Cgroups user space has judged (id -> 1). A cgroup not in it (a
/// container whose first process the daemon has not resolved yet) gets
/// the verdicts of [`UNJUDGED_CGROUP`]: those of rules that hold whoever
/// the actor turns out to be.
#[map]
pub static POLICY_JUDGED: HashMap<u64, u8> = HashMap::with_max_entries(65536, 0);

/// Every address some verdict names (address -> 1): the quick way out for
/// all other connects.
#[map]
pub static POLICY_ADDRS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(16384, 0);

/// `connect(2)` of an IPv4 socket.
#[cgroup_sock_addr(connect4)]
pub fn policy_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context the kernel passes; 4-byte loads of `user_ip4`
    // and `user_port` are the accesses the verifier allows.
    let (ip, port) = unsafe {
        let sa = ctx.sock_addr;
        (
            core::ptr::read_volatile(&(*sa).user_ip4),
            core::ptr::read_volatile(&(*sa).user_port),
        )
    };
    // `user_ip4` holds the address in network order: its memory bytes are
    // the octets.
    decide(v4_mapped(ip.to_ne_bytes()), port, AF_INET)
}

/// `connect(2)` of an IPv6 socket (IPv4-mapped peers included).
#[cgroup_sock_addr(connect6)]
pub fn policy_connect6(ctx: SockAddrContext) -> i32 {
    let mut addr = [0u8; 16];
    // SAFETY: as above; `user_ip6` is read one 4-byte word at a time.
    let port = unsafe {
        let sa = ctx.sock_addr;
        let mut i = 0;
        while i < 4 {
            let word = core::ptr::read_volatile(&(*sa).user_ip6[i]).to_ne_bytes();
            addr[i * 4] = word[0];
            addr[i * 4 + 1] = word[1];
            addr[i * 4 + 2] = word[2];
            addr[i * 4 + 3] = word[3];
            i += 1;
        }
        core::ptr::read_volatile(&(*sa).user_port)
    };
    decide(addr, port, AF_INET6)
}

#[inline(always)]
fn decide(addr: [u8; 16], user_port: u32, family: u16) -> i32 {
    // SAFETY: map lookups; values are plain integers.
    if unsafe { POLICY_ADDRS.get(&addr) }.is_none() {
        return ALLOW;
    }
    // `user_port` carries the port in network order in its low 16 bits.
    let port = u16::from_be(user_port as u16);
    // SAFETY: helper without preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: as above.
    let judged = unsafe { POLICY_JUDGED.get(&cgroup) }.is_some();
    let mut key = PolicyKey {
        cgroup_id: if judged { cgroup } else { UNJUDGED_CGROUP },
        addr,
        port,
        _pad: [0; 6],
    };
    // The exact port first (an exception or a port rule), then any port.
    // SAFETY: as above.
    let verdict = match unsafe { POLICY_VERDICTS.get(&key) } {
        Some(v) => *v,
        None => {
            key.port = ANY_PORT;
            // SAFETY: as above.
            match unsafe { POLICY_VERDICTS.get(&key) } {
                Some(v) => *v,
                None => return ALLOW,
            }
        }
    };
    if verdict.deny == 0 {
        return ALLOW;
    }
    count(counter::POLICY_BLOCKS, 1);
    emit(PolicyBlockRecord {
        header: header(RecordKind::PolicyBlock),
        rule: verdict.rule,
        generation: verdict.generation,
        port,
        family,
        _pad: 0,
        addr,
    });
    // The caller sees a refused connection rather than the default EPERM.
    // SAFETY: helper for cgroup programs; a negative errno is valid.
    unsafe { bpf_set_retval(-ECONNREFUSED) };
    REFUSE
}
