//! TLS plaintext from uprobes on the OpenSSL API (`SSL_write`, `SSL_read`,
//! `SSL_write_ex`, `SSL_read_ex`; same ABI in BoringSSL). Entry probes stash
//! the arguments per thread; one return probe reads the bytes actually
//! transferred (a failed or partial call copies nothing or only its part).
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
    TLS_SEGMENT_BYTES, TlsDataHeader, TlsDataRecord, counter,
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

/// Arguments of the SSL call in flight, per thread.
#[map]
pub(crate) static SSL_ARGS: LruHashMap<u64, SslArgs> = LruHashMap::with_max_entries(16384, 0);

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

/// `int SSL_write(SSL *ssl, const void *buf, int num)`.
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

/// `int SSL_read(SSL *ssl, void *buf, int num)`.
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

/// Return of any of the four calls above.
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
    emit_data(&args, pid_tgid, len)
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

#[inline(always)]
fn emit_data(args: &SslArgs, pid_tgid: u64, len: u64) -> Result<(), i64> {
    let tgid = (pid_tgid >> 32) as u32;
    let key = SslKey {
        tgid,
        _pad: 0,
        ssl: args.ssl,
    };
    let fd = SSL_FD
        .get_ptr(&key)
        .map(|fd| {
            // SAFETY: pointer from a successful lookup.
            unsafe { *fd }
        })
        .unwrap_or(-1);
    let mut head = header(RecordKind::TlsData);
    if fd < 0 {
        head.flags |= FLAG_TLS_FD_UNKNOWN;
    }
    let total = if len > u32::MAX as u64 {
        u32::MAX
    } else {
        len as u32
    };
    // Claim this call's span of the stream before copying, so a record
    // lost below still moves the position.
    let pos = match STREAM_POS.get_ptr_mut(&key) {
        Some(pos) => pos,
        None => {
            STREAM_POS.insert(&key, &StreamPos::default(), 0)?;
            STREAM_POS.get_ptr_mut(&key).ok_or(1i64)?
        }
    };
    // SAFETY: pointer from a successful lookup; one SSL object is used by
    // one thread at a time (OpenSSL's rule), so this is not contended.
    let stream_pos = unsafe {
        let slot = if args.direction == Direction::Egress as u8 {
            &mut (*pos).egress
        } else {
            &mut (*pos).ingress
        };
        let at = *slot;
        *slot = at + u64::from(total);
        at
    };
    let mut record = TlsDataHeader {
        header: head,
        conn: args.ssl,
        stream_pos,
        fd,
        direction: args.direction,
        library: args.library,
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
        let src = args.buf + u64::from(offset);
        // The smallest size class that holds the segment; only a full
        // segment lets the loop go on, which keeps the verifier's walk linear.
        let sent = if left <= 256 {
            send::<256>(&record, src, left)
        } else if left <= 1024 {
            send::<1024>(&record, src, left)
        } else if left <= 4096 {
            send::<4096>(&record, src, left)
        } else {
            let n = if left > seg { seg } else { left };
            let sent = send::<TLS_SEGMENT_BYTES>(&record, src, n);
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
