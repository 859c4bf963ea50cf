//! Ring buffer bytes to typed records. The kind tag is read as a `u32` and
//! converted with `TryFrom`; a short, unknown or wrong-version record is an
//! error the pipeline counts, never a transmute.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sensor_common::{
    CloseRecord, ConnectRecord, Direction, ExecMmapRecord, ExecRecord, ExitRecord,
    FLAG_CONNECT_IN_PROGRESS, FLAG_EXEC_ARGS_TRUNCATED, ForkRecord, Header, RECORD_VERSION,
    RecordKind, RootChangeRecord, TlsBindRecord, TlsDataHeader, TlsLibrary,
    policy::PolicyBlockRecord,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its {need}-byte layout")]
    Short { len: usize, need: usize },
    #[error("unknown record kind {kind}")]
    UnknownKind { kind: u32 },
    #[error("record version {version}, expected {RECORD_VERSION}")]
    Version { version: u16 },
    #[error("TLS record claims {claimed} bytes of data but carries {carried}")]
    TlsLength { claimed: u32, carried: usize },
    #[error("unknown TLS direction {0}")]
    Direction(u8),
    #[error("unknown address family {0}")]
    Family(u16),
}

/// Fields every record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub cgroup_id: u64,
    pub uid: u32,
    pub gid: u32,
}

/// A piece of TLS plaintext (see `sensor_common::TlsDataHeader`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsData {
    pub task: Task,
    /// The `SSL *`: with the pid, identifies the TLS session.
    pub conn: u64,
    pub fd: Option<i32>,
    pub direction: Direction,
    pub library: TlsLibrary,
    /// Position of the call's first byte in this direction's stream.
    pub stream_pos: u64,
    /// Bytes the SSL call transferred in all.
    pub total_len: u32,
    /// Offset of `data` in the call's buffer.
    pub offset: u32,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Exec {
        task: Task,
        ppid: u32,
        comm: String,
        filename: String,
        args: Vec<String>,
        args_truncated: bool,
    },
    Fork {
        task: Task,
        child_pid: u32,
    },
    Exit {
        task: Task,
    },
    Connect {
        task: Task,
        fd: i32,
        ret: i32,
        in_progress: bool,
        addr: IpAddr,
        port: u16,
        /// `SOCK_STREAM` (1), `SOCK_DGRAM` (2), ...; 0 if unknown.
        sock_type: u32,
    },
    Close {
        task: Task,
        fd: i32,
        /// Bytes sent and received, when the kernel counted them.
        sent: u64,
        received: u64,
    },
    TlsData(TlsData),
    /// The first bytes a client wrote on a TLS socket: its ClientHello
    /// (`conn` is the socket's connection id; `stream_pos` is 0).
    ClientHello(TlsData),
    /// A DNS answer read by the process (`data` is the message).
    DnsAnswer(TlsData),
    /// JSON-RPC an agent's process wrote to a pipe (MCP over stdio).
    StdioData(TlsData),
    TlsBind {
        task: Task,
        conn: u64,
        fd: i32,
    },
    ExecMmap {
        task: Task,
        fd: i32,
    },
    RootChange {
        task: Task,
    },
    /// A connect the policy programs refused.
    PolicyBlock {
        task: Task,
        /// Index of the rule in the policy of `generation`.
        rule: u32,
        generation: u32,
        addr: IpAddr,
        port: u16,
    },
}

