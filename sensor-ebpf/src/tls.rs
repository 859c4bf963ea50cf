//! TLS plaintext from uprobes on the TLS libraries' read and write calls:
//! OpenSSL's `SSL_write`, `SSL_read`, `SSL_write_ex`, `SSL_read_ex` (same
//! ABI in BoringSSL), GnuTLS's `gnutls_record_send`/`gnutls_record_recv`,
//! NSPR's `PR_Write`, `PR_Send`, `PR_Read`, `PR_Recv` on an NSS SSL layer,
//! and Go's `crypto/tls.(*Conn).Write`/`Read`. Entry probes stash the
//! arguments per thread; a return probe reads the bytes actually
//! transferred (a failed or partial call copies nothing or only its part).
//! Go is the exception: a uretprobe would corrupt its moving stacks, so its
//! writes are copied at entry and its reads at each return instruction.
//! See https://docs.openssl.org/3.0/man3/SSL_write/ and SSL_read.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use sensor_common::{
    Direction, FLAG_TLS_FD_UNKNOWN, RecordKind, SslKey, StreamPos, TLS_MAX_SEGMENTS,
    TLS_SEGMENT_BYTES, TlsDataHeader, TlsDataRecord, TlsLibrary, counter,
};

use crate::{
    maps::{EVENTS, SSL_FD, count, header, submit_flags},
    net::PENDING_BIND,
};

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SslArgs {
    ssl: u64,
    buf: u64,
    /// `size_t *` out-parameter of the `_ex` variants, 0 for the plain ones.
    len_out: u64,
    direction: u8,
    library: u8,
    _pad: [u8; 6],
}

/// Arguments of the TLS call in flight, per thread.
#[map]
pub(crate) static SSL_ARGS: LruHashMap<u64, SslArgs> = LruHashMap::with_max_entries(16384, 0);

/// Remembers that `ssl` of this thread wants its socket: the next socket
/// syscall of the thread on a connected socket names it (see
/// `net::bind_pending`).
#[inline(always)]
fn want_fd(pid_tgid: u64, ssl: u64) -> Result<(), i64> {
    let key = SslKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        ssl,
    };
    if SSL_FD.get_ptr(&key).is_none() {
        PENDING_BIND.insert(&pid_tgid, &ssl, 0)?;
    } else if PENDING_BIND.get_ptr(&pid_tgid).is_some() {
        // Bound already: make sure no older pending session of this thread
        // gets tied to the next socket it touches. (Looked up first: a
        // lookup takes no lock, a delete does, and this is the hot path.)
        let _ = PENDING_BIND.remove(&pid_tgid);
    }
    Ok(())
}

/// The socket fd bound to `ssl` of this process, -1 if not known yet.
#[inline(always)]
fn fd_of(tgid: u32, ssl: u64) -> i32 {
    SSL_FD
        .get_ptr(&SslKey { tgid, _pad: 0, ssl })
        .map(|fd| {
            // SAFETY: pointer from a successful lookup.
            unsafe { *fd }
        })
        .unwrap_or(-1)
}

#[inline(always)]
fn enter(ctx: &ProbeContext, direction: Direction, ex: bool) -> Result<(), i64> {
    let ssl: u64 = ctx.arg(0).ok_or(1i64)?;
    let buf: u64 = ctx.arg(1).ok_or(1i64)?;
    let len_out: u64 = if ex { ctx.arg(3).ok_or(1i64)? } else { 0 };
    // SAFETY: the cookie is set by the loader per attach point (the library).
    let library = unsafe { generated::bpf_get_attach_cookie(ctx.as_ptr()) } as u8;
    let pid_tgid = bpf_get_current_pid_tgid();
    let args = SslArgs {
        ssl,
        buf,
        len_out,
        direction: direction as u8,
        library,
        _pad: [0; 6],
    };
    SSL_ARGS.insert(&pid_tgid, &args, 0)?;
    want_fd(pid_tgid, ssl)
}

/// `int SSL_write(SSL *ssl, const void *buf, int num)`, and the calls of
/// the same shape: `ssize_t gnutls_record_send(gnutls_session_t, const
/// void *, size_t)`.
#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    let _ = enter(&ctx, Direction::Egress, false);
    0
}

/// `int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)`.
#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    let _ = enter(&ctx, Direction::Egress, true);
    0
}

