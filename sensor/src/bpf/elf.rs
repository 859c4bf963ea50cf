//! Finding TLS library functions in ELF files: a shared libssl, libgnutls
//! or libnspr4, or an executable that links OpenSSL/BoringSSL statically
//! and keeps the symbols (node, Bun-style single binaries, a static curl).
//! Found by the symbol tables, never by the file's name. Offsets are file
//! offsets, as uprobes want them.

use std::{fs::File, path::Path};

use object::{Object, ObjectSegment, ObjectSymbol};
use sensor_common::TlsLibrary;

/// The OpenSSL API functions the sensor probes.
pub const SSL_FUNCTIONS: [&str; 4] = ["SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex"];
/// GnuTLS's record layer calls.
pub const GNUTLS_FUNCTIONS: [&str; 2] = ["gnutls_record_send", "gnutls_record_recv"];
/// NSPR's I/O calls, through which NSS applications read and write an
/// SSL socket.
pub const NSPR_FUNCTIONS: [&str; 4] = ["PR_Write", "PR_Send", "PR_Read", "PR_Recv"];

/// Every probed function name.
fn wanted(name: &[u8]) -> Option<&'static str> {
    SSL_FUNCTIONS
        .iter()
        .chain(&GNUTLS_FUNCTIONS)
        .chain(&NSPR_FUNCTIONS)
        .find(|f| f.as_bytes() == name)
        .copied()
}

/// What a symbol scan found.
#[derive(Default)]
struct Scan {
    found: Vec<(&'static str, u64)>,
    /// BoringSSL's marker symbols are defined.
    boring: bool,
    /// `gnutls_record_send` is imported: the file is GnuTLS's OpenSSL
    /// compatibility layer (libgnutls-openssl), whose `SSL_write` calls
    /// into libgnutls, which is probed itself.
    imports_gnutls: bool,
}

impl Scan {
    fn note(&mut self, name: &[u8], defined: bool, offset: impl FnOnce() -> Option<u64>) {
        if !defined {
            if name == b"gnutls_record_send" {
                self.imports_gnutls = true;
            }
            return;
        }
        if name.starts_with(b"BORINGSSL_") {
            self.boring = true;
        }
        let Some(wanted) = wanted(name) else {
            return;
        };
        if !self.found.iter().any(|(f, _)| *f == wanted)
            && let Some(offset) = offset()
        {
            self.found.push((wanted, offset));
        }
    }

    fn has(&self, name: &str) -> bool {
        self.found.iter().any(|(f, _)| *f == name)
    }

    /// The library the functions found make up, and only its functions:
    /// a write and a read call are both needed to make sense of a
    /// connection.
    fn library(&self) -> Option<TlsLibrary> {
        if (self.has("SSL_write") || self.has("SSL_write_ex"))
            && (self.has("SSL_read") || self.has("SSL_read_ex"))
        {
            if self.imports_gnutls {
                return None;
            }
            return Some(if self.boring {
                TlsLibrary::BoringSsl
            } else {
                TlsLibrary::OpenSsl
            });
        }
        if self.has("gnutls_record_send") && self.has("gnutls_record_recv") {
            return Some(TlsLibrary::GnuTls);
        }
        if (self.has("PR_Write") || self.has("PR_Send"))
            && (self.has("PR_Read") || self.has("PR_Recv"))
        {
            return Some(TlsLibrary::Nss);
        }
        None
    }

