//! Records shared by the kernel programs (`sensor-ebpf`) and the daemon (`sensor`).
//!
//! Every record sent through the ring buffer starts with a [`Header`] whose
//! `kind` is a plain `u32`: user space converts it with `TryFrom` and counts an
//! unknown kind instead of transmuting it. Layouts are `#[repr(C)]` with
//! explicit padding, and their sizes are pinned by `const` asserts so a change
//! on one side cannot silently skew the other.
#![no_std]

/// Bumped whenever a record layout changes. The daemon refuses records of
/// another version (counted as `decode_errors`).
pub const RECORD_VERSION: u16 = 2;

/// Bytes of TLS plaintext carried by one [`TlsDataRecord`]. A larger SSL call is
/// split into several records (see [`TLS_MAX_SEGMENTS`]).
pub const TLS_SEGMENT_BYTES: usize = 16 * 1024;
/// Segments emitted per SSL call at most: beyond `TLS_SEGMENT_BYTES *
/// TLS_MAX_SEGMENTS` (256 KiB) the rest of the call is not copied, and the
/// record says so through `total_len`.
pub const TLS_MAX_SEGMENTS: u32 = 16;
/// Record sizes the kernel reserves for TLS data: the smallest class that
/// fits a segment is used, so small writes do not take 16 KiB of ring.
pub const TLS_SIZE_CLASSES: [usize; 4] = [256, 1024, 4096, TLS_SEGMENT_BYTES];

/// Length of the executable path captured at exec.
pub const EXEC_FILENAME_BYTES: usize = 256;
pub const COMM_BYTES: usize = 16;
/// Bytes of the argument vector captured at exec (NUL-separated strings).
/// The kernel copies each argument with a 1 KiB window, so the area is
/// twice that: an argument that starts below 1 KiB may run past it.
pub const EXEC_ARGS_BYTES: usize = 2048;
/// Arguments captured at most.
pub const EXEC_MAX_ARGS: u32 = 32;
/// Set on [`ExecRecord::header`] flags when arguments were left out.
pub const FLAG_EXEC_ARGS_TRUNCATED: u16 = 1;

/// What a record is. Sent as `u32` in [`Header::kind`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    Connect = 4,
    Close = 5,
    TlsData = 6,
    TlsBind = 7,
    ExecMmap = 8,
    RootChange = 9,
    /// The first bytes a TLS client wrote on a socket (its ClientHello),
    /// laid out as a TLS data record ([`TlsDataHeader`]).
    TlsClientHello = 10,
    /// A DNS answer a process read from a UDP socket connected to port 53,
    /// laid out as a TLS data record ([`TlsDataHeader`]).
    DnsAnswer = 11,
    /// A connect refused by the policy programs (`cgroup/connect4|6`).
    PolicyBlock = 12,
    /// JSON-RPC an agent's process wrote to a pipe or other non-socket
    /// file (MCP over stdio), laid out as a TLS data record
    /// ([`TlsDataHeader`], `library` cleartext).
    StdioData = 13,
}

impl TryFrom<u32> for RecordKind {
    type Error = u32;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Ok(match value {
            1 => Self::Exec,
            2 => Self::Fork,
            3 => Self::Exit,
            4 => Self::Connect,
            5 => Self::Close,
            6 => Self::TlsData,
            7 => Self::TlsBind,
            8 => Self::ExecMmap,
            9 => Self::RootChange,
            10 => Self::TlsClientHello,
            11 => Self::DnsAnswer,
            12 => Self::PolicyBlock,
            13 => Self::StdioData,
            other => return Err(other),
        })
    }
}

/// Direction of TLS plaintext, seen from the process that owns the SSL object.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `SSL_write*`: bytes the process sends.
    Egress = 0,
    /// `SSL_read*`: bytes the process receives.
    Ingress = 1,
}

impl TryFrom<u8> for Direction {
    type Error = u8;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Self::Egress),
            1 => Ok(Self::Ingress),
            other => Err(other),
        }
    }
}

/// Where plaintext came from: the TLS library a uprobe sits in (passed to
/// the programs as the attach cookie, so one program serves every library
/// with the same ABI), or the socket itself for cleartext connections.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsLibrary {
    Unknown = 0,
    OpenSsl = 1,
    BoringSsl = 2,
    GnuTls = 3,
    /// NSS, through NSPR's `PR_Write`/`PR_Read` on an SSL layer.
    Nss = 4,
    /// Go's `crypto/tls`.
    GoTls = 5,
    /// No TLS: cleartext read from the socket syscalls.
    Cleartext = 6,
}

