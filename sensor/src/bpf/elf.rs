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
    let mut found: Vec<(&'static str, u64)> = Vec::new();
    let mut boring = false;
    // Exported symbols first: small, and enough for shared libraries and
    // for executables that export the API (node). The full symbol table of
    // a large executable is read only when the exports lack it: an exec'd
    // client must be armed before its first request.
    if !scan_dynsym_fast(&elf, &mut found, &mut boring) {
        for symbol in elf.dynamic_symbols() {
            consider(&elf, &symbol, &mut found, &mut boring);
        }
    }
    if found.len() < 2 {
        for symbol in elf.symbols() {
            consider(&elf, &symbol, &mut found, &mut boring);
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

/// Scans `.dynsym` of a 64-bit little-endian ELF as raw `Elf64_Sym`
/// records against one read of `.dynstr`: node exports some 75,000
/// symbols, and reading each name through the generic API costs ~1 us (it
/// goes through the read cache), too slow to arm a freshly exec'd client
/// before its first request. Returns false when the layout does not apply.
fn scan_dynsym_fast<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    found: &mut Vec<(&'static str, u64)>,
    boring: &mut bool,
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
        if shndx == 0 || value == 0 {
            continue; // undefined (imported) or absolute zero
        }
        let Some(rest) = strings.get(name_off..) else {
            continue;
        };
        let name = &rest[..memchr::memchr(0, rest).unwrap_or(rest.len())];
        if name.starts_with(b"BORINGSSL_") {
            *boring = true;
        }
        if !name.starts_with(b"SSL_") {
            continue;
        }
        let Some(wanted) = SSL_FUNCTIONS.iter().find(|f| f.as_bytes() == name) else {
            continue;
        };
        if !found.iter().any(|(f, _)| f == wanted)
            && let Some(offset) = file_offset(elf, value)
        {
            found.push((wanted, offset));
        }
    }
    true
}

/// Records `symbol` if it is one of [`SSL_FUNCTIONS`] (first definition
/// wins), and notes BoringSSL's marker symbols.
fn consider<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    symbol: &object::Symbol<'data, '_, R>,
    found: &mut Vec<(&'static str, u64)>,
    boring: &mut bool,
) {
    if !symbol.is_definition() || symbol.address() == 0 {
        return;
    }
    let Ok(name) = symbol.name_bytes() else {
        return;
    };
    if name.starts_with(b"BORINGSSL_") {
        *boring = true;
    }
    let Some(wanted) = SSL_FUNCTIONS.iter().find(|f| f.as_bytes() == name) else {
        return;
    };
    if found.iter().any(|(f, _)| f == wanted) {
        return;
    }
    if let Some(offset) = file_offset(elf, symbol.address()) {
        found.push((wanted, offset));
    }
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
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            let (mut b1, mut b2) = (false, false);
            assert!(scan_dynsym_fast(&elf, &mut fast, &mut b1), "{path}");
            for symbol in elf.dynamic_symbols() {
                consider(&elf, &symbol, &mut slow, &mut b2);
            }
            fast.sort();
            slow.sort();
            assert_eq!(fast, slow, "{path}");
            assert_eq!(b1, b2);
            assert!(!fast.is_empty(), "{path}");
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
