//! What a network sink's sender does with a batch of encoded records, and
//! how it fails. The sender (see [`super::spool`]) keeps a batch until its
//! transport accepts it: a retryable error means "try again later, the
//! same records, in the same order"; a rejection drops the batch and
//! counts it (the receiver will never take it, and holding it would block
//! everything behind it).

use std::{
    io,
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::Arc,
    time::Duration,
};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Down, unreachable, timed out, or said "later" (5xx, 408, 429):
    /// the batch is kept and sent again after a back-off.
    #[error("{0}")]
    Retryable(String),
    /// Refused for good (a 4xx other than 408/429: malformed, forbidden):
    /// the batch is dropped and counted.
    #[error("{0}")]
    Rejected(String),
}

impl From<io::Error> for TransportError {
    fn from(err: io::Error) -> Self {
        Self::Retryable(err.to_string())
    }
}

/// One destination: syslog, Splunk HEC, Elasticsearch, a webhook.
pub trait Transport: Send {
    /// Delivers `records` (each one encoded event, no trailing newline) in
    /// order. `Ok` means the receiver took all of them as far as the
    /// protocol can tell.
    fn send(&mut self, records: &[&[u8]]) -> Result<(), TransportError>;

    /// [`Transport::send`] with each record's id (`event.id`), for
    /// receivers that can drop repeats by id.
    fn send_with_ids(&mut self, ids: &[&str], records: &[&[u8]]) -> Result<(), TransportError> {
        let _ = ids;
        self.send(records)
    }

    /// Records of accepted batches that the receiver refused one by one
    /// since the last call (e.g. `_bulk` item errors).
    fn take_rejected(&mut self) -> u64 {
        0
    }
}

/// A TLS session over a TCP stream, as the sinks use it.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// The first of `addrs` that accepts a TCP connection within `timeout`,
/// set up for a sink: no Nagle delay, reads and writes bounded by
/// `timeout`. The error is the last address's, or NotFound with none.
pub fn connect_first(
    addrs: impl IntoIterator<Item = SocketAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                tcp.set_read_timeout(Some(timeout))?;
                tcp.set_write_timeout(Some(timeout))?;
                return Ok(tcp);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A TLS session over `tcp` with the handshake done now, so that a
/// certificate problem is reported as such, not as a failed write.
pub fn tls_handshake(
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
    tcp: TcpStream,
) -> io::Result<TlsStream> {
    let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// A rustls client configuration trusting `ca_file` (PEM), or the
/// system's bundle when none is given.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let path = ca_file.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading CA certificates {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("CA certificates {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA certificate in {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("no CA certificate in {}", path.display()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Debian's (and most distributions') bundle of trusted roots.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
