//! Go programs' TLS: where to probe `crypto/tls.(*Conn).Write` and
//! `crypto/tls.(*Conn).Read` in a Go executable, without uretprobes.
//!
//! A uretprobe replaces the return address on the stack with a trampoline.
//! Go moves goroutine stacks when they grow, and its unwinder then meets a
//! return address it does not know and kills the program. So the sensor
//! probes the entry of Write (the plaintext is in its arguments) and, for
//! Read, the entry (to remember the buffer) and every RET instruction of the
//! function (the byte count is in the result register there).
//!
//! The functions are found through the ELF symbol table when the binary
//! keeps one, and otherwise through the Go runtime's own function table,
//! `.gopclntab`, which a stripped binary (`-ldflags="-s -w"`) still has: the
//! runtime needs it for stack traces and garbage collection.
//!
//! The file is read through [`object::read::ReadCache`], never mapped (a file
//! truncated under us would fault a mapping) and never read whole: only the
//! headers, the build info, the symbol or function table and the code of
//! the two functions are read, each with a size cap. Nothing in the file's
//! contents can make this module panic: every offset is checked.
//!
//! Layouts, from the Go sources (`runtime/symtab.go`, `runtime/runtime2.go`,
//! `cmd/link/internal/ld/pcln.go`, `debug/gosym`, `debug/buildinfo`):
//!
//! pclntab header (`pcHeader`): magic u32, two zero bytes, the pc quantum
//! (1 on x86-64), the pointer size; then pointer-sized words:
//! - 1.18+ (magic 0xfffffff0, 0xfffffff1 from 1.20): nfunc, nfiles,
//!   textStart, funcnameOffset, cuOffset, filetabOffset, pctabOffset,
//!   pclnOffset. Offsets are from the header. The function table at
//!   pclnOffset holds nfunc (entryoff u32, funcoff u32) pairs and a final
//!   entryoff (the end of the text); entryoff is relative to textStart
//!   (`runtime.text`), funcoff to pclnOffset. Each `_func` begins with
//!   entryoff u32 and nameoff i32, an offset into the name table. Newer
//!   linkers write 0 for textStart ("unused"): it is then taken from the
//!   symbol `runtime.text`, from the runtime's `moduledata`, or from `.text`.
//! - 1.16/1.17 (0xfffffffa): nfunc, nfiles, funcnameOffset, cuOffset,
//!   filetabOffset, pctabOffset, pclnOffset; the function table holds
//!   pointer-sized (entry pc, funcoff) pairs and `_func` begins with a
//!   pointer-sized entry pc.
//! - 1.2-1.15 (0xfffffffb): nfunc, then the pointer-sized function table
//!   right after it; funcoff and nameoff are relative to the header.
//!
//! A function ends where the next one in the table begins (the gap is
//! INT3 padding).
//!
//! Build info (`.go.buildinfo`, or the first 64 KiB of the writable data
//! when the section headers are gone): 16-byte aligned, "\xff Go buildinf:"
//! (14 bytes), pointer size, flags. With flags & 2 (Go 1.18+) the version
//! follows the 32-byte header as a uvarint-length-prefixed string; before,
//! the header holds the address of a Go string header (pointer, length).

use std::{borrow::Cow, fs::File, os::unix::fs::FileExt, path::Path};

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use object::{
    Architecture, BinaryFormat, Object, ObjectSection, ObjectSegment, ReadRef, SegmentFlags,
    elf::{PF_W, PF_X},
};

/// The function whose entry receives the plaintext written.
pub const WRITE_FUNCTION: &str = "crypto/tls.(*Conn).Write";
/// The function whose return sites see the plaintext read.
pub const READ_FUNCTION: &str = "crypto/tls.(*Conn).Read";

/// Cap on a table read whole: pclntab, `.symtab`, `.strtab` (a large Go
/// program's pclntab is a few MB).
const MAX_TABLE_BYTES: u64 = 64 << 20;
/// Cap on the code of one function (Read is about 1 KB).
const MAX_FUNCTION_BYTES: u64 = 1 << 20;
/// How much of the data segment is searched for the build info when there
/// is no `.go.buildinfo` section (what `debug/buildinfo` does).
const BUILDINFO_WINDOW: u64 = 64 << 10;
/// Cap on the bytes searched for a table's signature in one inspection.
const MAX_SCAN_BYTES: u64 = 512 << 20;
const SCAN_CHUNK: usize = 1 << 20;
/// Candidates for a signature checked before giving up.
const MAX_CANDIDATES: usize = 32;
/// More functions than this is not a real table.
const MAX_FUNCTIONS: u64 = 16 << 20;

const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";
/// Section names a Go ELF executable has (internal or external linking).
const GO_SECTIONS: [&str; 4] = [
    ".go.buildinfo",
    ".gopclntab",
    ".data.rel.ro.gopclntab",
    ".note.go.buildid",
];
/// Where the function table is, as a section: PIE builds put it in relro.
const PCLNTAB_SECTIONS: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];

/// What the sensor needs to probe a Go program's TLS plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoTls {
    /// From the build info, e.g. "go1.19.8"; empty when the binary has none.
    pub go_version: String,
    /// File offset of the entry of `crypto/tls.(*Conn).Write`.
    pub write_entry: u64,
    /// File offset of the first instruction of `Write` after its stack
    /// check: when the stack must grow (or the goroutine is asked to
    /// yield), Go runs `morestack` and jumps back to the entry, so a probe
    /// at the entry can fire twice for one call; here it fires once, with
    /// the arguments still in their registers.
    pub write_body: u64,
    /// File offset of the entry of `crypto/tls.(*Conn).Read`.
    pub read_entry: u64,
    /// File offsets of every RET in `crypto/tls.(*Conn).Read`, ascending;
    /// never empty.
    pub read_returns: Vec<u64>,
    /// "symtab" or "pclntab": which table located the functions.
    pub found_by: &'static str,
    /// The register-based calling convention (ABIInternal, Go >= 1.17 on
    /// x86-64): arguments in RAX, RBX, RCX, RDI, RSI, R8..R11, results in
    /// RAX, RBX.., the goroutine in R14. False: everything on the stack.
    /// Taken from the code itself: the stack check at the entries reads the
    /// goroutine from R14, or loads it from thread-local storage.
    pub register_abi: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoProbe {
    /// Not a Go program (or not ELF at all).
    NotGo,
    /// A Go program that does not link crypto/tls.
    NoTls,
    /// A Go program this module cannot (or will not) probe.
    Unsupported {
        go_version: String,
        reason: String,
    },
    Found(GoTls),
}

#[derive(Debug, thiserror::Error)]
pub enum GoError {
    #[error("parsing {path}: {source}")]
    Parse { path: String, source: object::Error },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The file ends before something its headers point at.
    #[error("{path}: truncated: {what}")]
    Truncated { path: String, what: String },
    /// Tables or code that contradict themselves.
    #[error("{path}: malformed: {what}")]
    Malformed { path: String, what: String },
}

/// Inspects an open file (`path` only names it in errors).
pub fn inspect_go(file: &File, path: &Path) -> Result<GoProbe, GoError> {
    inspect_with(file, path, Lookup::Auto)
}

/// The cheap check: an ELF file with one of the sections a Go linker
/// writes (or, without section headers, with Go build info in its data).
/// Reads the ELF and section headers only (and 64 KiB in the second case).
pub fn looks_like_go(file: &File, path: &Path) -> Result<bool, GoError> {
    let cache = object::read::ReadCache::new(file);
    let Some(elf) = parse_elf(&cache, path)? else {
        return Ok(false);
    };
    if has_go_sections(&elf) {
        return Ok(true);
    }
    if elf.sections().next().is_some() {
        return Ok(false);
    }
    let loads = load_segments(&elf);
    Ok(read_go_version(&cache, &elf, &loads).is_some())
}

/// Which table to use: tests force each to compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    Auto,
    #[cfg_attr(not(test), allow(dead_code))]
    SymtabOnly,
    #[cfg_attr(not(test), allow(dead_code))]
    PclntabOnly,
}

/// A function's extent, as virtual addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    start: u64,
    end: u64,
}

