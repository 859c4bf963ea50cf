//! Connect enforcement: the tables user space fills from the policy and
//! the `cgroup/connect4|6` programs read, and the record a refused connect
//! leaves in the ring.
//!
//! Addresses are 16 bytes; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`),
//! which is also what an IPv6 socket connecting to an IPv4 peer passes, so
//! one entry covers both.

use crate::Header;

/// `PolicyKey::cgroup_id` of the entries that apply to cgroups user space
/// has not judged yet (a container whose first process has just started).
/// No real cgroup has id 0.
pub const UNJUDGED_CGROUP: u64 = 0;

/// `PolicyKey::port` of an entry that applies to every port.
pub const ANY_PORT: u16 = 0;

/// Key of the verdict table: who (cgroup v2 id) connects where.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub cgroup_id: u64,
    /// IPv6 or IPv4-mapped address, network order.
    pub addr: [u8; 16],
    /// Destination port, host order; [`ANY_PORT`] for all.
    pub port: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<PolicyKey>() == 32);

/// Value of the verdict table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyVerdict {
    /// 1: refuse the connect; 0: allow (an exception to an any-port deny).
    pub deny: u32,
    /// Index of the deciding rule in the loaded policy (user space maps it
    /// back to the rule's id; a reload that moves rules also rewrites this
    /// table).
    pub rule: u32,
    /// Policy generation that wrote the entry (ties a block record to the
    /// rule list it was judged by).
    pub generation: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<PolicyVerdict>() == 16);

/// A connect the kernel refused: sent from the `cgroup/connect*` program,
/// before the `sys_exit_connect` record of the same call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PolicyBlockRecord {
    pub header: Header,
    pub rule: u32,
    pub generation: u32,
    /// Destination port, host order.
    pub port: u16,
    /// `AF_INET` (2) or `AF_INET6` (10) as the socket saw it.
    pub family: u16,
    pub _pad: u32,
    /// IPv6 or IPv4-mapped destination address.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<PolicyBlockRecord>() == 40 + 32);

/// The IPv4-mapped form of an IPv4 address given in network order.
#[inline(always)]
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}
