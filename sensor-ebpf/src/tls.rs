//! TLS plaintext from uprobes on the OpenSSL API (`SSL_write`, `SSL_read`,
//! `SSL_write_ex`, `SSL_read_ex`; same ABI in BoringSSL). Entry probes stash
//! the arguments per thread; one return probe reads the bytes actually
//! transferred (a failed or partial call copies nothing or only its part).
//! See https://docs.openssl.org/3.0/man3/SSL_write/ and SSL_read.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use sensor_common::{
    Direction, FLAG_TLS_FD_UNKNOWN, RecordKind, SslKey, TLS_MAX_SEGMENTS, TLS_SEGMENT_BYTES,
    TlsDataHeader, counter,
};

use crate::{
    maps::{EVENTS, SSL_FD, TLS_SCRATCH, count, header},
    net::PENDING_BIND,
};

#[repr(C)]
#[derive(Clone, Copy)]
struct SslArgs {
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
static SSL_ARGS: LruHashMap<u64, SslArgs> = LruHashMap::with_max_entries(16384, 0);

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
        unsafe { aya_ebpf::helpers::bpf_probe_read_user(args.len_out as *const u64) }?
    } else {
        ret as u64
    };
    emit_data(&args, pid_tgid, len)
}

const HEAD: usize = core::mem::size_of::<TlsDataHeader>();

#[inline(always)]
fn emit_data(args: &SslArgs, pid_tgid: u64, len: u64) -> Result<(), i64> {
    let Some(scratch) = TLS_SCRATCH.get_ptr_mut(0) else {
        return Ok(());
    };
    let tgid = (pid_tgid >> 32) as u32;
    let fd = SSL_FD
        .get_ptr(&SslKey {
            tgid,
            _pad: 0,
            ssl: args.ssl,
        })
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
    // SAFETY: per-CPU scratch slot owned by this program invocation.
    unsafe {
        (*scratch).head = TlsDataHeader {
            header: head,
            conn: args.ssl,
            fd,
            direction: args.direction,
            library: args.library,
            _pad: 0,
            total_len: total,
            offset: 0,
            len: 0,
            _pad2: 0,
        };
    }
    let mut offset: u32 = 0;
    for _ in 0..TLS_MAX_SEGMENTS {
        if offset >= total {
            break;
        }
        let left = total - offset;
        let n = if left > TLS_SEGMENT_BYTES as u32 {
            TLS_SEGMENT_BYTES as u32
        } else {
            left
        };
        // SAFETY: `n` <= TLS_SEGMENT_BYTES, the size of `data`; the helper
        // checks the user address.
        let rc = unsafe {
            generated::bpf_probe_read_user(
                (*scratch).data.as_mut_ptr().cast(),
                n,
                (args.buf + offset as u64) as *const core::ffi::c_void,
            )
        };
        if rc != 0 {
            count(counter::TLS_READ_ERRORS, 1);
            return Ok(());
        }
        // SAFETY: as above; the record is HEAD + n bytes of the scratch slot.
        let sent = unsafe {
            (*scratch).head.offset = offset;
            (*scratch).head.len = n;
            let bytes = core::slice::from_raw_parts(scratch as *const u8, HEAD + n as usize);
            EVENTS.output::<[u8]>(bytes, 0)
        };
        if sent.is_err() {
            count(counter::RINGBUF_DROPS, 1);
            return Ok(());
        }
        offset += n;
    }
    if offset < total {
        count(counter::TLS_BYTES_TRUNCATED, (total - offset) as u64);
    }
    Ok(())
}