fn inspect_with(file: &File, path: &Path, lookup: Lookup) -> Result<GoProbe, GoError> {
    let cache = object::read::ReadCache::new(file);
    let Some(elf) = parse_elf(&cache, path)? else {
        return Ok(GoProbe::NotGo);
    };
    let ctx = Ctx {
        file,
        path,
        data: &cache,
        loads: load_segments(&elf),
        elf,
    };
    let version = read_go_version(ctx.data, &ctx.elf, &ctx.loads);
    if version.is_none() && !has_go_sections(&ctx.elf) {
        return Ok(GoProbe::NotGo);
    }
    let go_version = version.unwrap_or_default();
    let unsupported = |reason: String| {
        Ok(GoProbe::Unsupported {
            go_version: go_version.clone(),
            reason,
        })
    };
    if ctx.elf.architecture() != Architecture::X86_64
        || !ctx.elf.is_64()
        || !ctx.elf.is_little_endian()
    {
        return unsupported(format!(
            "architecture {:?} is not supported (x86-64 only)",
            ctx.elf.architecture()
        ));
    }

    let symbols = if lookup == Lookup::PclntabOnly {
        None
    } else {
        scan_symtab(&ctx)?
    };
    let mut located = None;
    if let Some(symbols) = &symbols
        && let (Some(write), Some(read)) = (symbols.write, symbols.read)
        && read.end > read.start
    {
        located = Some((write, read, "symtab"));
    }
    if located.is_none() && lookup != Lookup::SymtabOnly {
        let runtime_text = symbols.as_ref().and_then(|s| s.runtime_text);
        match find_in_pclntab(&ctx, runtime_text)? {
            Functions::Found { write, read } => located = Some((write, read, "pclntab")),
            Functions::NoTls => return Ok(GoProbe::NoTls),
            Functions::Unsupported(reason) => return unsupported(reason),
        }
    }
    let Some((write, read, found_by)) = located else {
        return Ok(GoProbe::NoTls);
    };

    // The code: both entries must begin with Go's stack-bound check, which
    // also tells the calling convention; then Read's return sites.
    let (write_entry, write_code) = ctx.code(write.start, 64)?;
    let read_len = read.end.saturating_sub(read.start);
    if read_len == 0 || read_len > MAX_FUNCTION_BYTES {
        return unsupported(format!(
            "{READ_FUNCTION} spans {read_len} bytes, not a plausible size"
        ));
    }
    let (read_entry, read_code) = ctx.code(read.start, read_len)?;
    let (Some(write_code), Some(read_code)) = (write_code, read_code) else {
        return unsupported(format!(
            "{WRITE_FUNCTION} or {READ_FUNCTION} lies outside the executable segment"
        ));
    };
    let abi = match (
        stack_check(write_code, write.start),
        stack_check(read_code, read.start),
    ) {
        (Some(w), Some(r)) if w == r => w,
        _ => {
            return unsupported(format!(
                "{WRITE_FUNCTION} or {READ_FUNCTION} does not begin with Go's stack check \
                 (found by {found_by}); not probing code we do not recognise"
            ));
        }
    };
    let register_abi = abi == Abi::Register;
    // The code is the authority (1.17 and 1.18 could be built without the
    // register ABI); code reading the goroutine from R14 in a release
    // before 1.17 means we misread something.
    if register_abi
        && let Some((1, minor)) = go_release(&go_version)
        && minor < 17
    {
        return unsupported(format!(
            "the code looks like the register calling convention, which {go_version} does not have"
        ));
    }
    let Some(write_body) = after_stack_check(write_code, write.start) else {
        return unsupported(format!(
            "no conditional jump after the stack check of {WRITE_FUNCTION}"
        ));
    };
    let returns = return_sites(read_code, read.start).map_err(|what| GoError::Malformed {
        path: ctx.shown(),
        what: format!("{READ_FUNCTION}: {what}"),
    })?;
    if returns.is_empty() {
        return unsupported(format!("no RET instruction in {READ_FUNCTION}"));
    }
    let read_returns = returns
        .iter()
        .map(|ret| ret - read.start + read_entry)
        .collect();
    Ok(GoProbe::Found(GoTls {
        go_version,
        write_entry,
        write_body: write_body - write.start + write_entry,
        read_entry,
        read_returns,
        found_by,
        register_abi,
    }))
}

/// The pieces every step needs.
struct Ctx<'d, 'f, R: ReadRef<'d>> {
    file: &'f File,
    path: &'f Path,
    data: R,
    elf: object::File<'d, R>,
    loads: Vec<Load>,
}

impl<'d, R: ReadRef<'d>> Ctx<'d, '_, R> {
    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    fn truncated(&self, what: impl Into<String>) -> GoError {
        GoError::Truncated {
            path: self.shown(),
            what: what.into(),
        }
    }

    fn malformed(&self, what: impl Into<String>) -> GoError {
        GoError::Malformed {
            path: self.shown(),
            what: what.into(),
        }
    }

    /// File offset of the code at `vaddr`, and up to `len` bytes of it
    /// (fewer when the executable segment ends first; `None` when `vaddr`
    /// is not in an executable segment). The full `len` is required when
    /// it is more than 64 (a whole function).
    fn code(&self, vaddr: u64, len: u64) -> Result<(u64, Option<&'d [u8]>), GoError> {
        let Some(load) = self
            .loads
            .iter()
            .find(|l| l.executable() && l.contains(vaddr, 1))
        else {
            return Ok((0, None));
        };
        let offset = load.file_offset(vaddr);
        let available = load.end().saturating_sub(vaddr);
        if len > 64 && available < len {
            return Ok((offset, None));
        }
        let bytes = self
            .data
            .read_bytes_at(offset, len.min(available))
            .map_err(|()| self.truncated(format!("code at file offset {offset:#x}")))?;
        Ok((offset, Some(bytes)))
    }
}

fn parse_elf<'d, R: ReadRef<'d>>(
    data: R,
    path: &Path,
) -> Result<Option<object::File<'d, R>>, GoError> {
    match data.read_bytes_at(0, 4) {
        Ok(magic) if magic == b"\x7fELF" => {}
        _ => return Ok(None),
    }
    let elf = object::File::parse(data).map_err(|source| GoError::Parse {
        path: path.display().to_string(),
        source,
    })?;
    Ok((elf.format() == BinaryFormat::Elf).then_some(elf))
}

fn has_go_sections<'d, R: ReadRef<'d>>(elf: &object::File<'d, R>) -> bool {
    GO_SECTIONS
        .iter()
        .any(|name| elf.section_by_name(name).is_some())
}

/// A PT_LOAD program header: the part of the file mapped at `vaddr`.
#[derive(Debug, Clone, Copy)]
struct Load {
    vaddr: u64,
    offset: u64,
    filesz: u64,
    flags: u32,
}

impl Load {
    fn executable(&self) -> bool {
        self.flags & PF_X != 0
    }

    fn end(&self) -> u64 {
        self.vaddr.saturating_add(self.filesz)
    }

    /// Whether `[vaddr, vaddr + len)` is backed by the file in this segment.
    fn contains(&self, vaddr: u64, len: u64) -> bool {
        vaddr >= self.vaddr && vaddr.checked_add(len).is_some_and(|end| end <= self.end())
    }

    /// Only for an address [`Load::contains`] accepted.
    fn file_offset(&self, vaddr: u64) -> u64 {
        vaddr - self.vaddr + self.offset
    }
}

/// The PT_LOAD headers; ones whose ranges overflow (nonsense) are left out,
/// so that offset arithmetic inside a kept one cannot overflow.
fn load_segments<'d, R: ReadRef<'d>>(elf: &object::File<'d, R>) -> Vec<Load> {
    elf.segments()
        .filter_map(|segment| {
            let (offset, filesz) = segment.file_range();
            let vaddr = segment.address();
            offset.checked_add(filesz)?;
            vaddr.checked_add(filesz)?;
            let flags = match segment.flags() {
                SegmentFlags::Elf { p_flags } => p_flags,
                _ => 0,
            };
            Some(Load {
                vaddr,
                offset,
                filesz,
                flags,
            })
        })
        .collect()
}

fn read_vaddr<'d, R: ReadRef<'d>>(
    data: R,
    loads: &[Load],
    vaddr: u64,
    len: u64,
) -> Option<&'d [u8]> {
    let load = loads.iter().find(|l| l.contains(vaddr, len))?;
    data.read_bytes_at(load.file_offset(vaddr), len).ok()
}

// ---------------------------------------------------------------------------
// Build info

fn read_go_version<'d, R: ReadRef<'d>>(
    data: R,
    elf: &object::File<'d, R>,
    loads: &[Load],
) -> Option<String> {
    let (offset, size) = match elf.section_by_name(".go.buildinfo") {
        Some(section) => section.file_range()?,
        None => loads
            .iter()
            .find(|l| l.flags & (PF_W | PF_X) == PF_W)
            .map(|l| (l.offset, l.filesz))?,
    };
    let window = data
        .read_bytes_at(offset, size.min(BUILDINFO_WINDOW))
        .ok()?;
    parse_buildinfo(window, &|vaddr, len| {
        read_vaddr(data, loads, vaddr, len).map(<[u8]>::to_vec)
    })
}