/// `int SSL_read(SSL *ssl, void *buf, int num)`, and
/// `ssize_t gnutls_record_recv(gnutls_session_t, void *, size_t)`.
#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    let _ = enter(&ctx, Direction::Ingress, false);
    0
}

/// `int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes)`.
#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    let _ = enter(&ctx, Direction::Ingress, true);
    0
}

/// `PRDescType` of an NSPR I/O layer (prio.h): the SSL layer NSS pushes on
/// a socket is a `PR_DESC_LAYERED` one; a plain TCP socket, file or pipe
/// is not, and its bytes are not TLS plaintext.
const PR_DESC_LAYERED: u32 = 4;

/// Whether `fd` (a `PRFileDesc *`, whose first member is the
/// `PRIOMethods *` whose first member is the `PRDescType`) is a layered
/// descriptor, as NSS's SSL layer is.
#[inline(always)]
fn nspr_layered(fd: u64) -> bool {
    // SAFETY: user memory read through the helper, which checks it.
    let methods: u64 = match unsafe { bpf_probe_read_user(fd as *const u64) } {
        Ok(m) => m,
        Err(_) => return false,
    };
    // SAFETY: as above.
    matches!(
        unsafe { bpf_probe_read_user(methods as *const u32) },
        Ok(PR_DESC_LAYERED)
    )
}

/// `PRInt32 PR_Write(PRFileDesc *fd, const void *buf, PRInt32 amount)` and
/// `PR_Send(fd, buf, amount, flags, timeout)`: NSPR's calls for every kind
/// of descriptor, so only an SSL layer's are taken.
#[uprobe]
pub fn nspr_write(ctx: ProbeContext) -> u32 {
    if ctx.arg::<u64>(0).is_some_and(nspr_layered) {
        let _ = enter(&ctx, Direction::Egress, false);
    }
    0
}

/// `PR_Read(fd, buf, amount)` and `PR_Recv(fd, buf, amount, flags, timeout)`.
#[uprobe]
pub fn nspr_read(ctx: ProbeContext) -> u32 {
    if ctx.arg::<u64>(0).is_some_and(nspr_layered) {
        let _ = enter(&ctx, Direction::Ingress, false);
    }
    0
}

/// Return of any of the calls above.
#[uretprobe]
pub fn ssl_ret(ctx: RetProbeContext) -> u32 {
    let _ = try_ret(&ctx);
    0
}

fn try_ret(ctx: &RetProbeContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = SSL_ARGS.get_ptr(&pid_tgid) else {
        count(counter::TLS_ORPHAN_RETURNS, 1);
        return Ok(());
    };
    // SAFETY: pointer from a successful lookup; copied before removal.
    let args = unsafe { *args };
    let _ = SSL_ARGS.remove(&pid_tgid);
    // `int` for OpenSSL and NSPR, `ssize_t` for GnuTLS: the low half is the
    // same number for any count below 2 GiB, and negative errors stay
    // negative.
    let ret: i32 = ctx.ret();
    if ret <= 0 {
        return Ok(());
    }
    let len: u64 = if args.len_out != 0 {
        // `_ex` variants return 1 and store the byte count.
        // SAFETY: user memory via the helper.
        unsafe { bpf_probe_read_user(args.len_out as *const u64) }?
    } else {
        ret as u64
    };
    let src = Source {
        conn: args.ssl,
        fd: fd_of((pid_tgid >> 32) as u32, args.ssl),
        direction: args.direction,
        library: args.library,
        kind: RecordKind::TlsData as u8,
        _pad: 0,
    };
    emit_plain(&src, args.buf, len);
    Ok(())
}

/// A Go read in flight, per goroutine: Go moves goroutines between
/// threads, so the thread id does not identify the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct GoKey {
    tgid: u32,
    _pad: u32,
    /// The goroutine (`g *`, in R14 under Go's register ABI).
    g: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct GoReadArgs {
    conn: u64,
    buf: u64,
}

#[map]
static GO_READS: LruHashMap<GoKey, GoReadArgs> = LruHashMap::with_max_entries(16384, 0);

/// Go register ABI (ABIInternal, Go 1.17+ on amd64): receiver in RAX, then
/// the slice `b` as pointer RBX, length RCX, capacity RDI; results from
/// RAX; the current goroutine in R14.
#[inline(always)]
fn go_regs(ctx: &ProbeContext) -> (u64, u64, u64, u64) {
    let regs = ctx.regs;
    // SAFETY: `regs` is the probe's saved user register set.
    unsafe { ((*regs).rax, (*regs).rbx, (*regs).rcx, (*regs).r14) }
}