impl TlsLibrary {
    pub const fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::OpenSsl,
            2 => Self::BoringSsl,
            3 => Self::GnuTls,
            4 => Self::Nss,
            5 => Self::GoTls,
            6 => Self::Cleartext,
            _ => Self::Unknown,
        }
    }
}

/// Bit set in [`TlsDataHeader::conn`] for connections identified by their
/// socket (cleartext, ClientHello) rather than by a TLS library object:
/// user-space addresses never have it.
pub const CONN_SOCKET_BIT: u64 = 1 << 63;

/// Set with [`CONN_SOCKET_BIT`] in the `conn` of a stdio stream (the rest
/// is the fd): one stream position per (process, fd).
pub const CONN_STDIO_BIT: u64 = 1 << 62;

/// Common prefix of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// A [`RecordKind`] as `u32`.
    pub kind: u32,
    pub version: u16,
    /// Kind-specific bits (see `FLAG_*`).
    pub flags: u16,
    /// `bpf_ktime_get_boot_ns()`: monotonic, counts suspend.
    pub ts_ns: u64,
    /// Thread group id (what user space calls the pid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    pub uid: u32,
    pub gid: u32,
}
const _: () = assert!(core::mem::size_of::<Header>() == 40);

/// `sched:sched_process_exec`: a process image was replaced.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub header: Header,
    /// Parent tgid as remembered from `sched_process_fork`, 0 if the process
    /// was forked before the sensor started.
    pub ppid: u32,
    /// Bytes of `filename` that are valid, without the NUL.
    pub filename_len: u32,
    pub comm: [u8; COMM_BYTES],
    pub filename: [u8; EXEC_FILENAME_BYTES],
    /// Bytes of `args` that are valid.
    pub args_len: u32,
    /// Arguments in `args`.
    pub argc: u32,
    /// The argument vector as passed to `execve`, NUL-separated, captured
    /// in the calling process so it survives a process that exits at once.
    pub args: [u8; EXEC_ARGS_BYTES],
}
const _: () = assert!(core::mem::size_of::<ExecRecord>() == 40 + 8 + 16 + 256 + 8 + 2048);

/// Arguments captured at `execve` entry, waiting for the exec to succeed.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecArgs {
    pub len: u32,
    pub argc: u32,
    pub truncated: u32,
    pub _pad: u32,
    pub buf: [u8; EXEC_ARGS_BYTES],
}

/// `sched:sched_process_fork` of a new thread group or thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ForkRecord {
    pub header: Header,
    /// The new task's id (a tid: user space ignores it if it turns out to be
    /// a thread).
    pub child_pid: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ForkRecord>() == 48);

/// `sched:sched_process_exit` of a thread group leader.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExitRecord {
    pub header: Header,
}

/// Set on [`ConnectRecord::header`] flags when the record describes a
/// connect that is still in progress (`-EINPROGRESS`, non-blocking socket).
pub const FLAG_CONNECT_IN_PROGRESS: u16 = 1;

/// `syscalls:sys_exit_connect` for an `AF_INET`/`AF_INET6` socket.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectRecord {
    pub header: Header,
    pub fd: i32,
    /// Syscall return value: 0, or a negative errno.
    pub ret: i32,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    /// `SOCK_STREAM` (1), `SOCK_DGRAM` (2), ... from the `socket(2)` call
    /// that made it, 0 when the socket predates the sensor.
    pub sock_type: u32,
    /// Destination address: 4 bytes for IPv4, 16 for IPv6, network order.
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ConnectRecord>() == 40 + 32);

/// `close(2)` of a socket fd the sensor saw connect.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CloseRecord {
    pub header: Header,
    pub fd: i32,
    pub _pad: u32,
    /// Bytes the process sent and received on the socket, counted for
    /// agent processes (see the `AGENTS` map) and cleartext HTTP
    /// connections; 0 otherwise.
    pub sent: u64,
    pub received: u64,
}

/// Set on [`TlsDataRecord`] flags when the fd was not known yet when the
/// record was made; a [`TlsBindRecord`] follows once it is.
pub const FLAG_TLS_FD_UNKNOWN: u16 = 1;