/// The Go version from a window holding the build info blob; `read`
/// fetches `len` bytes at a virtual address (older layouts point at the
/// version).
fn parse_buildinfo(window: &[u8], read: &dyn Fn(u64, u64) -> Option<Vec<u8>>) -> Option<String> {
    let start = memchr::memmem::find_iter(window, BUILDINFO_MAGIC)
        .find(|&at| at % 16 == 0 && window.len().saturating_sub(at) >= 32)?;
    let blob = window.get(start..)?;
    let ptr_size = usize::from(*blob.get(14)?);
    let flags = *blob.get(15)?;
    let version = if flags & 2 != 0 {
        let rest = blob.get(32..)?;
        let (len, used) = uvarint(rest)?;
        let end = used.checked_add(usize::try_from(len).ok()?)?;
        rest.get(used..end)?.to_vec()
    } else {
        if flags & 1 != 0 || (ptr_size != 4 && ptr_size != 8) {
            return None; // big-endian, or nonsense
        }
        let word = |bytes: &[u8], at: usize| le_uint(bytes, at, ptr_size);
        let header_addr = word(blob, 16)?;
        let header = read(header_addr, u64::try_from(2 * ptr_size).ok()?)?;
        let (text, len) = (word(&header, 0)?, word(&header, ptr_size)?);
        if len > 256 {
            return None;
        }
        read(text, len)?
    };
    let version = String::from_utf8(version).ok()?;
    let plausible = !version.is_empty()
        && version.len() <= 256
        && version.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    plausible.then_some(version)
}

fn uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// (major, minor) of "go1.19.8", "go1.21rc2", "devel go1.22-abcdef ...".
fn go_release(version: &str) -> Option<(u32, u32)> {
    let at = version.find("go1.")?;
    let mut numbers = version.get(at + 2..)?.split(|c: char| !c.is_ascii_digit());
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    Some((major, minor))
}

// ---------------------------------------------------------------------------
// ELF symbol table

/// What `.symtab` says (entries and ends are virtual addresses).
#[derive(Debug, Default)]
struct SymtabHits {
    write: Option<Extent>,
    read: Option<Extent>,
    runtime_text: Option<u64>,
}

/// Scans `.symtab` as raw `Elf64_Sym` records against one read of
/// `.strtab` (a large Go program has 100,000 symbols; reading each name
/// through the generic API would cost a read each). `None` when there is
/// no symbol table (stripped) or it is too large to read.
fn scan_symtab<'d, R: ReadRef<'d>>(ctx: &Ctx<'d, '_, R>) -> Result<Option<SymtabHits>, GoError> {
    const SYM_SIZE: usize = 24;
    let (Some(symtab), Some(strtab)) = (
        ctx.elf.section_by_name(".symtab"),
        ctx.elf.section_by_name(".strtab"),
    ) else {
        return Ok(None);
    };
    if symtab.size() > MAX_TABLE_BYTES || strtab.size() > MAX_TABLE_BYTES {
        return Ok(None);
    }
    let symbols = symtab
        .data()
        .map_err(|_| ctx.truncated(".symtab extends past the end of the file"))?;
    let strings = strtab
        .data()
        .map_err(|_| ctx.truncated(".strtab extends past the end of the file"))?;
    let mut hits = SymtabHits::default();
    for sym in symbols.chunks_exact(SYM_SIZE) {
        let (Some(name_off), Some(shndx), Some(value), Some(size)) = (
            le_uint(sym, 0, 4),
            le_uint(sym, 6, 2),
            le_uint(sym, 8, 8),
            le_uint(sym, 16, 8),
        ) else {
            continue;
        };
        if shndx == 0 || value == 0 {
            continue; // undefined, or an absolute zero
        }
        let Some(name) = usize::try_from(name_off)
            .ok()
            .and_then(|at| strings.get(at..))
            .map(|rest| rest.split(|&b| b == 0).next().unwrap_or_default())
        else {
            continue;
        };
        let extent = Extent {
            start: value,
            end: value.saturating_add(size),
        };
        match name {
            b"crypto/tls.(*Conn).Write" if hits.write.is_none() => hits.write = Some(extent),
            b"crypto/tls.(*Conn).Read" if hits.read.is_none() => hits.read = Some(extent),
            b"runtime.text" if hits.runtime_text.is_none() => hits.runtime_text = Some(value),
            _ => {}
        }
    }
    Ok(Some(hits))
}

// ---------------------------------------------------------------------------
// pclntab

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layout {
    Go12,
    Go116,
    Go118,
    Go120,
}

impl Layout {
    fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            0xffff_fffb => Some(Layout::Go12),
            0xffff_fffa => Some(Layout::Go116),
            0xffff_fff0 => Some(Layout::Go118),
            0xffff_fff1 => Some(Layout::Go120),
            _ => None,
        }
    }

    /// Function entries are offsets from textStart (else addresses).
    fn relative_entries(self) -> bool {
        self >= Layout::Go118
    }
}

#[derive(Debug, PartialEq, Eq)]
enum TableError {
    UnknownMagic(u32),
    Malformed(&'static str),
}

/// A parsed pclntab header over the table's bytes.
#[derive(Debug)]
struct Pclntab<'b> {
    bytes: &'b [u8],
    layout: Layout,
    ptr_size: usize,
    nfunc: usize,
    /// The header's textStart (1.18+); 0 when the linker left it out.
    text_start: u64,
    /// Offsets into `bytes`.
    funcnametab: usize,
    functab: usize,
    funcdata: usize,
}

impl<'b> Pclntab<'b> {
    fn parse(bytes: &'b [u8]) -> Result<Self, TableError> {
        use TableError::Malformed;
        let magic = le_uint(bytes, 0, 4).ok_or(Malformed("shorter than its header"))?;
        let layout =
            Layout::from_magic(magic as u32).ok_or(TableError::UnknownMagic(magic as u32))?;
        let (pad, quantum, ptr_size) = match bytes.get(4..8) {
            Some(&[a, b, q, p]) => (a | b, q, usize::from(p)),
            _ => return Err(Malformed("shorter than its header")),
        };
        if pad != 0 || !matches!(quantum, 1 | 2 | 4) || !matches!(ptr_size, 4 | 8) {
            return Err(Malformed("bad header"));
        }
        let word = |index: usize| -> Result<u64, TableError> {
            let at = index
                .checked_mul(ptr_size)
                .and_then(|o| o.checked_add(8))
                .ok_or(Malformed("bad header"))?;
            le_uint(bytes, at, ptr_size).ok_or(Malformed("shorter than its header"))
        };
        let offset = |index: usize| -> Result<usize, TableError> {
            let value =
                usize::try_from(word(index)?).map_err(|_| Malformed("offset out of range"))?;
            if value >= bytes.len() {
                return Err(Malformed("offset past the end of the table"));
            }
            Ok(value)
        };
        let nfunc = word(0)?;
        if nfunc == 0 || nfunc > MAX_FUNCTIONS {
            return Err(Malformed("implausible function count"));
        }
        let nfunc = usize::try_from(nfunc).map_err(|_| Malformed("implausible function count"))?;
        let (text_start, funcnametab, functab, funcdata) = match layout {
            Layout::Go118 | Layout::Go120 => (word(2)?, offset(3)?, offset(7)?, offset(7)?),
            Layout::Go116 => (0, offset(2)?, offset(6)?, offset(6)?),
            Layout::Go12 => (0, 0, 8 + ptr_size, 0),
        };
        let table = Pclntab {
            bytes,
            layout,
            ptr_size,
            nfunc,
            text_start,
            funcnametab,
            functab,
            funcdata,
        };
        // nfunc pairs and the end entry.
        let fields = nfunc
            .checked_mul(2)
            .and_then(|n| n.checked_add(1))
            .ok_or(Malformed("implausible function count"))?;
        let end = fields
            .checked_mul(table.field_size())
            .and_then(|n| n.checked_add(functab))
            .ok_or(Malformed("function table past the end"))?;
        if end > bytes.len() {
            return Err(Malformed("function table past the end"));
        }
        Ok(table)
    }

    fn field_size(&self) -> usize {
        if self.layout.relative_entries() {
            4
        } else {
            self.ptr_size
        }
    }

    fn field(&self, index: usize) -> Option<u64> {
        let at = index
            .checked_mul(self.field_size())?
            .checked_add(self.functab)?;
        le_uint(self.bytes, at, self.field_size())
    }

    /// The i-th entry (i == nfunc: the end of the text), raw: an offset
    /// from textStart for 1.18+, else an address.
    fn entry(&self, i: usize) -> Option<u64> {
        self.field(i.checked_mul(2)?)
    }

    /// Offset in `bytes` of the i-th `_func`.
    fn record(&self, i: usize) -> Option<usize> {
        let funcoff = usize::try_from(self.field(i.checked_mul(2)?.checked_add(1)?)?).ok()?;
        self.funcdata.checked_add(funcoff)
    }

    /// The i-th function's name and the entry its `_func` records.
    fn function(&self, i: usize) -> Option<(&'b [u8], u64)> {
        let record = self.record(i)?;
        let entry_size = self.field_size();
        let entry = le_uint(self.bytes, record, entry_size)?;
        let name_off = le_uint(self.bytes, record.checked_add(entry_size)?, 4)? as u32 as i32;
        let start = self
            .funcnametab
            .checked_add(usize::try_from(name_off).ok()?)?;
        let rest = self.bytes.get(start..)?;
        let len = memchr::memchr(0, rest)?;
        Some((rest.get(..len)?, entry))
    }