    /// Enough found to stop looking.
    fn complete(&self) -> bool {
        self.library().is_some()
    }
}

/// The functions a library's probes go on.
fn functions_of(library: TlsLibrary) -> &'static [&'static str] {
    match library {
        TlsLibrary::OpenSsl | TlsLibrary::BoringSsl => &SSL_FUNCTIONS,
        TlsLibrary::GnuTls => &GNUTLS_FUNCTIONS,
        TlsLibrary::Nss => &NSPR_FUNCTIONS,
        TlsLibrary::GoTls | TlsLibrary::Cleartext | TlsLibrary::Unknown => &[],
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("opening {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse { path: String, source: object::Error },
}

/// Functions found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSymbols {
    pub library: TlsLibrary,
    /// (function name, file offset) for each of [`SSL_FUNCTIONS`] present.
    pub functions: Vec<(&'static str, u64)>,
}

/// Reads `path` and returns the TLS functions it defines, or `None` when it
/// defines none (most files).
pub fn find_tls_symbols(path: &Path) -> Result<Option<TlsSymbols>, ElfError> {
    let file = File::open(path).map_err(|source| ElfError::Open {
        path: path.display().to_string(),
        source,
    })?;
    find_tls_symbols_in(&file, path)
}

/// As [`find_tls_symbols`], for a file already open (`path` names it in errors).
pub fn find_tls_symbols_in(file: &File, path: &Path) -> Result<Option<TlsSymbols>, ElfError> {
    let shown = || path.display().to_string();
    // Read through a cache of the parts the parser asks for (headers,
    // symbol tables) rather than mapping the file: a file truncated under us
    // (inside a container) would fault a mapping with SIGBUS, and reading
    // a 100 MB executable whole would be wasteful.
    let cache = object::read::ReadCache::new(file);
    let elf = object::File::parse(&cache).map_err(|source| ElfError::Parse {
        path: shown(),
        source,
    })?;
    let mut scan = Scan::default();
    // Exported symbols first: small, and enough for shared libraries and
    // for executables that export the API (node). The full symbol table of
    // a large executable is read only when the exports lack it: an exec'd
    // client must be armed before its first request.
    if !scan_dynsym_fast(&elf, &mut scan) {
        for symbol in elf.dynamic_symbols() {
            consider(&elf, &symbol, &mut scan);
        }
    }
    if !scan.complete() {
        for symbol in elf.symbols() {
            consider(&elf, &symbol, &mut scan);
        }
    }
    let Some(library) = scan.library() else {
        return Ok(None);
    };
    let keep = functions_of(library);
    let mut functions = scan.found;
    functions.retain(|(f, _)| keep.contains(f));
    Ok(Some(TlsSymbols { library, functions }))
}

/// Scans `.dynsym` of a 64-bit little-endian ELF as raw `Elf64_Sym`
/// records against one read of `.dynstr`: node exports some 75,000
/// symbols, and reading each name through the generic API costs ~1 us (it
/// goes through the read cache), too slow to arm a freshly exec'd client
/// before its first request. Returns false when the layout does not apply.
fn scan_dynsym_fast<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    scan: &mut Scan,
) -> bool {
    use object::ObjectSection as _;
    const SYM_SIZE: usize = 24;
    if !elf.is_64() || !elf.is_little_endian() {
        return false;
    }
    let (Some(dynsym), Some(dynstr)) = (
        elf.section_by_name(".dynsym"),
        elf.section_by_name(".dynstr"),
    ) else {
        return false;
    };
    let (Ok(symbols), Ok(strings)) = (dynsym.data(), dynstr.data()) else {
        return false;
    };
    for sym in symbols.chunks_exact(SYM_SIZE) {
        let word = |range: std::ops::Range<usize>| sym.get(range).unwrap_or_default();
        let name_off = u32::from_le_bytes(word(0..4).try_into().unwrap_or_default()) as usize;
        let shndx = u16::from_le_bytes(word(6..8).try_into().unwrap_or_default());
        let value = u64::from_le_bytes(word(8..16).try_into().unwrap_or_default());
        let Some(rest) = strings.get(name_off..) else {
            continue;
        };
        let name = &rest[..memchr::memchr(0, rest).unwrap_or(rest.len())];
        if !(name.starts_with(b"SSL_")
            || name.starts_with(b"BORINGSSL_")
            || name.starts_with(b"gnutls_record_")
            || name.starts_with(b"PR_"))
        {
            continue;
        }
        // Undefined (imported) or absolute zero: not a definition.
        let defined = shndx != 0 && value != 0;
        scan.note(name, defined, || file_offset(elf, value));
    }
    true
}

/// Records `symbol` if it is a probed function (first definition wins),
/// and notes the marker symbols.
fn consider<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    symbol: &object::Symbol<'data, '_, R>,
    scan: &mut Scan,
) {
    let Ok(name) = symbol.name_bytes() else {
        return;
    };
    let defined = symbol.is_definition() && symbol.address() != 0;
    scan.note(name, defined, || file_offset(elf, symbol.address()));
}