/// A piece of TLS plaintext from one `SSL_read*`/`SSL_write*` call. Only the
/// first `size_of::<TlsDataHeader>() + len` bytes are sent.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsDataHeader {
    pub header: Header,
    /// The `SSL *` (per process): identifies the TLS session.
    pub conn: u64,
    /// Position of this call's first byte in the session's stream for
    /// `direction`, counted by the kernel over every call (captured or not):
    /// a lost record shows as a jump.
    pub stream_pos: u64,
    /// Socket fd the session is bound to, or -1.
    pub fd: i32,
    /// A [`Direction`].
    pub direction: u8,
    /// A [`TlsLibrary`].
    pub library: u8,
    pub _pad: u16,
    /// Bytes the call transferred in all.
    pub total_len: u32,
    /// Offset of this segment in the call's buffer.
    pub offset: u32,
    /// Bytes of plaintext in this record.
    pub len: u32,
    pub _pad2: u32,
}
const _: () = assert!(core::mem::size_of::<TlsDataHeader>() == 40 + 40);

/// A TLS data record of size class `N` (see [`TLS_SIZE_CLASSES`]): the
/// header, then `head.len` valid bytes of `data`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsDataRecord<const N: usize> {
    pub head: TlsDataHeader,
    pub data: [u8; N],
}

/// Bytes of a TLS session's stream seen so far, per direction.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct StreamPos {
    pub egress: u64,
    pub ingress: u64,
}

/// An SSL session was tied to its socket fd.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsBindRecord {
    pub header: Header,
    pub conn: u64,
    pub fd: i32,
    pub _pad: u32,
}

/// `mmap` of a file with `PROT_EXEC`: a library (maybe a TLS one) was loaded.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecMmapRecord {
    pub header: Header,
    pub fd: i32,
    pub _pad: u32,
}

/// A process changed its root or mount namespace (`chroot`, `pivot_root`,
/// `setns`): a container is being set up, and its libraries can be probed
/// before its programs start.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RootChangeRecord {
    pub header: Header,
}

/// Key of the connected-socket table: one entry per (process, fd).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockKey {
    pub tgid: u32,
    pub fd: i32,
}

/// What a connected socket carries, judged from the first bytes the
/// process writes on it.
pub mod sock_state {
    /// Nothing written yet.
    pub const UNKNOWN: u8 = 0;
    /// A TLS ClientHello went out: the socket carries ciphertext, whose
    /// plaintext (if any) comes from a TLS library probe.
    pub const TLS: u8 = 1;
    /// Cleartext HTTP (a request line or the HTTP/2 preface): both
    /// directions are copied from the syscalls.
    pub const HTTP: u8 = 2;
    /// Anything else: not copied.
    pub const OTHER: u8 = 3;
    /// A UDP socket connected to port 53: the answers it reads are copied
    /// (which names the process resolved to which addresses).
    pub const DNS: u8 = 4;
}

/// Value of the connected-socket table.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockValue {
    /// The SSL object bound to this socket, 0 if none yet.
    pub ssl: u64,
    /// The socket's connection id ([`CONN_SOCKET_BIT`] | connect time in
    /// ns), the `conn` of its cleartext and ClientHello records.
    pub conn: u64,
    /// A [`sock_state`] value.
    pub state: u8,
    pub _pad: [u8; 7],
    /// Bytes written and read, for the sockets whose calls are followed
    /// to their exit (agents', cleartext HTTP).
    pub sent: u64,
    pub received: u64,
}

/// Key of the SSL-to-fd table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SslKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ssl: u64,
}

/// Indexes of the per-CPU counters the kernel programs keep.
pub mod counter {
    /// A record could not be put in the ring buffer (full).
    pub const RINGBUF_DROPS: u32 = 0;
    /// `bpf_probe_read_user` of TLS plaintext failed.
    pub const TLS_READ_ERRORS: u32 = 1;
    /// Bytes of TLS plaintext not copied because a call exceeded the cap.
    pub const TLS_BYTES_TRUNCATED: u32 = 2;
    /// A return probe found no matching entry (entry missed or map full).
    pub const TLS_ORPHAN_RETURNS: u32 = 3;
    /// Cleartext socket calls whose bytes were copied.
    pub const CLEARTEXT_CALLS: u32 = 4;
    /// Vectored socket calls (`writev`, `sendmsg`, ...) with more buffers
    /// than the kernel program copies: the rest counts as truncated bytes.
    pub const IOVEC_TRUNCATED: u32 = 5;
    /// Connects refused by the policy programs.
    pub const POLICY_BLOCKS: u32 = 6;
    pub const COUNT: u32 = 7;
}

pub mod policy;

#[cfg(feature = "user")]
mod pod {
    use super::policy::{PolicyKey, PolicyVerdict};
    use super::{SockKey, SockValue, SslKey, StreamPos};
    // SAFETY: plain `#[repr(C)]` integers with explicit padding: every bit
    // pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for PolicyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyVerdict {}
    // SAFETY: plain `#[repr(C)]` integers with explicit padding: every bit
    // pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for SockKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SockValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SslKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for StreamPos {}
}