    /// The raw extents of the functions named `names` (in that order).
    fn find<const N: usize>(
        &self,
        names: [&str; N],
    ) -> Result<[Option<(u64, u64)>; N], &'static str> {
        let mut found = [None; N];
        let mut next = self.entry(0).ok_or("function table past the end")?;
        for i in 0..self.nfunc {
            let entry = next;
            next = self.entry(i + 1).ok_or("function table past the end")?;
            if next < entry {
                return Err("function table out of order");
            }
            let (name, recorded) = self.function(i).ok_or("function record out of range")?;
            if let Some(slot) = names.iter().position(|n| n.as_bytes() == name)
                && let Some(place) = found.get_mut(slot)
                && place.is_none()
            {
                if recorded != entry {
                    return Err("function record disagrees with the function table");
                }
                *place = Some((entry, next));
            }
        }
        Ok(found)
    }
}

enum Functions {
    Found { write: Extent, read: Extent },
    NoTls,
    Unsupported(String),
}

fn find_in_pclntab<'d, R: ReadRef<'d>>(
    ctx: &Ctx<'d, '_, R>,
    runtime_text: Option<u64>,
) -> Result<Functions, GoError> {
    let Some(FoundTable { bytes, vaddr }) = locate_pclntab(ctx)? else {
        return Ok(Functions::Unsupported(
            "no Go function table (.gopclntab) found".into(),
        ));
    };
    let table = match Pclntab::parse(&bytes) {
        Ok(table) => table,
        Err(TableError::UnknownMagic(magic)) => {
            return Ok(Functions::Unsupported(format!(
                "unknown Go function table version {magic:#x}"
            )));
        }
        Err(TableError::Malformed(what)) => return Err(ctx.malformed(format!("pclntab: {what}"))),
    };
    let [write, read] = table
        .find([WRITE_FUNCTION, READ_FUNCTION])
        .map_err(|what| ctx.malformed(format!("pclntab: {what}")))?;
    let (write, read) = match (write, read) {
        (Some(write), Some(read)) => (write, read),
        (None, None) => return Ok(Functions::NoTls),
        (write, _) => {
            let missing = if write.is_none() {
                WRITE_FUNCTION
            } else {
                READ_FUNCTION
            };
            return Ok(Functions::Unsupported(format!(
                "{missing} is not in the program (the other one is)"
            )));
        }
    };
    let base = if table.layout.relative_entries() {
        match text_start(ctx, &table, vaddr, runtime_text) {
            Some(base) => base,
            None => {
                return Ok(Functions::Unsupported(
                    "cannot tell where the Go text starts".into(),
                ));
            }
        }
    } else {
        0
    };
    let extent = |(start, end): (u64, u64)| -> Result<Extent, GoError> {
        match (base.checked_add(start), base.checked_add(end)) {
            (Some(start), Some(end)) => Ok(Extent { start, end }),
            _ => Err(ctx.malformed("pclntab: function address overflows")),
        }
    };
    Ok(Functions::Found {
        write: extent(write)?,
        read: extent(read)?,
    })
}

/// `runtime.text`, the base of 1.18+ function entries: the header's
/// textStart when the linker wrote it, else the symbol, else the
/// runtime's module data, else the start of `.text` (right for Go's own
/// linker; with an external linker C start-up code comes first, which the
/// stack-check test on the entries would catch).
fn text_start<'d, R: ReadRef<'d>>(
    ctx: &Ctx<'d, '_, R>,
    table: &Pclntab<'_>,
    table_vaddr: u64,
    runtime_text: Option<u64>,
) -> Option<u64> {
    if table.text_start != 0 {
        return Some(table.text_start);
    }
    runtime_text
        .or_else(|| moduledata_text(ctx, table, table_vaddr))
        .or_else(|| ctx.elf.section_by_name(".text").map(|s| s.address()))
}

/// `runtime.firstmoduledata.text`, found by its first two words: the
/// address of the pclntab header and of its name table. Checked against
/// its function table slice and `minpc` (= text + the first entry).
/// Word layout (Go 1.16+, `cmd/link/internal/ld/symtab.go`): pcHeader;
/// funcnametab, cutab, filetab, pctab, pclntable, ftab (3 words each);
/// findfunctab; minpc; maxpc; text.
fn moduledata_text<'d, R: ReadRef<'d>>(
    ctx: &Ctx<'d, '_, R>,
    table: &Pclntab<'_>,
    table_vaddr: u64,
) -> Option<u64> {
    const WORDS: usize = 23;
    if table.ptr_size != 8 {
        return None;
    }
    let names = table_vaddr.checked_add(u64::try_from(table.funcnametab).ok()?)?;
    let functab = table_vaddr.checked_add(u64::try_from(table.functab).ok()?)?;
    let first = table.entry(0)?;
    let mut pattern = Vec::with_capacity(16);
    pattern.extend_from_slice(&table_vaddr.to_le_bytes());
    pattern.extend_from_slice(&names.to_le_bytes());
    let ranges: Vec<(u64, u64)> = match ctx.elf.section_by_name(".noptrdata") {
        Some(section) => section.file_range().into_iter().collect(),
        None => ctx
            .loads
            .iter()
            .filter(|l| l.flags & (PF_W | PF_X) == PF_W)
            .map(|l| (l.offset, l.filesz))
            .collect(),
    };
    let mut budget = MAX_SCAN_BYTES;
    let mut candidates = 0;
    for (offset, len) in ranges {
        let found = scan_file(ctx.file, offset, len, &pattern, &mut budget, |at| {
            if at % 8 != 0 {
                return None;
            }
            candidates += 1;
            if candidates > MAX_CANDIDATES {
                return Some(None);
            }
            let mut words = [0u8; WORDS * 8];
            ctx.file.read_exact_at(&mut words, at).ok()?;
            let word = |i: usize| le_uint(&words, i * 8, 8);
            let text = word(22)?;
            let consistent = word(13)? == functab
                && word(16)? == functab
                && word(17)? == u64::try_from(table.nfunc).ok()?.checked_add(1)?
                && word(20)? == text.checked_add(first)?;
            consistent.then_some(Some(text))
        });
        if let Some(found) = found {
            return found;
        }
    }
    None
}

/// A function table's bytes and the virtual address of its header.
struct FoundTable<'d> {
    bytes: Cow<'d, [u8]>,
    vaddr: u64,
}

/// The function table's bytes and virtual address: its section, or, when
/// the section headers do not name it (an external linker merges it into
/// `.data.rel.ro` for PIE; packers drop section headers), a search of the
/// non-executable segments for a header that parses.
fn locate_pclntab<'d, R: ReadRef<'d>>(
    ctx: &Ctx<'d, '_, R>,
) -> Result<Option<FoundTable<'d>>, GoError> {
    for name in PCLNTAB_SECTIONS {
        let Some(section) = ctx.elf.section_by_name(name) else {
            continue;
        };
        if section.size() > MAX_TABLE_BYTES {
            return Err(ctx.malformed(format!("{name} is {} bytes", section.size())));
        }
        let bytes = section
            .data()
            .map_err(|_| ctx.truncated(format!("{name} extends past the end of the file")))?;
        return Ok(Some(FoundTable {
            bytes: Cow::Borrowed(bytes),
            vaddr: section.address(),
        }));
    }
    // "\xff\xff\xff" ending the magic, then pad, pad, quantum 1, pointer 8.
    const SIGNATURE: &[u8] = b"\xff\xff\xff\x00\x00\x01\x08";
    let mut budget = MAX_SCAN_BYTES;
    let mut candidates = 0;
    for load in ctx.loads.iter().filter(|l| !l.executable()) {
        let mut failure = None;
        let found = scan_file(
            ctx.file,
            load.offset,
            load.filesz,
            SIGNATURE,
            &mut budget,
            |at| {
                let start = at.checked_sub(1)?;
                if start < load.offset || start % 8 != 0 {
                    return None;
                }
                candidates += 1;
                if candidates > MAX_CANDIDATES {
                    return Some(None);
                }
                let first = read_vec_at(ctx.file, start, 1).ok()?;
                Layout::from_magic(u32::from_le_bytes([*first.first()?, 0xff, 0xff, 0xff]))?;
                let len = (load.offset.saturating_add(load.filesz))
                    .saturating_sub(start)
                    .min(MAX_TABLE_BYTES);
                let bytes = match read_vec_at(ctx.file, start, len) {
                    Ok(bytes) => bytes,
                    Err(error) => {
                        failure = Some(error);
                        return Some(None);
                    }
                };
                let table = Pclntab::parse(&bytes).ok()?;
                plausible_table(&table).then_some(())?;
                let vaddr = load.vaddr.checked_add(start - load.offset)?;
                Some(Some((bytes, vaddr)))
            },
        );
        if let Some(error) = failure {
            return Err(GoError::Io {
                path: ctx.shown(),
                source: error,
            });
        }
        match found {
            Some(Some((bytes, vaddr))) => {
                return Ok(Some(FoundTable {
                    bytes: Cow::Owned(bytes),
                    vaddr,
                }));
            }
            Some(None) => return Ok(None),
            None => {}
        }
    }
    Ok(None)
}