/// Virtual address to file offset, through the loadable segment holding it.
fn file_offset<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    address: u64,
) -> Option<u64> {
    elf.segments().find_map(|segment| {
        let start = segment.address();
        let (file_start, file_size) = segment.file_range();
        (address >= start && address < start.checked_add(file_size)?)
            .then(|| address - start + file_start)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's own libssl, when there is one: a real sample.
    #[test]
    fn finds_openssl_functions_in_system_libssl() {
        let candidates = [
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/lib/x86_64-linux-gnu/libssl.so.3",
        ];
        let Some(path) = candidates.iter().map(Path::new).find(|p| p.exists()) else {
            eprintln!("no system libssl.so.3 on this machine; skipping");
            return;
        };
        let found = find_tls_symbols(path).expect("parse").expect("symbols");
        assert_eq!(found.library, TlsLibrary::OpenSsl);
        for name in SSL_FUNCTIONS {
            assert!(
                found
                    .functions
                    .iter()
                    .any(|(f, off)| *f == name && *off > 0),
                "{name}"
            );
        }
    }

    /// The raw `.dynsym` scan and the generic symbol API agree.
    #[test]
    fn fast_scan_matches_the_generic_reader() {
        for path in ["/usr/lib/x86_64-linux-gnu/libssl.so.3", "/usr/bin/node"] {
            let Ok(file) = File::open(path) else { continue };
            let cache = object::read::ReadCache::new(&file);
            let elf = object::File::parse(&cache).expect("parse");
            let (mut fast, mut slow) = (Scan::default(), Scan::default());
            assert!(scan_dynsym_fast(&elf, &mut fast), "{path}");
            for symbol in elf.dynamic_symbols() {
                consider(&elf, &symbol, &mut slow);
            }
            fast.found.sort();
            slow.found.sort();
            assert_eq!(fast.found, slow.found, "{path}");
            assert_eq!(fast.boring, slow.boring);
            assert_eq!(fast.imports_gnutls, slow.imports_gnutls);
            assert!(!fast.found.is_empty(), "{path}");
        }
    }

    /// GnuTLS and NSPR, and GnuTLS's OpenSSL compatibility layer (which
    /// must not be probed as OpenSSL: it calls into libgnutls).
    #[test]
    fn finds_gnutls_and_nspr_and_skips_the_gnutls_openssl_shim() {
        let dir = Path::new("/usr/lib/x86_64-linux-gnu");
        let gnutls = find_tls_symbols(&dir.join("libgnutls.so.30"))
            .expect("parse")
            .expect("symbols");
        assert_eq!(gnutls.library, TlsLibrary::GnuTls);
        assert_eq!(gnutls.functions.len(), 2);
        let nspr = find_tls_symbols(&dir.join("libnspr4.so"))
            .expect("parse")
            .expect("symbols");
        assert_eq!(nspr.library, TlsLibrary::Nss);
        assert_eq!(nspr.functions.len(), 4);
        let shim = dir.join("libgnutls-openssl.so.27");
        if shim.exists() {
            assert_eq!(find_tls_symbols(&shim).expect("parse"), None);
        }
    }

    #[test]
    fn a_file_without_tls_is_none() {
        let exe = std::env::current_exe().expect("exe");
        assert_eq!(find_tls_symbols(&exe).expect("parse"), None);
    }

    #[test]
    fn a_non_elf_file_is_an_error() {
        let err = find_tls_symbols(Path::new("/proc/self/status")).unwrap_err();
        assert!(matches!(
            err,
            ElfError::Open { .. } | ElfError::Parse { .. }
        ));
    }
}
