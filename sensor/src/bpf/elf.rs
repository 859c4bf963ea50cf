//! Finding TLS library functions in ELF files: a shared libssl, or an
//! executable that links OpenSSL/BoringSSL statically and keeps the symbols
//! (node, Bun-style single binaries). Offsets are file offsets, as uprobes
//! want them.

use std::{fs::File, path::Path};

use object::{Object, ObjectSegment, ObjectSymbol};
use sensor_common::TlsLibrary;

/// The OpenSSL API functions the sensor probes.
pub const SSL_FUNCTIONS: [&str; 4] = ["SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex"];

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
    let shown = || path.display().to_string();
    let file = File::open(path).map_err(|source| ElfError::Open {
        path: shown(),
        source,
    })?;
    // SAFETY: the mapping is read-only and private. A file truncated under
    // us could fault; library files are replaced by rename, not rewritten.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ElfError::Open {
        path: shown(),
        source,
    })?;
    let elf = object::File::parse(&*map).map_err(|source| ElfError::Parse {
        path: shown(),
        source,
    })?;
    let mut found: Vec<(&'static str, u64)> = Vec::new();
    let mut boring = false;
    let mut consider = |name: &[u8], address: u64| {
        if name.starts_with(b"BORINGSSL_") {
            boring = true;
        }
        let Some(wanted) = SSL_FUNCTIONS.iter().find(|f| f.as_bytes() == name) else {
            return;
        };
        if found.iter().any(|(f, _)| f == wanted) {
            return;
        }
        if let Some(offset) = file_offset(&elf, address) {
            found.push((wanted, offset));
        }
    };
    for symbol in elf.dynamic_symbols().chain(elf.symbols()) {
        if !symbol.is_definition() || symbol.address() == 0 {
            continue;
        }
        if let Ok(name) = symbol.name_bytes() {
            consider(name, symbol.address());
        }
    }
    // Both SSL_write and SSL_read (or their _ex forms) are needed to make
    // sense of a connection; a file with only one of them is not a TLS library.
    let has = |name: &str| found.iter().any(|(f, _)| *f == name);
    if !(has("SSL_write") || has("SSL_write_ex")) || !(has("SSL_read") || has("SSL_read_ex")) {
        return Ok(None);
    }
    let library = if boring {
        TlsLibrary::BoringSsl
    } else {
        TlsLibrary::OpenSsl
    };
    Ok(Some(TlsSymbols {
        library,
        functions: found,
    }))
}

/// Virtual address to file offset, through the loadable segment holding it.
fn file_offset(elf: &object::File<'_>, address: u64) -> Option<u64> {
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