/// Entry of `func (c *Conn) Write(b []byte) (int, error)`: the bytes are
/// copied now (a return probe is not possible in Go); a write that fails
/// mid-way is reported whole.
#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    let (conn, buf, len, _) = go_regs(&ctx);
    let pid_tgid = bpf_get_current_pid_tgid();
    // The socket write follows on this thread (the goroutine does not
    // park unless the socket is full).
    let _ = want_fd(pid_tgid, conn);
    let src = Source {
        conn,
        fd: fd_of((pid_tgid >> 32) as u32, conn),
        direction: Direction::Egress as u8,
        library: TlsLibrary::GoTls as u8,
        kind: RecordKind::TlsData as u8,
        _pad: 0,
    };
    if len > 0 {
        emit_plain(&src, buf, len);
    }
    0
}

/// Entry of `func (c *Conn) Read(b []byte) (int, error)`.
#[uprobe]
pub fn go_tls_read(ctx: ProbeContext) -> u32 {
    let (conn, buf, _, g) = go_regs(&ctx);
    let key = GoKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        g,
    };
    let _ = GO_READS.insert(&key, &GoReadArgs { conn, buf }, 0);
    0
}

/// A `RET` instruction of `(*Conn).Read`: RAX holds `n`.
#[uprobe]
pub fn go_tls_read_ret(ctx: ProbeContext) -> u32 {
    let (n, _, _, g) = go_regs(&ctx);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let key = GoKey { tgid, _pad: 0, g };
    let Some(args) = GO_READS.get_ptr(&key) else {
        count(counter::TLS_ORPHAN_RETURNS, 1);
        return 0;
    };
    // SAFETY: pointer from a successful lookup; copied before removal.
    let args = unsafe { *args };
    let _ = GO_READS.remove(&key);
    if (n as i64) > 0 {
        let src = Source {
            conn: args.conn,
            fd: fd_of(tgid, args.conn),
            direction: Direction::Ingress as u8,
            library: TlsLibrary::GoTls as u8,
            kind: RecordKind::TlsData as u8,
            _pad: 0,
        };
        emit_plain(&src, args.buf, n);
    }
    0
}

/// Bytes seen per TLS session and direction, so user space can tell a lost
/// record (a jump in `stream_pos`) from a quiet connection.
#[map]
static STREAM_POS: LruHashMap<SslKey, StreamPos> = LruHashMap::with_max_entries(65536, 0);

/// Reserves a record of size class `N` in the ring buffer and copies `n`
/// (at most `N`) bytes of plaintext from `src` straight into it. Nothing
/// goes through per-CPU scratch memory: uprobe programs can be preempted,
/// and another task on the same CPU would overwrite it.
#[inline(always)]
fn send<const N: usize>(head: &TlsDataHeader, src: u64, n: u32) -> Result<(), ()> {
    let Some(mut entry) = EVENTS.reserve::<TlsDataRecord<N>>(0) else {
        count(counter::RINGBUF_DROPS, 1);
        return Err(());
    };
    let ptr = entry.as_mut_ptr();
    let n = if n as usize > N { N as u32 } else { n };
    // SAFETY: `ptr` is reserved ring memory of `TlsDataRecord<N>`; the copy
    // is at most N bytes into `data`, and the helper checks the source.
    let rc = unsafe {
        (*ptr).head = *head;
        (*ptr).head.len = n;
        generated::bpf_probe_read_user(
            (*ptr).data.as_mut_ptr().cast(),
            n,
            src as *const core::ffi::c_void,
        )
    };
    if rc != 0 {
        entry.discard(0);
        count(counter::TLS_READ_ERRORS, 1);
        return Err(());
    }
    entry.submit(submit_flags(core::mem::size_of::<TlsDataRecord<N>>()));
    Ok(())
}

/// Where a piece of plaintext belongs: the connection (a TLS library
/// object, or a socket's connection id), its fd when known, and its
/// direction, source library and record kind.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Source {
    pub conn: u64,
    pub fd: i32,
    pub direction: u8,
    pub library: u8,
    pub kind: u8,
    pub _pad: u8,
}

/// The session's (tgid, conn) key for the position table.
#[inline(always)]
fn pos_key(tgid: u32, conn: u64) -> SslKey {
    SslKey {
        tgid,
        _pad: 0,
        ssl: conn,
    }
}

