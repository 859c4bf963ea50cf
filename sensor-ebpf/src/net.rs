//! Socket syscalls: connects and closes of inet sockets, the fd that carries
//! each TLS session, and executable mmaps (library loads) for the attacher.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use sensor_common::{
    CloseRecord, ConnectRecord, ExecMmapRecord, FLAG_CONNECT_IN_PROGRESS, RecordKind, SockKey,
    SockValue, SslKey, TlsBindRecord,
};

use crate::maps::{SOCKS, SSL_FD, emit, header};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EINPROGRESS: i64 = 115;
const PROT_EXEC: u64 = 4;

/// Offsets in the `syscalls:sys_enter_*` records: every argument is 8 bytes
/// after the 16-byte common header (see the tracepoints' format files).
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG4: usize = 48;
const ARG2: usize = 32;
/// `syscalls:sys_exit_*` return value.
const RET: usize = 16;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ConnectArgs {
    fd: i32,
    family: u16,
    port: u16,
    addr: [u8; 16],
}

/// Arguments of a connect in flight, per thread, from enter to exit.
#[map]
pub(crate) static CONNECT_ARGS: LruHashMap<u64, ConnectArgs> =
    LruHashMap::with_max_entries(16384, 0);

/// `socket(2)` type argument in flight, per thread.
#[map]
pub(crate) static SOCKET_ARGS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);

/// Socket type (`SOCK_STREAM`, `SOCK_DGRAM`, ...) per (tgid, fd), for sockets
/// made while the sensor runs: a connected UDP socket (DNS) is not a TCP
/// connection and must not carry a TLS session.
#[map]
static SOCK_TYPE: LruHashMap<SockKey, u32> = LruHashMap::with_max_entries(65536, 0);

const SOCK_STREAM: u32 = 1;
/// `SOCK_NONBLOCK | SOCK_CLOEXEC` and future flags live above the type bits.
const SOCK_TYPE_MASK: u32 = 0xf;

/// TLS sessions (SSL *) whose fd is not known yet, per thread: the next
/// socket syscall of that thread on a connected socket names it.
#[map]
pub static PENDING_BIND: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// `struct sockaddr_in6` is the largest we read (28 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct SockaddrIn6 {
    family: u16,
    port: u16,
    flowinfo: u32,
    addr: [u8; 16],
    scope_id: u32,
}

/// `syscalls:sys_enter_socket`: `socket(family, type, protocol)`.
#[tracepoint]
pub fn sys_enter_socket(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the syscall tracepoint format.
    let family: u64 = unsafe { ctx.read_at(ARG0) }.unwrap_or(0);
    if family == u64::from(AF_INET) || family == u64::from(AF_INET6) {
        // SAFETY: as above.
        let kind: u64 = unsafe { ctx.read_at(ARG1) }.unwrap_or(0);
        let _ = SOCKET_ARGS.insert(
            &bpf_get_current_pid_tgid(),
            &((kind as u32) & SOCK_TYPE_MASK),
            0,
        );
    }
    0
}

/// `syscalls:sys_exit_socket`: remembers the new fd's type.
#[tracepoint]
pub fn sys_exit_socket(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Some(kind) = SOCKET_ARGS.get_ptr(&pid_tgid) {
        // SAFETY: pointer from a successful lookup; copied before removal.
        let kind = unsafe { *kind };
        let _ = SOCKET_ARGS.remove(&pid_tgid);
        // SAFETY: offset from the syscall tracepoint format.
        let fd: i64 = unsafe { ctx.read_at(RET) }.unwrap_or(-1);
        if fd >= 0 {
            let key = SockKey {
                tgid: (pid_tgid >> 32) as u32,
                fd: fd as i32,
            };
            let _ = SOCK_TYPE.insert(&key, &kind, 0);
        }
    }
    0
}

/// `syscalls:sys_enter_connect`: `connect(fd, uservaddr, addrlen)`.
#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = try_enter_connect(&ctx);
    0
}

