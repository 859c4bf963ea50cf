//! Socket syscalls: connects and closes of inet sockets, the fd that carries
//! each TLS session, and executable mmaps (library loads) for the attacher.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use sensor_common::{
    CONN_SOCKET_BIT, CONN_STDIO_BIT, CloseRecord, ConnectRecord, Direction, ExecMmapRecord,
    FLAG_CONNECT_IN_PROGRESS, RecordKind, SockKey, SockValue, SslKey, TlsBindRecord, TlsLibrary,
    counter, sock_state,
};

use crate::{
    maps::{AGENTS, SOCKS, SSL_FD, count, emit, header},
    tls::{Source, emit_plain, skip_bytes},
};

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
const ARG3: usize = 40;
/// `recv(2)` flag: look without consuming.
const MSG_PEEK: u64 = 2;
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
const SOCK_DGRAM: u32 = 2;
const DNS_PORT: u16 = 53;
/// Bytes of a DNS answer copied at most (EDNS answers may exceed 512).
const DNS_BYTES: u64 = 4096;
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
            // A socket that held this fd was closed without a close(2) we
            // saw (close-on-exec, dup2, close_range): forget it.
            let _ = forget_sock(&key);
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

/// Removes a socket from the table, and the binding of the TLS session on
/// it (the SSL object may be freed and its address reused for another
/// session); returns the bytes it counted, `None` if it was not there.
#[inline(always)]
fn forget_sock(key: &SockKey) -> Option<(u64, u64)> {
    let value = SOCKS.get_ptr(key)?;
    // SAFETY: pointer from a successful lookup; copied before removal.
    let (ssl, sent, received) = unsafe { ((*value).ssl, (*value).sent, (*value).received) };
    let _ = SOCKS.remove(key);
    if ssl != 0 {
        let _ = SSL_FD.remove(&SslKey {
            tgid: key.tgid,
            _pad: 0,
            ssl,
        });
    }
    Some((sent, received))
}

