//! Connections the kernel saw connect, per (pid, fd): the destination from
//! the connect record and, resolved lazily from /proc, the local address.

use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

/// Connections remembered at most; the oldest go first past this.
const MAX_CONNECTIONS: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: Option<SocketAddr>,
    pub connect_ts: u64,
    /// The name the process resolved the address from (its DNS answer).
    pub domain: Option<String>,
    /// From the connection's ClientHello (TLS only).
    pub server_name: Option<String>,
    /// ALPN protocols the client offered.
    pub alpn: Vec<String>,
    local_resolved: bool,
}

#[derive(Default)]
pub struct ConnTable {
    map: HashMap<(u32, i32), ConnInfo>,
}

impl ConnTable {
    pub fn on_connect(
        &mut self,
        pid: u32,
        fd: i32,
        remote: SocketAddr,
        ts: u64,
        domain: Option<String>,
    ) {
        if self.map.len() >= MAX_CONNECTIONS {
            // Connections closed without a close record (process killed
            // before the sensor saw it): drop the oldest.
            if let Some(key) = self
                .map
                .iter()
                .min_by_key(|(_, c)| c.connect_ts)
                .map(|(k, _)| *k)
            {
                self.map.remove(&key);
            }
        }
        self.map.insert(
            (pid, fd),
            ConnInfo {
                remote,
                local: None,
                connect_ts: ts,
                domain,
                server_name: None,
                alpn: Vec::new(),
                local_resolved: false,
            },
        );
    }

    pub fn on_close(&mut self, pid: u32, fd: i32) -> Option<ConnInfo> {
        self.map.remove(&(pid, fd))
    }

    /// Forgets the process's connections; returns their fds.
    pub fn on_exit(&mut self, pid: u32) -> Vec<i32> {
        let fds: Vec<i32> = self
            .map
            .keys()
            .filter(|(p, _)| *p == pid)
            .map(|(_, fd)| *fd)
            .collect();
        for fd in &fds {
            self.map.remove(&(pid, *fd));
        }
        fds
    }

    /// The connection's ClientHello was seen; returns its destination.
    pub fn on_client_hello(
        &mut self,
        pid: u32,
        fd: i32,
        server_name: Option<String>,
        alpn: Vec<String>,
    ) -> Option<SocketAddr> {
        let conn = self.map.get_mut(&(pid, fd))?;
        conn.server_name = server_name;
        conn.alpn = alpn;
        Some(conn.remote)
    }

    /// The connection, with its local address looked up once.
    pub fn get(&mut self, pid: u32, fd: i32) -> Option<&ConnInfo> {
        let conn = self.map.get_mut(&(pid, fd))?;
        if !conn.local_resolved {
            conn.local_resolved = true;
            conn.local = local_address(pid, fd, conn.remote);
        }
        Some(conn)
    }
}

/// Local address of a socket fd: asked of the socket itself (a copy of the
/// fd through `pidfd_getfd`, then `getsockname`), which costs the same
/// whatever the number of sockets on the host; else looked up in /proc.
fn local_address(pid: u32, fd: i32, remote: SocketAddr) -> Option<SocketAddr> {
    let local = socket_name(pid, fd).or_else(|| local_address_from_proc(pid, fd, remote))?;
    // Report an IPv4-mapped local address as IPv4 like the remote.
    Some(match (local.ip(), remote.ip()) {
        (IpAddr::V6(v6), IpAddr::V4(_)) => SocketAddr::new(
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            local.port(),
        ),
        _ => local,
    })
}

/// `getsockname` on a copy of the process's fd (Linux 5.6+; needs the
/// right to ptrace the process). The copy is closed at once; the process's
/// socket is not touched.
fn socket_name(pid: u32, fd: i32) -> Option<SocketAddr> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags, and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = i32::try_from(pidfd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: a new descriptor nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: pidfd_getfd takes a pidfd, a target fd and flags, and returns
    // a new fd or -1.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    let copy = i32::try_from(copy).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: as above.
    let copy = unsafe { OwnedFd::from_raw_fd(copy) };
    // SAFETY: sockaddr_storage is plain data, valid when zeroed.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage and len describe a writable buffer of that size.
    let rc = unsafe {
        libc::getsockname(
            copy.as_raw_fd(),
            std::ptr::addr_of_mut!(storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read(std::ptr::addr_of!(storage).cast()) };
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))),
                u16::from_be(sin.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read(std::ptr::addr_of!(storage).cast()) };
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)),
                u16::from_be(sin6.sin6_port),
            ))
        }
        _ => None,
    }
}

/// The inode of a socket fd from `/proc/<pid>/fd/<fd>`, then the row with
/// that inode in the process's `/proc/<pid>/net/tcp{,6}` (whose size grows
/// with every socket in the network namespace).
fn local_address_from_proc(pid: u32, fd: i32, remote: SocketAddr) -> Option<SocketAddr> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let link = link.to_str()?;
    let inode = link.strip_prefix("socket:[")?.strip_suffix(']')?;
    // An IPv6 peer can only be in tcp6; an IPv4 one is in tcp, or in tcp6
    // for a dual-stack socket. These tables cover the whole network
    // namespace, so read no more of them than needed.
    let tables: &[&str] = if remote.is_ipv4() {
        &["tcp", "tcp6"]
    } else {
        &["tcp6"]
    };
    for table in tables {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(9) == Some(&inode) {
                return parse_proc_addr(cols.get(1)?);
            }
        }
    }
    None
}

/// `0100007F:1F90` (IPv4, host-order words) or the 32-hex-digit IPv6 form.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.swap_bytes(),
        )),
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.swap_bytes().to_be_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_addresses() {
        assert_eq!(
            parse_proc_addr("0100007F:01BB"),
            Some("127.0.0.1:443".parse().unwrap())
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:1F90"),
            Some("[::1]:8080".parse().unwrap())
        );
        assert_eq!(parse_proc_addr("zz:1"), None);
    }

    #[test]
    fn resolves_a_real_local_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        use std::os::fd::AsRawFd as _;
        let mut table = ConnTable::default();
        let pid = std::process::id();
        let remote = listener.local_addr().expect("addr");
        table.on_connect(pid, client.as_raw_fd(), remote, 1, None);
        let conn = table.get(pid, client.as_raw_fd()).expect("conn");
        assert_eq!(conn.local, client.local_addr().ok());
        // Both ways give the same answer.
        assert_eq!(
            socket_name(pid, client.as_raw_fd()),
            client.local_addr().ok()
        );
        assert_eq!(
            local_address_from_proc(pid, client.as_raw_fd(), remote),
            client.local_addr().ok()
        );
        // Not an open fd: nothing.
        assert_eq!(socket_name(pid, 1_000_000), None);
    }
}