fn try_enter_connect(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: offsets from the syscall tracepoint format.
    let fd: u64 = unsafe { ctx.read_at(ARG0) }.map_err(i64::from)?;
    // SAFETY: as above.
    let addr_ptr: u64 = unsafe { ctx.read_at(ARG1) }.map_err(i64::from)?;
    // SAFETY: reads user memory through the helper, which checks it.
    let family: u16 = unsafe { bpf_probe_read_user(addr_ptr as *const u16) }?;
    let mut args = ConnectArgs {
        fd: fd as i32,
        family,
        port: 0,
        addr: [0; 16],
    };
    match family {
        AF_INET => {
            // sockaddr_in: family, port, 4-byte address.
            // SAFETY: user memory via the helper.
            let raw: [u8; 8] = unsafe { bpf_probe_read_user(addr_ptr as *const [u8; 8]) }?;
            args.port = u16::from_be_bytes([raw[2], raw[3]]);
            args.addr[..4].copy_from_slice(&raw[4..8]);
        }
        AF_INET6 => {
            // SAFETY: user memory via the helper.
            let sa: SockaddrIn6 = unsafe { bpf_probe_read_user(addr_ptr as *const SockaddrIn6) }?;
            args.port = u16::from_be(sa.port);
            args.addr = sa.addr;
        }
        _ => return Ok(()),
    }
    CONNECT_ARGS.insert(&bpf_get_current_pid_tgid(), &args, 0)?;
    Ok(())
}

/// `syscalls:sys_exit_connect`: reports the result and remembers the socket.
#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = try_exit_connect(&ctx);
    0
}

fn try_exit_connect(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = CONNECT_ARGS.get_ptr(&pid_tgid) else {
        return Ok(());
    };
    // SAFETY: pointer from a successful lookup; copied before removal.
    let args = unsafe { *args };
    let _ = CONNECT_ARGS.remove(&pid_tgid);
    // SAFETY: offset from the syscall tracepoint format.
    let ret: i64 = unsafe { ctx.read_at(RET) }.map_err(i64::from)?;
    let mut head = header(RecordKind::Connect);
    let key = SockKey {
        tgid: head.pid,
        fd: args.fd,
    };
    let sock_type = SOCK_TYPE
        .get_ptr(&key)
        .map(|t| {
            // SAFETY: pointer from a successful lookup.
            unsafe { *t }
        })
        .unwrap_or(0);
    // Sockets made before the sensor started have an unknown type (0); they
    // are taken for streams: inet datagram sockets rarely live that long.
    let stream = sock_type == 0 || sock_type == SOCK_STREAM;
    if stream && (ret == 0 || ret == -EINPROGRESS) {
        if let Some(old) = SOCKS.get_ptr(&key) {
            // The fd was reused without a close we saw: drop the old binding.
            // SAFETY: pointer from a successful lookup.
            let old_ssl = unsafe { (*old).ssl };
            if old_ssl != 0 {
                let _ = SSL_FD.remove(&SslKey {
                    tgid: head.pid,
                    _pad: 0,
                    ssl: old_ssl,
                });
            }
        }
        SOCKS.insert(&key, &SockValue { ssl: 0 }, 0)?;
        if ret != 0 {
            head.flags |= FLAG_CONNECT_IN_PROGRESS;
        }
    }
    emit(ConnectRecord {
        header: head,
        fd: args.fd,
        ret: ret as i32,
        family: args.family,
        port: args.port,
        sock_type,
        addr: args.addr,
    });
    Ok(())
}

/// `syscalls:sys_enter_close`: the end of a socket we saw connect.
#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let _ = try_close(&ctx);
    0
}