/// A socket table entry for a socket just connected.
#[inline(always)]
fn new_sock(state: u8) -> SockValue {
    SockValue {
        ssl: 0,
        // The connection's id: its connect time, unique per process.
        // SAFETY: helper without preconditions.
        conn: CONN_SOCKET_BIT | unsafe { bpf_ktime_get_boot_ns() },
        state,
        _pad: [0; 7],
        sent: 0,
        received: 0,
    }
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
    if sock_type == SOCK_DGRAM && ret == 0 && args.port == DNS_PORT {
        // A resolver's socket: its answers name the addresses the process
        // connects to next.
        SOCKS.insert(&key, &new_sock(sock_state::DNS), 0)?;
    }
    if stream && (ret == 0 || ret == -EINPROGRESS) {
        // The fd was reused without a close we saw: drop the old binding.
        let _ = forget_sock(&key);
        SOCKS.insert(&key, &new_sock(sock_state::UNKNOWN), 0)?;
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
    let _ = STDIO_FDS.remove(&key);
    let Some((sent, received)) = forget_sock(&key) else {
        return Ok(());
    };
    emit(CloseRecord {
        header: head,
        fd: fd as i32,
        _pad: 0,
        sent,
        received,
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
    let (old_ssl, state) = unsafe { ((*sock).ssl, (*sock).state) };
    if state == sock_state::HTTP || state == sock_state::DNS {
        // Cleartext or a resolver: no TLS session lives on it (a stale
        // pending session of this thread must not silence it).
        return Ok(());
    }
    if old_ssl != 0 && old_ssl != ssl {
        // Another session owned this socket: its binding is stale now.
        let _ = SSL_FD.remove(&SslKey {
            tgid,
            _pad: 0,
            ssl: old_ssl,
        });
    }
    // SAFETY: as above. A socket with a TLS session on it carries
    // ciphertext: its plaintext comes from the library probe.
    unsafe {
        (*sock).ssl = ssl;
        (*sock).state = sock_state::TLS;
    }
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

/// How a socket syscall passes its bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `(fd, buf, len, ...)`: write, read, sendto, recvfrom.
    Buf,
    /// `(fd, iov, iovcnt)`: writev, readv.
    Iov,
    /// `(fd, msghdr, flags)`: sendmsg, recvmsg.
    Msg,
}

/// A socket call in flight whose bytes are to be copied at its exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct IoArgs {
    conn: u64,
    /// The buffer, or the `struct iovec` array.
    ptr: u64,
    /// iovecs in `ptr`, 0 for a plain buffer.
    iovcnt: u64,
    /// The plain buffer's length: a read never copies more (`MSG_TRUNC`
    /// returns the datagram's full length).
    cap: u64,
    fd: i32,
    direction: u8,
    /// What to copy: [`COPY_DATA`], [`COPY_HELLO`], [`COPY_DNS`] or
    /// [`COPY_NONE`].
    copy: u8,
    _pad: [u8; 2],
}

#[map]
static IO_ARGS: LruHashMap<u64, IoArgs> = LruHashMap::with_max_entries(16384, 0);

/// `struct iovec`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// Copy the bytes as cleartext stream data.
const COPY_DATA: u8 = 0;
/// Copy the first bytes as a ClientHello.
const COPY_HELLO: u8 = 1;
/// Copy the first bytes as a DNS answer.
const COPY_DNS: u8 = 2;
/// Copy nothing: only count the bytes.
const COPY_NONE: u8 = 3;
/// Copy the bytes as JSON-RPC an agent wrote to a pipe (MCP over stdio).
const COPY_STDIO: u8 = 4;

/// Non-socket fds of agent processes that carried JSON-RPC ((tgid, fd) ->
/// 1): everything later written to them is copied too (a message larger
/// than one write continues there).
#[map]
static STDIO_FDS: LruHashMap<SockKey, u8> = LruHashMap::with_max_entries(4096, 0);

/// How a JSON-RPC message starts once compact: `{"` then `jsonrpc` (the
/// TypeScript SDK, and the Python SDK's answers) or `method` (the Python
/// SDK's requests). Keys like `id` or `result` first are left out: they
/// start ordinary JSON an agent may print to a pipe too.
const JSONRPC_KEYS: [[u8; 6]; 2] = [*b"jsonrp", *b"method"];

/// iovecs copied per call at most; bytes in later ones count as lost.
const MAX_IOVECS: u64 = 2;
/// Bytes of a ClientHello copied at most (the server name is near the
/// start; a post-quantum key share makes a hello about 1.8 KiB).
const HELLO_BYTES: u64 = 4096;

/// HTTP/1 request methods and the HTTP/2 preface, as the first four bytes
/// a client writes.
const HTTP_STARTS: [[u8; 4]; 9] = [
    *b"GET ", *b"POST", *b"PUT ", *b"PATC", *b"DELE", *b"HEAD", *b"OPTI", *b"CONN", *b"PRI ",
];

/// A TLS handshake record (content type 22, version 3.x) holding a
/// ClientHello (handshake type 1).
#[inline(always)]
fn is_client_hello(head: &[u8; 8]) -> bool {
    head[0] == 0x16 && head[1] == 3 && head[2] <= 4 && head[5] == 1
}

/// The first buffer of a call and its length.
#[inline(always)]
fn first_buffer(ctx: &TracePointContext, shape: Shape) -> Result<(u64, u64, u64), i64> {
    // SAFETY: offsets from the syscall tracepoint formats.
    let arg1: u64 = unsafe { ctx.read_at(ARG1) }.map_err(i64::from)?;
    // SAFETY: as above.
    let arg2: u64 = unsafe { ctx.read_at(ARG2) }.map_err(i64::from)?;
    let (ptr, iovcnt) = match shape {
        Shape::Buf => return Ok((arg1, 0, arg2)),
        Shape::Iov => (arg1, arg2),
        Shape::Msg => {
            // struct msghdr: name, namelen (padded), iov, iovlen, ...
            // SAFETY: user memory via the helper.
            let iov: u64 = unsafe { bpf_probe_read_user((arg1 + 16) as *const u64) }?;
            // SAFETY: as above.
            let iovlen: u64 = unsafe { bpf_probe_read_user((arg1 + 24) as *const u64) }?;
            (iov, iovlen)
        }
    };
    if iovcnt == 0 {
        return Err(1);
    }
    // SAFETY: as above.
    let first: Iovec = unsafe { bpf_probe_read_user(ptr as *const Iovec) }?;
    Ok((ptr, iovcnt, first.len))
}

/// Entry of a socket read or write: ties a pending TLS session to its
/// socket, classifies a new connection from its first bytes, and stashes
/// the buffers of cleartext HTTP (and of a ClientHello) for the exit.
#[inline(always)]
fn io_enter(
    ctx: &TracePointContext,
    direction: Direction,
    shape: Shape,
    flags_at: usize,
) -> Result<(), i64> {
    // Classified before a pending TLS session is bound to the socket: a
    // library that handshakes inside its first write (NSS, GnuTLS) has
    // its session pending while its ClientHello goes out.
    let classified = io_classify(ctx, direction, shape, flags_at);
    let _ = bind_pending(ctx);
    classified
}

#[inline(always)]
fn io_classify(
    ctx: &TracePointContext,
    direction: Direction,
    shape: Shape,
    flags_at: usize,
) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: offset from the syscall tracepoint format.
    let fd: u64 = unsafe { ctx.read_at(ARG0) }.map_err(i64::from)?;
    let key = SockKey {
        tgid: (pid_tgid >> 32) as u32,
        fd: fd as i32,
    };
    let Some(sock) = SOCKS.get_ptr_mut(&key) else {
        if direction == Direction::Egress && flags_at == 0 {
            return stdio_classify(ctx, &key, pid_tgid, shape);
        }
        return Ok(());
    };
    // SAFETY: pointer from a successful lookup.
    let (state, conn) = unsafe { ((*sock).state, (*sock).conn) };
    // Settled sockets cost one lookup: TLS ones carry ciphertext, others
    // are not HTTP, and nothing is read before the client has spoken.
    let wanted = match direction {
        Direction::Ingress => state == sock_state::HTTP || state == sock_state::DNS,
        Direction::Egress => {
            state != sock_state::TLS && state != sock_state::OTHER && state != sock_state::DNS
        }
    };
    if !wanted {
        // An agent's other connections: their bytes are counted at exit.
        if AGENTS.get_ptr(&key.tgid).is_some() {
            let args = IoArgs {
                conn,
                ptr: 0,
                iovcnt: 0,
                cap: 0,
                fd: fd as i32,
                direction: direction as u8,
                copy: COPY_NONE,
                _pad: [0; 2],
            };
            IO_ARGS.insert(&pid_tgid, &args, 0)?;
        }
        return Ok(());
    }
    if flags_at != 0 {
        // SAFETY: offset from the syscall tracepoint format.
        let flags: u64 = unsafe { ctx.read_at(flags_at) }.map_err(i64::from)?;
        if flags & MSG_PEEK != 0 {
            // The same bytes come again with the real read.
            return Ok(());
        }
    }
    let (ptr, iovcnt, len) = first_buffer(ctx, shape)?;
    let mut copy = COPY_DATA;
    match direction {
        Direction::Ingress => {
            if state == sock_state::DNS {
                copy = COPY_DNS;
            }
        }
        Direction::Egress => {
            let base = if iovcnt == 0 {
                ptr
            } else {
                // SAFETY: user memory via the helper.
                unsafe { bpf_probe_read_user(ptr as *const u64) }?
            };
            // A short write may leave the tail of this read outside the
            // buffer: only the bytes it has are looked at.
            let head: Option<[u8; 8]> = if len >= 4 {
                // SAFETY: user memory via the helper.
                unsafe { bpf_probe_read_user(base as *const [u8; 8]) }.ok()
            } else {
                None
            };
            let next = match head {
                Some(head) if len >= 6 && is_client_hello(&head) => {
                    copy = COPY_HELLO;
                    sock_state::TLS
                }
                // An HTTP connection's bytes are all copied, short or not.
                _ if state == sock_state::HTTP => sock_state::HTTP,
                // Too short to tell: wait for the next write.
                None => return Ok(()),
                Some(head) => {
                    let mut first = [0u8; 4];
                    first.copy_from_slice(&head[..4]);
                    if HTTP_STARTS.iter().any(|m| *m == first) {
                        sock_state::HTTP
                    } else {
                        sock_state::OTHER
                    }
                }
            };
            if next != state {
                // SAFETY: pointer from the lookup above.
                unsafe { (*sock).state = next };
            }
            if next == sock_state::OTHER {
                return Ok(());
            }
        }
    }
    let args = IoArgs {
        conn,
        ptr,
        iovcnt,
        cap: len,
        fd: fd as i32,
        direction: direction as u8,
        copy,
        _pad: [0; 2],
    };
    IO_ARGS.insert(&pid_tgid, &args, 0)?;
    Ok(())
}

/// A write to something that is not a socket the sensor saw connect (a
/// pipe, a file, a Unix socket): copied only for agents' processes, and
/// only when it starts a JSON-RPC message or goes to an fd that carried
/// one. This is how MCP over stdio between an agent and its child server
/// is seen: both write, the agent requests and the server answers.
#[inline(always)]
fn stdio_classify(
    ctx: &TracePointContext,
    key: &SockKey,
    pid_tgid: u64,
    shape: Shape,
) -> Result<(), i64> {
    if AGENTS.get_ptr(&key.tgid).is_none() {
        return Ok(());
    }
    let (ptr, iovcnt, len) = first_buffer(ctx, shape)?;
    if STDIO_FDS.get_ptr(key).is_none() {
        if len < 8 {
            return Ok(());
        }
        let base = if iovcnt == 0 {
            ptr
        } else {
            // SAFETY: user memory via the helper.
            unsafe { bpf_probe_read_user(ptr as *const u64) }?
        };
        // SAFETY: user memory via the helper.
        let head: [u8; 8] = unsafe { bpf_probe_read_user(base as *const [u8; 8]) }?;
        if head[0] != b'{' || head[1] != b'"' {
            return Ok(());
        }
        let mut next = [0u8; 6];
        next.copy_from_slice(&head[2..8]);
        if !JSONRPC_KEYS.iter().any(|k| *k == next) {
            return Ok(());
        }
        STDIO_FDS.insert(key, &1, 0)?;
    }
    let args = IoArgs {
        conn: CONN_SOCKET_BIT | CONN_STDIO_BIT | (key.fd as u32 as u64),
        ptr,
        iovcnt,
        cap: len,
        fd: key.fd,
        direction: Direction::Egress as u8,
        copy: COPY_STDIO,
        _pad: [0; 2],
    };
    IO_ARGS.insert(&pid_tgid, &args, 0)?;
    Ok(())
}

/// Exit of a socket read or write stashed by [`io_enter`]: copies the
/// bytes transferred (the return value says how many).
#[inline(always)]
fn io_exit<const VECTOR: bool>(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = IO_ARGS.get_ptr(&pid_tgid) else {
        return Ok(());
    };
    // SAFETY: pointer from a successful lookup; copied before removal.
    let args = unsafe { *args };
    let _ = IO_ARGS.remove(&pid_tgid);
    // SAFETY: offset from the syscall tracepoint format.
    let ret: i64 = unsafe { ctx.read_at(RET) }.map_err(i64::from)?;
    if ret <= 0 {
        return Ok(());
    }
    let mut src = Source {
        conn: args.conn,
        fd: args.fd,
        direction: args.direction,
        library: TlsLibrary::Cleartext as u8,
        kind: RecordKind::TlsData as u8,
        _pad: 0,
    };
    let mut left = ret as u64;
    if !VECTOR && args.copy != COPY_NONE && left > args.cap {
        left = args.cap;
    }
    let key = SockKey {
        tgid: (pid_tgid >> 32) as u32,
        fd: args.fd,
    };
    if let Some(sock) = SOCKS.get_ptr_mut(&key) {
        // SAFETY: pointer from a successful lookup; a racing update from
        // another thread of the process may lose a count, not corrupt.
        unsafe {
            if args.direction == Direction::Egress as u8 {
                (*sock).sent += left;
            } else {
                (*sock).received += left;
            }
        }
    }
    if args.copy == COPY_NONE {
        return Ok(());
    }
    let single = args.copy != COPY_DATA && args.copy != COPY_STDIO;
    let cap = if args.copy == COPY_STDIO {
        src.kind = RecordKind::StdioData as u8;
        u64::MAX
    } else if args.copy == COPY_HELLO {
        src.kind = RecordKind::TlsClientHello as u8;
        HELLO_BYTES
    } else if args.copy == COPY_DNS {
        src.kind = RecordKind::DnsAnswer as u8;
        DNS_BYTES
    } else {
        count(counter::CLEARTEXT_CALLS, 1);
        u64::MAX
    };
    if !VECTOR || single {
        // One buffer (or the first bytes of a vectored call): one copy,
        // so the verifier walks the copier once here.
        let (base, len) = if VECTOR {
            // SAFETY: user memory via the helper.
            let iov: Iovec = unsafe { bpf_probe_read_user(args.ptr as *const Iovec) }?;
            (iov.base, if iov.len < left { iov.len } else { left })
        } else {
            (args.ptr, left)
        };
        emit_plain(&src, base, if len > cap { cap } else { len });
        return Ok(());
    }
    let mut i = 0u64;
    while i < MAX_IOVECS {
        if i >= args.iovcnt || left == 0 {
            break;
        }
        // SAFETY: user memory via the helper.
        let iov: Iovec = unsafe { bpf_probe_read_user((args.ptr + i * 16) as *const Iovec) }?;
        let n = if iov.len < left { iov.len } else { left };
        if n > 0 {
            emit_plain(&src, iov.base, n);
        }
        left -= n;
        i += 1;
    }
    if left > 0 {
        // Buffers past the ones copied: the stream moves on without them.
        count(counter::IOVEC_TRUNCATED, 1);
        count(counter::TLS_BYTES_TRUNCATED, left);
        skip_bytes(&src, (pid_tgid >> 32) as u32, left)?;
    }
    Ok(())
}

macro_rules! socket_io {
    ($($enter:ident, $exit:ident, $direction:expr, $shape:expr, $vector:expr, $flags:expr;)*) => {$(
        /// Socket syscall entry: see [`io_enter`].
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            let _ = io_enter(&ctx, $direction, $shape, $flags);
            0
        }

        /// Socket syscall exit: see [`io_exit`].
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            let _ = io_exit::<$vector>(&ctx);
            0
        }
    )*};
}

socket_io!(
    sys_enter_write, sys_exit_write, Direction::Egress, Shape::Buf, false, 0;
    sys_enter_writev, sys_exit_writev, Direction::Egress, Shape::Iov, true, 0;
    sys_enter_sendto, sys_exit_sendto, Direction::Egress, Shape::Buf, false, 0;
    sys_enter_sendmsg, sys_exit_sendmsg, Direction::Egress, Shape::Msg, true, 0;
    sys_enter_read, sys_exit_read, Direction::Ingress, Shape::Buf, false, 0;
    sys_enter_readv, sys_exit_readv, Direction::Ingress, Shape::Iov, true, 0;
    // recvfrom(fd, buf, len, flags, ...), recvmsg(fd, msg, flags).
    sys_enter_recvfrom, sys_exit_recvfrom, Direction::Ingress, Shape::Buf, false, ARG3;
    sys_enter_recvmsg, sys_exit_recvmsg, Direction::Ingress, Shape::Msg, true, ARG2;
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