/// For a table found by searching: entries ascending and the first
/// function's name readable.
fn plausible_table(table: &Pclntab<'_>) -> bool {
    let mut previous = 0;
    for i in 0..=table.nfunc {
        match table.entry(i) {
            Some(entry) if entry >= previous => previous = entry,
            _ => return false,
        }
    }
    table
        .function(0)
        .is_some_and(|(name, _)| !name.is_empty() && name.iter().all(u8::is_ascii_graphic))
}

// ---------------------------------------------------------------------------
// Code

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abi {
    /// The goroutine in R14: `CMPQ SP, 16(R14)` (or via R12 for a larger
    /// frame, or a load of 16(R14) for a huge one).
    Register,
    /// The goroutine loaded from thread-local storage into RCX first.
    Stack,
}

/// Recognises Go's stack-bound check among the first instructions of a
/// function: an access to `stackguard0`, 16 bytes into the goroutine,
/// through R14 (register ABI) or through RCX after a load from FS.
fn stack_check(code: &[u8], vaddr: u64) -> Option<Abi> {
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut from_tls = false;
    for _ in 0..4 {
        if !decoder.can_decode() {
            break;
        }
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            return None;
        }
        let memory = (0..instruction.op_count()).any(|i| instruction.op_kind(i) == OpKind::Memory);
        if !memory {
            continue;
        }
        if instruction.segment_prefix() == Register::FS
            || instruction.memory_segment() == Register::FS
        {
            from_tls = true;
            continue;
        }
        if instruction.memory_displacement64() == 0x10
            && instruction.memory_index() == Register::None
        {
            match instruction.memory_base() {
                Register::R14 => return Some(Abi::Register),
                Register::RCX if from_tls => return Some(Abi::Stack),
                _ => {}
            }
        }
    }
    None
}

/// Address of the instruction after the stack check's conditional jump
/// (the first instruction that runs once per call), within the first few
/// instructions of `code`, which starts at `vaddr`.
fn after_stack_check(code: &[u8], vaddr: u64) -> Option<u64> {
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    for _ in 0..6 {
        if !decoder.can_decode() {
            break;
        }
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            return None;
        }
        if matches!(
            instruction.mnemonic(),
            Mnemonic::Jbe
                | Mnemonic::Jb
                | Mnemonic::Ja
                | Mnemonic::Jae
                | Mnemonic::Jl
                | Mnemonic::Jle
                | Mnemonic::Jg
                | Mnemonic::Jge
                | Mnemonic::Je
                | Mnemonic::Jne
        ) {
            return Some(instruction.next_ip());
        }
    }
    None
}

/// Addresses of the RET instructions (`ret`, `ret imm16`) in `code`, which
/// starts at `vaddr`, decoding every instruction from the start.
fn return_sites(code: &[u8], vaddr: u64) -> Result<Vec<u64>, String> {
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut returns = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            return Err(format!(
                "undecodable instruction at {:#x} ({:?})",
                instruction.ip(),
                decoder.last_error()
            ));
        }
        if instruction.mnemonic() == Mnemonic::Ret {
            returns.push(instruction.ip());
        }
    }
    Ok(returns)
}

// ---------------------------------------------------------------------------
// Helpers

/// Little-endian unsigned integer of `size` (1..=8) bytes at `at`.
fn le_uint(bytes: &[u8], at: usize, size: usize) -> Option<u64> {
    let field = bytes.get(at..at.checked_add(size)?)?;
    if size > 8 {
        return None;
    }
    let mut buf = [0u8; 8];
    buf.get_mut(..size)?.copy_from_slice(field);
    Some(u64::from_le_bytes(buf))
}