/// Claims `len` bytes of the stream of `src` without copying them (bytes
/// that were transferred but not captured), so user space sees the gap.
#[inline(always)]
pub(crate) fn skip_bytes(src: &Source, tgid: u32, len: u64) -> Result<(), i64> {
    claim(src, tgid, len).map(|_| ())
}

/// Moves the stream position of `src` by `len`; returns where it was.
#[inline(always)]
fn claim(src: &Source, tgid: u32, len: u64) -> Result<u64, i64> {
    let key = pos_key(tgid, src.conn);
    let pos = match STREAM_POS.get_ptr_mut(&key) {
        Some(pos) => pos,
        None => {
            STREAM_POS.insert(&key, &StreamPos::default(), 0)?;
            STREAM_POS.get_ptr_mut(&key).ok_or(1i64)?
        }
    };
    // SAFETY: pointer from a successful lookup; one connection is used by
    // one thread at a time per direction (the TLS libraries' rule; for
    // sockets, concurrent writers interleave bytes anyway), so this is not
    // contended.
    let at = unsafe {
        let slot = if src.direction == Direction::Egress as u8 {
            &mut (*pos).egress
        } else {
            &mut (*pos).ingress
        };
        let at = *slot;
        *slot = at + len;
        at
    };
    Ok(at)
}

/// Copies `len` bytes at `buf` (user memory) into data records of
/// `src`, in segments of at most [`TLS_SEGMENT_BYTES`] and at most
/// [`TLS_MAX_SEGMENTS`] of them. A BPF-to-BPF function: every probe and
/// syscall program shares one copy of this code.
#[inline(never)]
pub(crate) fn emit_plain(src: &Source, buf: u64, len: u64) -> i64 {
    match try_emit_plain(src, buf, len) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

#[inline(always)]
fn try_emit_plain(src: &Source, buf: u64, len: u64) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // Records outside any stream: the first bytes of a socket (a
    // ClientHello) or of a datagram (a DNS answer).
    let single =
        src.kind == RecordKind::TlsClientHello as u8 || src.kind == RecordKind::DnsAnswer as u8;
    let mut head = header(if src.kind == RecordKind::TlsClientHello as u8 {
        RecordKind::TlsClientHello
    } else if src.kind == RecordKind::DnsAnswer as u8 {
        RecordKind::DnsAnswer
    } else if src.kind == RecordKind::StdioData as u8 {
        RecordKind::StdioData
    } else {
        RecordKind::TlsData
    });
    if src.fd < 0 {
        head.flags |= FLAG_TLS_FD_UNKNOWN;
    }
    let total = if len > u32::MAX as u64 {
        u32::MAX
    } else {
        len as u32
    };
    // Claim this call's span of the stream before copying, so a record
    // lost below still moves the position.
    let stream_pos = if single {
        0
    } else {
        claim(src, tgid, u64::from(total))?
    };
    let mut record = TlsDataHeader {
        header: head,
        conn: src.conn,
        stream_pos,
        fd: src.fd,
        direction: src.direction,
        library: src.library,
        _pad: 0,
        total_len: total,
        offset: 0,
        len: 0,
        _pad2: 0,
    };
    let seg = TLS_SEGMENT_BYTES as u32;
    let mut offset: u32 = 0;
    for _ in 0..TLS_MAX_SEGMENTS {
        if offset >= total {
            break;
        }
        let left = total - offset;
        record.offset = offset;
        let from = buf + u64::from(offset);
        // The smallest size class that holds the segment; only a full
        // segment lets the loop go on, which keeps the verifier's walk linear.
        let sent = if left <= 256 {
            send::<256>(&record, from, left)
        } else if left <= 1024 {
            send::<1024>(&record, from, left)
        } else if left <= 4096 {
            send::<4096>(&record, from, left)
        } else {
            let n = if left > seg { seg } else { left };
            let sent = send::<TLS_SEGMENT_BYTES>(&record, from, n);
            if sent.is_ok() && n == seg {
                offset += seg;
                continue;
            }
            sent
        };
        // A partial segment (or a failure) ends the call.
        if sent.is_ok() {
            offset = total;
        }
        break;
    }
    if offset < total {
        count(counter::TLS_BYTES_TRUNCATED, u64::from(total - offset));
    }
    Ok(())
}
