//! Where events go. Stdout (JSON lines) for now; the stdout stream belongs to
//! events alone, logs go to stderr.

use std::io::{self, BufWriter, Write};

pub trait Sink {
    fn write(&mut self, line: &[u8]) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

pub struct StdoutSink {
    out: BufWriter<io::Stdout>,
}

impl StdoutSink {
    pub fn new() -> Self {
        Self {
            out: BufWriter::with_capacity(256 * 1024, io::stdout()),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdoutSink {
    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        self.out.write_all(line)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Collects lines in memory (tests, replay).
#[derive(Default)]
pub struct MemorySink {
    pub lines: Vec<Vec<u8>>,
}

impl Sink for MemorySink {
    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        self.lines.push(line.to_vec());
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