/// Copies a `#[repr(C)]` plain-integer record out of `bytes`.
fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked above; `T` is one of the sensor-common records,
    // plain integers and byte arrays for which every bit pattern is valid;
    // `read_unaligned` makes no alignment assumption.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn task(h: &Header) -> Task {
    Task {
        ts_ns: h.ts_ns,
        pid: h.pid,
        tid: h.tid,
        cgroup_id: h.cgroup_id,
        uid: h.uid,
        gid: h.gid,
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = memchr::memchr(0, bytes).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let header: Header = read(bytes)?;
    let kind =
        RecordKind::try_from(header.kind).map_err(|kind| DecodeError::UnknownKind { kind })?;
    if header.version != RECORD_VERSION {
        return Err(DecodeError::Version {
            version: header.version,
        });
    }
    let t = task(&header);
    Ok(match kind {
        RecordKind::Exec => {
            let r: ExecRecord = read(bytes)?;
            let len = (r.filename_len as usize).min(r.filename.len());
            let args_len = (r.args_len as usize).min(r.args.len());
            let args = r.args[..args_len]
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .take(r.argc as usize)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Record::Exec {
                task: t,
                ppid: r.ppid,
                comm: c_string(&r.comm),
                filename: c_string(&r.filename[..len]),
                args,
                args_truncated: header.flags & FLAG_EXEC_ARGS_TRUNCATED != 0,
            }
        }
        RecordKind::Fork => {
            let r: ForkRecord = read(bytes)?;
            Record::Fork {
                task: t,
                child_pid: r.child_pid,
            }
        }
        RecordKind::Exit => {
            let _: ExitRecord = read(bytes)?;
            Record::Exit { task: t }
        }
        RecordKind::Connect => {
            let r: ConnectRecord = read(bytes)?;
            let addr = match r.family {
                2 => IpAddr::V4(Ipv4Addr::new(r.addr[0], r.addr[1], r.addr[2], r.addr[3])),
                10 => {
                    let v6 = Ipv6Addr::from(r.addr);
                    // An IPv4 peer on a dual-stack socket: report it as IPv4.
                    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
                }
                other => return Err(DecodeError::Family(other)),
            };
            Record::Connect {
                task: t,
                fd: r.fd,
                ret: r.ret,
                in_progress: header.flags & FLAG_CONNECT_IN_PROGRESS != 0,
                addr,
                port: r.port,
                sock_type: r.sock_type,
            }
        }
        RecordKind::Close => {
            let r: CloseRecord = read(bytes)?;
            Record::Close {
                task: t,
                fd: r.fd,
                sent: r.sent,
                received: r.received,
            }
        }
        RecordKind::TlsData
        | RecordKind::TlsClientHello
        | RecordKind::DnsAnswer
        | RecordKind::StdioData => {
            let h: TlsDataHeader = read(bytes)?;
            let data = &bytes[size_of::<TlsDataHeader>()..];
            let len = h.len as usize;
            let data = data.get(..len).ok_or(DecodeError::TlsLength {
                claimed: h.len,
                carried: data.len(),
            })?;
            let chunk = TlsData {
                task: t,
                conn: h.conn,
                fd: (h.fd >= 0).then_some(h.fd),
                direction: Direction::try_from(h.direction).map_err(DecodeError::Direction)?,
                library: TlsLibrary::from_u8(h.library),
                stream_pos: h.stream_pos,
                total_len: h.total_len,
                offset: h.offset,
                data: data.to_vec(),
            };
            if kind == RecordKind::TlsClientHello {
                Record::ClientHello(chunk)
            } else if kind == RecordKind::DnsAnswer {
                Record::DnsAnswer(chunk)
            } else if kind == RecordKind::StdioData {
                Record::StdioData(chunk)
            } else {
                Record::TlsData(chunk)
            }
        }
        RecordKind::TlsBind => {
            let r: TlsBindRecord = read(bytes)?;
            Record::TlsBind {
                task: t,
                conn: r.conn,
                fd: r.fd,
            }
        }
        RecordKind::RootChange => {
            let _: RootChangeRecord = read(bytes)?;
            Record::RootChange { task: t }
        }
        RecordKind::ExecMmap => {
            let r: ExecMmapRecord = read(bytes)?;
            Record::ExecMmap { task: t, fd: r.fd }
        }
        RecordKind::PolicyBlock => {
            let r: PolicyBlockRecord = read(bytes)?;
            let v6 = Ipv6Addr::from(r.addr);
            Record::PolicyBlock {
                task: t,
                rule: r.rule,
                generation: r.generation,
                addr: v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                port: r.port,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u32, version: u16) -> Header {
        Header {
            kind,
            version,
            flags: 0,
            ts_ns: 7,
            pid: 10,
            tid: 11,
            cgroup_id: 1,
            uid: 0,
            gid: 0,
        }
    }

    fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: test-only view of a plain `#[repr(C)]` record as bytes.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn unknown_kind_and_version_are_errors() {
        assert_eq!(
            decode(&bytes_of(&header(99, RECORD_VERSION))),
            Err(DecodeError::UnknownKind { kind: 99 })
        );
        assert_eq!(
            decode(&bytes_of(&header(3, 42))),
            Err(DecodeError::Version { version: 42 })
        );
        assert!(matches!(decode(&[1, 2, 3]), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn decodes_connect_v4_and_mapped_v6() {
        let mut r = ConnectRecord {
            header: header(4, RECORD_VERSION),
            fd: 3,
            ret: -115,
            family: 2,
            port: 443,
            sock_type: 1,
            addr: [0; 16],
        };
        r.header.flags = FLAG_CONNECT_IN_PROGRESS;
        r.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let Ok(Record::Connect {
            addr,
            port,
            in_progress,
            ret,
            ..
        }) = decode(&bytes_of(&r))
        else {
            panic!()
        };
        assert_eq!(
            (addr, port, in_progress, ret),
            ("127.0.0.1".parse().unwrap(), 443, true, -115)
        );
        r.family = 10;
        r.addr = "::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap().octets();
        let Ok(Record::Connect { addr, .. }) = decode(&bytes_of(&r)) else {
            panic!()
        };
        assert_eq!(addr, "10.0.0.1".parse::<IpAddr>().unwrap());
        r.family = 1;
        assert_eq!(decode(&bytes_of(&r)), Err(DecodeError::Family(1)));
    }

    #[test]
    fn tls_data_length_must_match() {
        let h = TlsDataHeader {
            header: header(6, RECORD_VERSION),
            conn: 5,
            fd: -1,
            stream_pos: 0,
            direction: 0,
            library: 1,
            _pad: 0,
            total_len: 5,
            offset: 0,
            len: 5,
            _pad2: 0,
        };
        let mut bytes = bytes_of(&h);
        bytes.extend_from_slice(b"hello");
        let Ok(Record::TlsData(TlsData {
            data,
            fd,
            direction,
            ..
        })) = decode(&bytes)
        else {
            panic!()
        };
        assert_eq!(
            (data.as_slice(), fd, direction),
            (&b"hello"[..], None, Direction::Egress)
        );
        bytes.truncate(bytes.len() - 1);
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::TlsLength {
                claimed: 5,
                carried: 4
            })
        );
    }
}