fn try_close(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: offset from the syscall tracepoint format.
    let fd: u64 = unsafe { ctx.read_at(ARG0) }.map_err(i64::from)?;
    let head = header(RecordKind::Close);
    let key = SockKey {
        tgid: head.pid,
        fd: fd as i32,
    };
    let _ = SOCK_TYPE.remove(&key);
    let Some(value) = SOCKS.get_ptr(&key) else {
        return Ok(());
    };
    // SAFETY: pointer from a successful lookup; copied before removal.
    let ssl = unsafe { (*value).ssl };
    let _ = SOCKS.remove(&key);
    if ssl != 0 {
        // The SSL object may be freed and its address reused for another
        // session: forget the binding with the socket.
        let _ = SSL_FD.remove(&SslKey {
            tgid: head.pid,
            _pad: 0,
            ssl,
        });
    }
    emit(CloseRecord {
        header: head,
        fd: fd as i32,
        _pad: 0,
    });
    Ok(())
}

/// Binds a pending TLS session of this thread to `fd` if `fd` is a socket we
/// saw connect. OpenSSL with a socket BIO writes to the socket inside
/// `SSL_write` (curl, Python); Node's memory BIO flushes right after it
/// returns; both are the next socket syscall of the same thread.
#[inline(always)]
fn bind_pending(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(ssl) = PENDING_BIND.get_ptr(&pid_tgid) else {
        return Ok(());
    };
    // SAFETY: pointer from a successful lookup.
    let ssl = unsafe { *ssl };
    // SAFETY: offset from the syscall tracepoint format.
    let fd: u64 = unsafe { ctx.read_at(ARG0) }.map_err(i64::from)?;
    let tgid = (pid_tgid >> 32) as u32;
    let key = SockKey {
        tgid,
        fd: fd as i32,
    };
    let Some(sock) = SOCKS.get_ptr_mut(&key) else {
        return Ok(());
    };
    // SAFETY: pointer from a successful lookup.
    let old_ssl = unsafe { (*sock).ssl };
    if old_ssl != 0 && old_ssl != ssl {
        // Another session owned this socket: its binding is stale now.
        let _ = SSL_FD.remove(&SslKey {
            tgid,
            _pad: 0,
            ssl: old_ssl,
        });
    }
    // SAFETY: as above.
    unsafe { (*sock).ssl = ssl };
    let _ = PENDING_BIND.remove(&pid_tgid);
    SSL_FD.insert(&SslKey { tgid, _pad: 0, ssl }, &(fd as i32), 0)?;
    emit(TlsBindRecord {
        header: header(RecordKind::TlsBind),
        conn: ssl,
        fd: fd as i32,
        _pad: 0,
    });
    Ok(())
}

macro_rules! bind_on {
    ($($name:ident),* $(,)?) => {$(
        /// Socket syscall that may name the fd of a pending TLS session.
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            let _ = bind_pending(&ctx);
            0
        }
    )*};
}

bind_on!(
    sys_enter_write,
    sys_enter_writev,
    sys_enter_sendto,
    sys_enter_sendmsg,
    sys_enter_read,
    sys_enter_readv,
    sys_enter_recvfrom,
    sys_enter_recvmsg,
);

/// `syscalls:sys_enter_mmap` with `PROT_EXEC` and a file: a library or
/// executable is being mapped. User space checks it for TLS symbols so a
/// library loaded late (dlopen, a container's own libssl) gets probed.
#[tracepoint]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    let _ = try_mmap(&ctx);
    0
}

fn try_mmap(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: offsets from the syscall tracepoint format.
    let prot: u64 = unsafe { ctx.read_at(ARG2) }.map_err(i64::from)?;
    // SAFETY: as above.
    let fd: u64 = unsafe { ctx.read_at(ARG4) }.map_err(i64::from)?;
    // The fd is an `int` passed in a 64-bit register: look at its low half.
    let fd = fd as i32;
    if prot & PROT_EXEC == 0 || fd < 0 {
        return Ok(());
    }
    emit(ExecMmapRecord {
        header: header(RecordKind::ExecMmap),
        fd,
        _pad: 0,
    });
    Ok(())
}