/// Reads up to `len` bytes at `offset` (fewer at the end of the file).
fn read_vec_at(file: &File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        let position = offset.saturating_add(filled as u64);
        match file.read_at(rest, position) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Searches `[offset, offset + len)` of the file for `pattern`, a chunk at a
/// time (nothing is kept), calling `visit` with the file offset of each
/// match until it returns `Some`. Stops at the end of the file, on a read
/// error, or when `budget` bytes have been read.
fn scan_file<T>(
    file: &File,
    offset: u64,
    len: u64,
    pattern: &[u8],
    budget: &mut u64,
    mut visit: impl FnMut(u64) -> Option<T>,
) -> Option<T> {
    let overlap = pattern.len().checked_sub(1)?;
    let end = offset.saturating_add(len);
    let mut position = offset;
    while position < end && *budget > 0 {
        let want = (end - position)
            .min((SCAN_CHUNK + overlap) as u64)
            .min(*budget);
        let chunk = read_vec_at(file, position, want).ok()?;
        for hit in memchr::memmem::find_iter(&chunk, pattern) {
            if let Some(found) = visit(position + hit as u64) {
                return Some(found);
            }
        }
        if (chunk.len() as u64) < want || chunk.len() <= overlap {
            break;
        }
        let advance = (chunk.len() - overlap) as u64;
        position += advance;
        *budget = budget.saturating_sub(advance);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::BTreeSet, path::PathBuf, process::Command, sync::OnceLock};

    const TLS_PROGRAM: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	resp, err := http.Get("https://127.0.0.1:1/")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	resp.Body.Close()
}
"#;

    const PLAIN_PROGRAM: &str = r#"package main

import "fmt"

func main() {
	fmt.Println("no TLS here")
}
"#;

    /// Go programs built once per test run.
    struct Fixtures {
        /// `go env GOVERSION`.
        go_version: String,
        tls: PathBuf,
        tls_stripped: PathBuf,
        no_tls: PathBuf,
    }

    /// Where the builds go: a directory for this run, next to a build
    /// cache shared between runs (rebuilding the standard library each
    /// time would cost minutes on two cores).
    fn work_root() -> PathBuf {
        std::env::temp_dir().join("sensor-golang-tests")
    }

    fn run_dir() -> PathBuf {
        static DIR: OnceLock<PathBuf> = OnceLock::new();
        DIR.get_or_init(|| {
            let root = work_root();
            // Forget the builds of earlier runs whose process is gone.
            if let Ok(entries) = std::fs::read_dir(&root) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if let Some(pid) = name.strip_prefix("run-")
                        && !Path::new("/proc").join(pid).exists()
                    {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
            let dir = root.join(format!("run-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("creating the test build directory");
            dir
        })
        .clone()
    }

    fn go_command() -> Command {
        let root = work_root();
        let mut command = Command::new("go");
        command
            .env("GOCACHE", root.join("gocache"))
            .env("GOPATH", root.join("gopath"))
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOENV", "off")
            .env("GO111MODULE", "on");
        command
    }

    fn go_available() {
        let found = Command::new("go").arg("version").output();
        match found {
            Ok(output) if output.status.success() => {}
            _ => panic!(
                "these tests build Go programs: the Go toolchain (`go`) must be on PATH \
                 (Debian: apt-get install golang-go; the project's test setup installs it)"
            ),
        }
    }

    /// Writes `source` as a module in `name/` and builds it to `output`.
    fn go_build(
        name: &str,
        source: &str,
        output: &str,
        env: &[(&str, &str)],
        flags: &[&str],
    ) -> PathBuf {
        let module = run_dir().join("src").join(name);
        std::fs::create_dir_all(&module).expect("module dir");
        std::fs::write(module.join("main.go"), source).expect("main.go");
        std::fs::write(
            module.join("go.mod"),
            format!("module example.com/{name}\n\ngo 1.17\n"),
        )
        .expect("go.mod");
        let binary = run_dir().join("bin").join(output);
        let mut command = go_command();
        command
            .current_dir(&module)
            .args(["build", "-o"])
            .arg(&binary)
            .args(flags)
            .arg(".");
        for (key, value) in env {
            command.env(key, value);
        }
        let result = command.output().expect("running go build");
        assert!(
            result.status.success(),
            "go build {output} failed:\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
        binary
    }

    fn fixtures() -> &'static Fixtures {
        static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
        FIXTURES.get_or_init(|| {
            go_available();
            let version = go_command()
                .args(["env", "GOVERSION"])
                .output()
                .expect("go env");
            let static_build = [("CGO_ENABLED", "0")];
            Fixtures {
                go_version: String::from_utf8_lossy(&version.stdout).trim().to_owned(),
                tls: go_build("tls", TLS_PROGRAM, "tls", &static_build, &[]),
                tls_stripped: go_build(
                    "tls",
                    TLS_PROGRAM,
                    "tls-stripped",
                    &static_build,
                    &["-ldflags=-s -w"],
                ),
                no_tls: go_build("plain", PLAIN_PROGRAM, "no-tls", &static_build, &[]),
            }
        })
    }

    /// The TLS program as a position-independent executable linked by the
    /// system's C linker (what cgo programs and distribution packages
    /// look like), unstripped and stripped; `None` without a C compiler.
    /// Stripped, such a binary has no `.gopclntab` section: the linker
    /// merged it into `.data.rel.ro`.
    fn external_pie() -> Option<&'static (PathBuf, PathBuf)> {
        static FIXTURES: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
        FIXTURES
            .get_or_init(|| {
                go_available();
                let cc = Command::new("cc").arg("--version").output();
                if !cc.is_ok_and(|o| o.status.success()) {
                    eprintln!("no C compiler: skipping the externally linked fixtures");
                    return None;
                }
                let env = [("CGO_ENABLED", "1")];
                let pie = ["-buildmode=pie", "-ldflags=-linkmode=external"];
                let pie_stripped = ["-buildmode=pie", "-ldflags=-linkmode=external -s -w"];
                Some((
                    go_build("tls", TLS_PROGRAM, "tls-extpie", &env, &pie),
                    go_build(
                        "tls",
                        TLS_PROGRAM,
                        "tls-extpie-stripped",
                        &env,
                        &pie_stripped,
                    ),
                ))
            })
            .as_ref()
    }

    fn inspect_path(path: &Path, lookup: Lookup) -> Result<GoProbe, GoError> {
        let file = File::open(path).expect("open");
        inspect_with(&file, path, lookup)
    }

    fn found(path: &Path, lookup: Lookup) -> GoTls {
        match inspect_path(path, lookup) {
            Ok(GoProbe::Found(tls)) => tls,
            other => panic!("{}: expected Found, got {other:?}", path.display()),
        }
    }

    /// Virtual address to file offset, through the object crate's view of
    /// the program headers (independent of the module's own helper).
    fn vaddr_to_offset(path: &Path, vaddr: u64) -> u64 {
        let data = std::fs::read(path).expect("read");
        let elf = object::File::parse(&*data).expect("parse");
        elf.segments()
            .find_map(|segment| {
                let (offset, size) = segment.file_range();
                (vaddr >= segment.address() && vaddr < segment.address() + size)
                    .then(|| vaddr - segment.address() + offset)
            })
            .expect("address in a segment")
    }

    /// `go tool objdump` of Read: (entry, RET addresses), as file offsets.
    fn objdump_read(path: &Path) -> (u64, BTreeSet<u64>) {
        let output = go_command()
            .args(["tool", "objdump", "-s", r"crypto/tls.\(\*Conn\).Read$"])
            .arg(path)
            .output()
            .expect("go tool objdump");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            text.lines().filter(|l| l.starts_with("TEXT ")).count(),
            1,
            "objdump should list exactly one function:\n{text}"
        );
        let mut entry = None;
        let mut returns = BTreeSet::new();
        for line in text.lines().filter(|l| !l.starts_with("TEXT ")) {
            let fields: Vec<&str> = line
                .split('\t')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .collect();
            let (Some(address), Some(mnemonic)) = (fields.get(1), fields.get(3)) else {
                continue;
            };
            let Some(address) = address
                .strip_prefix("0x")
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            else {
                continue;
            };
            entry.get_or_insert(address);
            if mnemonic.split_whitespace().next() == Some("RET") {
                returns.insert(vaddr_to_offset(path, address));
            }
        }
        let entry = vaddr_to_offset(path, entry.expect("objdump printed no instruction"));
        (entry, returns)
    }

    /// The RET offsets hold RET opcodes and lie inside Read, whose extent
    /// (from the symbol table) is `[entry, entry + size)`.
    fn check_returns(path: &Path, tls: &GoTls) {
        let bytes = std::fs::read(path).expect("read");
        assert!(!tls.read_returns.is_empty());
        assert!(
            tls.read_returns.windows(2).all(|w| w[0] < w[1]),
            "ascending, distinct"
        );
        let next_function = tls.read_entry + MAX_FUNCTION_BYTES;
        for &ret in &tls.read_returns {
            assert!(
                ret > tls.read_entry && ret < next_function,
                "{ret:#x} outside Read"
            );
            let opcode = bytes[usize::try_from(ret).expect("offset")];
            assert!(
                matches!(opcode, 0xc3 | 0xc2),
                "byte at {ret:#x} is {opcode:#x}, not RET"
            );
        }
        // Both entries start with the stack check (CMPQ/LEAQ .. R14).
        for entry in [tls.read_entry, tls.write_entry] {
            let at = usize::try_from(entry).expect("offset");
            assert!(matches!(bytes[at], 0x49 | 0x4c | 0x4d), "entry {entry:#x}");
        }
    }

    #[test]
    fn finds_tls_in_unstripped_and_stripped_builds() {
        let f = fixtures();
        let full = found(&f.tls, Lookup::Auto);
        let stripped = found(&f.tls_stripped, Lookup::Auto);
        assert_eq!(full.found_by, "symtab");
        assert_eq!(stripped.found_by, "pclntab");
        assert_eq!(full.go_version, f.go_version);
        assert_eq!(stripped.go_version, f.go_version);
        assert!(
            full.register_abi && stripped.register_abi,
            "Go >= 1.17 on x86-64"
        );
        // -s -w drops only the symbol table and DWARF: the text is the same.
        assert_eq!(full.write_entry, stripped.write_entry);
        assert_eq!(full.write_body, stripped.write_body);
        // Past the stack check (a compare and a conditional jump), still
        // near the entry.
        assert!(
            full.write_body > full.write_entry && full.write_body < full.write_entry + 32,
            "{full:?}"
        );
        assert_eq!(full.read_entry, stripped.read_entry);
        assert_eq!(full.read_returns, stripped.read_returns);
        assert_ne!(full.write_entry, full.read_entry);
        check_returns(&f.tls, &full);
        check_returns(&f.tls_stripped, &stripped);
    }

    #[test]
    fn symtab_and_pclntab_agree() {
        let f = fixtures();
        let by_symtab = found(&f.tls, Lookup::SymtabOnly);
        let by_pclntab = found(&f.tls, Lookup::PclntabOnly);
        assert_eq!(by_symtab.found_by, "symtab");
        assert_eq!(by_pclntab.found_by, "pclntab");
        assert_eq!(
            GoTls {
                found_by: "",
                ..by_symtab
            },
            GoTls {
                found_by: "",
                ..by_pclntab
            }
        );
    }

    #[test]
    fn agrees_with_go_tool_objdump() {
        let f = fixtures();
        let tls = found(&f.tls, Lookup::Auto);
        let (entry, returns) = objdump_read(&f.tls);
        assert!(!returns.is_empty(), "objdump shows RETs in Read");
        assert_eq!(tls.read_entry, entry);
        assert_eq!(
            tls.read_returns.iter().copied().collect::<BTreeSet<_>>(),
            returns
        );
    }

    #[test]
    fn externally_linked_pie_with_and_without_symbols() {
        let Some((full_path, stripped_path)) = external_pie() else {
            return;
        };
        let data = std::fs::read(stripped_path).expect("read");
        let elf = object::File::parse(&*data).expect("parse");
        assert!(
            PCLNTAB_SECTIONS
                .iter()
                .all(|name| elf.section_by_name(name).is_none()),
            "the stripped external PIE was expected to have no pclntab section"
        );
        let full = found(full_path, Lookup::Auto);
        let by_pclntab = found(full_path, Lookup::PclntabOnly);
        let stripped = found(stripped_path, Lookup::Auto);
        assert_eq!(full.found_by, "symtab");
        assert_eq!(stripped.found_by, "pclntab");
        assert_eq!(
            GoTls {
                found_by: "",
                ..full.clone()
            },
            GoTls {
                found_by: "",
                ..by_pclntab
            }
        );
        assert_eq!(
            (full.write_entry, full.read_entry, &full.read_returns),
            (
                stripped.write_entry,
                stripped.read_entry,
                &stripped.read_returns
            )
        );
        assert_eq!(stripped.go_version, fixtures().go_version);
        check_returns(full_path, &full);
        check_returns(stripped_path, &stripped);
        let (entry, returns) = objdump_read(full_path);
        assert_eq!(full.read_entry, entry);
        assert_eq!(
            full.read_returns.iter().copied().collect::<BTreeSet<_>>(),
            returns
        );
    }

    /// Runs `check` on the parsed function table of `path`.
    fn with_table(
        path: &Path,
        check: impl FnOnce(&Ctx<'_, '_, &object::read::ReadCache<&File>>, &Pclntab<'_>, u64),
    ) {
        let file = File::open(path).expect("open");
        let cache = object::read::ReadCache::new(&file);
        let elf = parse_elf(&cache, path).expect("parse").expect("ELF");
        let ctx = Ctx {
            file: &file,
            path,
            data: &cache,
            loads: load_segments(&elf),
            elf,
        };
        let FoundTable { bytes, vaddr } = locate_pclntab(&ctx).expect("read").expect("pclntab");
        let table = Pclntab::parse(&bytes).expect("parse pclntab");
        check(&ctx, &table, vaddr);
    }

    /// The runtime's module data leads to the same text start as the
    /// header (the fallback for linkers that leave the header's zero).
    #[test]
    fn moduledata_gives_the_text_start() {
        let f = fixtures();
        let mut paths = vec![f.tls.clone(), f.tls_stripped.clone()];
        if let Some((full, stripped)) = external_pie() {
            paths.extend([full.clone(), stripped.clone()]);
        }
        for path in paths {
            with_table(&path, |ctx, table, vaddr| {
                assert!(table.layout >= Layout::Go118, "{}", path.display());
                assert_ne!(table.text_start, 0);
                assert_eq!(
                    moduledata_text(ctx, table, vaddr),
                    Some(table.text_start),
                    "{}",
                    path.display()
                );
            });
        }
    }

    /// Newer linkers leave the header's textStart zero ("unused"): the
    /// module data must then give the same answer. Without module data
    /// either, the start of `.text` is used, right for Go's own linker;
    /// behind an external linker's start-up code it is wrong, and the
    /// stack check must refuse rather than return shifted offsets.
    #[test]
    fn zero_text_start_in_the_header() {
        let f = fixtures();
        let mut cases = vec![(f.tls_stripped.clone(), true)];
        if let Some((_, stripped)) = external_pie() {
            cases.push((stripped.clone(), false));
        }
        for (path, text_section_is_right) in cases {
            let expected = found(&path, Lookup::Auto);
            let mut header = (0, 0);
            with_table(&path, |_, table, vaddr| {
                header = (vaddr, table.funcnametab as u64)
            });
            let (vaddr, names) = header;
            let at = vaddr_to_offset(&path, vaddr) as usize + 8 + 2 * 8;
            let mut bytes = std::fs::read(&path).expect("read");
            assert_ne!(bytes[at..at + 8], [0; 8]);
            bytes[at..at + 8].fill(0);
            let copy = run_dir().join("bin").join("zero-text-start");
            std::fs::write(&copy, &bytes).expect("write");
            assert_eq!(found(&copy, Lookup::Auto), expected, "{}", path.display());

            let mut pattern = vaddr.to_le_bytes().to_vec();
            pattern.extend_from_slice(&(vaddr + names).to_le_bytes());
            let moduledata = memchr::memmem::find(&bytes, &pattern).expect("moduledata");
            bytes[moduledata..moduledata + 8].fill(0);
            std::fs::write(&copy, &bytes).expect("write");
            let result = inspect_path(&copy, Lookup::Auto).expect("inspect");
            eprintln!(
                "{}: without textStart and module data: {result:?}",
                path.display()
            );
            match result {
                GoProbe::Found(tls) => assert_eq!(tls, expected, "{}", path.display()),
                GoProbe::Unsupported { .. } => assert!(!text_section_is_right),
                other => panic!("{}: {other:?}", path.display()),
            }
        }
    }

    #[test]
    fn a_go_program_without_tls_is_no_tls() {
        let f = fixtures();
        for lookup in [Lookup::Auto, Lookup::PclntabOnly] {
            assert_eq!(
                inspect_path(&f.no_tls, lookup).expect("inspect"),
                GoProbe::NoTls
            );
        }
        let file = File::open(&f.no_tls).expect("open");
        assert!(looks_like_go(&file, &f.no_tls).expect("check"));
    }

    #[test]
    fn other_files_are_not_go() {
        for path in ["/bin/true", "/bin/sh"] {
            let path = Path::new(path);
            if !path.exists() {
                continue;
            }
            assert_eq!(
                inspect_path(path, Lookup::Auto).expect("inspect"),
                GoProbe::NotGo,
                "{path:?}"
            );
            let file = File::open(path).expect("open");
            assert!(!looks_like_go(&file, path).expect("check"));
        }
        let script = run_dir().join("script.sh");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write");
        assert_eq!(
            inspect_path(&script, Lookup::Auto).expect("inspect"),
            GoProbe::NotGo
        );
        let empty = run_dir().join("empty");
        std::fs::write(&empty, "").expect("write");
        assert_eq!(
            inspect_path(&empty, Lookup::Auto).expect("inspect"),
            GoProbe::NotGo
        );
    }

    /// Truncated copies: an error or NotGo when something the inspection
    /// needs is cut off, and never a panic nor an offset past the end.
    #[test]
    fn truncated_copies_never_panic() {
        let f = fixtures();
        for source in [&f.tls_stripped, &f.tls] {
            let bytes = std::fs::read(source).expect("read");
            let full = found(source, Lookup::Auto);
            let copy = run_dir().join(format!(
                "truncated-{}",
                source.file_name().expect("name").to_string_lossy()
            ));
            let len = bytes.len();
            let elf = object::File::parse(&*bytes).expect("parse");
            let end_of = |name: &str| {
                elf.section_by_name(name)
                    .and_then(|s| s.file_range())
                    .map(|(offset, size)| (offset + size) as usize)
            };
            // Cuts that lose something needed: the headers, Read's code,
            // the end of the function table, the end of the symbol table.
            let mut needed = vec![0, 3, 4, 63, 64, 300, full.read_entry as usize + 16];
            needed.push(end_of(".gopclntab").expect("pclntab") - 1);
            if full.found_by == "symtab" {
                needed.push(end_of(".strtab").expect("strtab") - 1);
            }
            let mut cuts: Vec<(usize, bool)> = needed.iter().map(|&c| (c, true)).collect();
            cuts.extend((1..32).map(|i| (len * i / 32, false)));
            for (cut, must_fail) in cuts {
                std::fs::write(&copy, &bytes[..cut]).expect("write");
                let result = inspect_path(&copy, Lookup::Auto);
                match &result {
                    Err(_) | Ok(GoProbe::NotGo) => {}
                    Ok(GoProbe::Found(tls)) => {
                        assert!(!must_fail, "cut at {cut}: {result:?}");
                        for offset in [tls.write_entry, tls.read_entry]
                            .iter()
                            .chain(&tls.read_returns)
                        {
                            assert!((*offset as usize) < cut, "cut at {cut}: offset {offset:#x}");
                        }
                    }
                    Ok(_) => assert!(!must_fail, "cut at {cut}: {result:?}"),
                }
            }
        }
    }

    /// Garbage written over the function table: any answer but a panic,
    /// and offsets inside the file.
    #[test]
    fn corrupted_function_tables_never_panic() {
        let f = fixtures();
        let original = std::fs::read(&f.tls_stripped).expect("read");
        let elf = object::File::parse(&*original).expect("parse");
        let (start, size) = elf
            .section_by_name(".gopclntab")
            .and_then(|s| s.file_range())
            .expect("pclntab");
        let (start, size) = (start as usize, size as usize);
        let copy = run_dir().join("corrupted");
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..48 {
            let mut bytes = original.clone();
            // The header and function table for the first rounds, then
            // anywhere in the table.
            let (at, span) = match round % 3 {
                0 => (start + (random() as usize % 96), 1 + random() as usize % 8),
                1 => (
                    start + (random() as usize % (size / 8)),
                    1 + random() as usize % 64,
                ),
                _ => (
                    start + (random() as usize % size),
                    1 + random() as usize % 4096,
                ),
            };
            let end = (at + span).min(start + size);
            for byte in &mut bytes[at..end] {
                *byte = random() as u8;
            }
            std::fs::write(&copy, &bytes).expect("write");
            if let Ok(GoProbe::Found(tls)) = inspect_path(&copy, Lookup::Auto) {
                for offset in [tls.write_entry, tls.read_entry]
                    .iter()
                    .chain(&tls.read_returns)
                {
                    assert!((*offset as usize) < bytes.len());
                }
            }
        }
    }

    // --- Synthetic tables: the layouts Go 1.19 cannot produce. ---

    /// A pclntab of `layout` with functions (name, entry offset from
    /// `text`), ending at `end`.
    fn synthetic_table(layout: Layout, text: u64, functions: &[(&str, u64)], end: u64) -> Vec<u8> {
        let ptr = 8usize;
        let magic: u32 = match layout {
            Layout::Go12 => 0xffff_fffb,
            Layout::Go116 => 0xffff_fffa,
            Layout::Go118 => 0xffff_fff0,
            Layout::Go120 => 0xffff_fff1,
        };
        let relative = layout.relative_entries();
        let field = if relative { 4 } else { ptr };
        let put = |out: &mut Vec<u8>, value: u64, size: usize| {
            out.extend_from_slice(&value.to_le_bytes()[..size]);
        };
        let entry = |offset: u64| if relative { offset } else { text + offset };
        let header_words = match layout {
            Layout::Go12 => 1,
            Layout::Go116 => 7,
            Layout::Go118 | Layout::Go120 => 8,
        };
        let header_len = 8 + header_words * ptr;
        // Names first (after the header), then the function table and the
        // records.
        let mut names = Vec::new();
        let mut name_offsets = Vec::new();
        for (name, _) in functions {
            name_offsets.push(names.len());
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        let n = functions.len();
        let functab_len = (2 * n + 1) * field;
        let record_len = field + 4 + 4;
        let (names_at, functab_at) = match layout {
            // 1.2: the table follows nfunc; names after the records.
            Layout::Go12 => (header_len + functab_len + n * record_len, header_len),
            _ => (header_len, header_len + names.len()),
        };
        let funcdata_at = if layout == Layout::Go12 {
            0
        } else {
            functab_at
        };
        let mut out = Vec::new();
        put(&mut out, u64::from(magic), 4);
        out.extend_from_slice(&[0, 0, 1, ptr as u8]);
        put(&mut out, n as u64, ptr);
        match layout {
            Layout::Go12 => {}
            Layout::Go116 => {
                put(&mut out, 1, ptr); // nfiles
                for _ in 0..4 {
                    put(&mut out, names_at as u64, ptr); // funcname, cu, file, pc
                }
                put(&mut out, functab_at as u64, ptr);
            }
            Layout::Go118 | Layout::Go120 => {
                put(&mut out, 1, ptr);
                put(&mut out, text, ptr);
                for _ in 0..4 {
                    put(&mut out, names_at as u64, ptr);
                }
                put(&mut out, functab_at as u64, ptr);
            }
        }
        if layout != Layout::Go12 {
            out.extend_from_slice(&names);
        }
        assert_eq!(out.len(), functab_at);
        let records_at = functab_at + functab_len;
        for (i, (_, offset)) in functions.iter().enumerate() {
            put(&mut out, entry(*offset), field);
            put(
                &mut out,
                (records_at + i * record_len - funcdata_at) as u64,
                field,
            );
        }
        put(&mut out, entry(end), field);
        for (i, (_, offset)) in functions.iter().enumerate() {
            put(&mut out, entry(*offset), field);
            let name_base = if layout == Layout::Go12 { names_at } else { 0 };
            put(&mut out, (name_base + name_offsets[i]) as u64, 4);
            put(&mut out, 0, 4);
        }
        if layout == Layout::Go12 {
            assert_eq!(out.len(), names_at);
            out.extend_from_slice(&names);
        }
        out
    }

    #[test]
    fn parses_every_table_layout() {
        let functions = [
            ("main.main", 0x0),
            (WRITE_FUNCTION, 0x100),
            ("crypto/tls.(*Conn).Read.func1", 0x200),
            (READ_FUNCTION, 0x240),
        ];
        let text = 0x40_1000;
        for layout in [Layout::Go12, Layout::Go116, Layout::Go118, Layout::Go120] {
            let bytes = synthetic_table(layout, text, &functions, 0x300);
            let table = Pclntab::parse(&bytes).expect("parse");
            assert_eq!(table.layout, layout);
            assert_eq!(table.nfunc, 4);
            assert!(plausible_table(&table), "{layout:?}");
            let [write, read, missing] = table
                .find([WRITE_FUNCTION, READ_FUNCTION, "crypto/tls.(*Conn).Close"])
                .expect("find");
            let base = if layout.relative_entries() {
                assert_eq!(table.text_start, text);
                text
            } else {
                0
            };
            let absolute = |(s, e): (u64, u64)| (s + base, e + base);
            assert_eq!(
                write.map(absolute),
                Some((text + 0x100, text + 0x200)),
                "{layout:?}"
            );
            assert_eq!(
                read.map(absolute),
                Some((text + 0x240, text + 0x300)),
                "{layout:?}"
            );
            assert_eq!(missing, None);
            // Every truncation is an error, never a panic.
            for cut in 0..bytes.len() {
                if let Ok(table) = Pclntab::parse(&bytes[..cut]) {
                    let _ = table.find([WRITE_FUNCTION, READ_FUNCTION]);
                    let _ = plausible_table(&table);
                }
            }
        }
        let mut unknown = synthetic_table(Layout::Go120, text, &functions, 0x300);
        unknown[0] = 0xf2;
        assert_eq!(
            Pclntab::parse(&unknown).err(),
            Some(TableError::UnknownMagic(0xffff_fff2))
        );
    }

    #[test]
    fn out_of_order_tables_are_malformed() {
        let functions = [(WRITE_FUNCTION, 0x100), (READ_FUNCTION, 0x80)];
        let bytes = synthetic_table(Layout::Go120, 0x1000, &functions, 0x300);
        let table = Pclntab::parse(&bytes).expect("parse");
        assert!(table.find([WRITE_FUNCTION, READ_FUNCTION]).is_err());
        assert!(!plausible_table(&table));
    }

    #[test]
    fn reads_both_build_info_layouts() {
        let no_memory = |_: u64, _: u64| None;
        // Go 1.18+: the version inline after the 32-byte header.
        let mut blob = vec![0u8; 16];
        blob.extend_from_slice(BUILDINFO_MAGIC);
        blob.extend_from_slice(&[8, 2]);
        blob.resize(16 + 32, 0);
        blob.push(8);
        blob.extend_from_slice(b"go1.21.4");
        blob.push(0);
        assert_eq!(
            parse_buildinfo(&blob, &no_memory).as_deref(),
            Some("go1.21.4")
        );
        // Misaligned magic is not the header.
        assert_eq!(parse_buildinfo(&blob[1..], &no_memory), None);
        // Before 1.18: the address of a string header.
        let mut old = BUILDINFO_MAGIC.to_vec();
        old.extend_from_slice(&[8, 0]);
        old.extend_from_slice(&0x1000u64.to_le_bytes());
        old.extend_from_slice(&0x2000u64.to_le_bytes());
        let memory = |vaddr: u64, len: u64| match (vaddr, len) {
            (0x1000, 16) => {
                let mut header = 0x3000u64.to_le_bytes().to_vec();
                header.extend_from_slice(&8u64.to_le_bytes());
                Some(header)
            }
            (0x3000, 8) => Some(b"go1.16.9".to_vec()),
            _ => None,
        };
        assert_eq!(parse_buildinfo(&old, &memory).as_deref(), Some("go1.16.9"));
        // Garbage after a good magic.
        let mut bad = blob.clone();
        bad[48] = 0xff;
        assert_eq!(parse_buildinfo(&bad, &no_memory), None);
    }

    #[test]
    fn parses_go_releases() {
        assert_eq!(go_release("go1.19.8"), Some((1, 19)));
        assert_eq!(go_release("go1.21rc2"), Some((1, 21)));
        assert_eq!(go_release("go1.9"), Some((1, 9)));
        assert_eq!(
            go_release("devel go1.23-1234abcd Tue Jan 2 2024"),
            Some((1, 23))
        );
        assert_eq!(go_release("go1.22.1 X:nocoverageredesign"), Some((1, 22)));
        assert_eq!(go_release(""), None);
        assert_eq!(go_release("gccgo"), None);
    }

    #[test]
    fn recognises_stack_checks() {
        // CMPQ 0x10(R14), SP; JBE
        let register = [0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xc2, 0x03, 0x00, 0x00];
        assert_eq!(stack_check(&register, 0x1000), Some(Abi::Register));
        // LEAQ -0x68(SP), R12; CMPQ 0x10(R14), R12
        let big = [0x4c, 0x8d, 0x64, 0x24, 0x98, 0x4d, 0x3b, 0x66, 0x10];
        assert_eq!(stack_check(&big, 0x1000), Some(Abi::Register));
        // MOVQ FS:-8, CX; CMPQ SP, 0x10(CX)
        let stack = [
            0x64, 0x48, 0x8b, 0x0c, 0x25, 0xf8, 0xff, 0xff, 0xff, 0x48, 0x3b, 0x61, 0x10,
        ];
        assert_eq!(stack_check(&stack, 0x1000), Some(Abi::Stack));
        // CMPQ SP, 0x10(CX) without the load from TLS: not Go's.
        assert_eq!(stack_check(&stack[9..], 0x1000), None);
        // push rbp; mov rbp, rsp (a C function)
        assert_eq!(stack_check(&[0x55, 0x48, 0x89, 0xe5, 0xc3], 0x1000), None);
    }

    #[test]
    fn finds_every_return() {
        // xor eax,eax; ret; nop; ret 8; int3
        let code = [0x31, 0xc0, 0xc3, 0x90, 0xc2, 0x08, 0x00, 0xcc];
        assert_eq!(return_sites(&code, 0x100), Ok(vec![0x102, 0x104]));
        // An instruction cut off at the end is an error.
        assert!(return_sites(&code[..5], 0x100).is_err());
        // A C3 byte inside an instruction is not a RET: mov eax, 0xc3c3c3c3.
        assert_eq!(return_sites(&[0xb8, 0xc3, 0xc3, 0xc3, 0xc3], 0), Ok(vec![]));
    }
}
