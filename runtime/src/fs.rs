//! `goro::fs`: file-system calls for goroutines. The kernel has no readiness notification for
//! regular files, so every call here is a plain blocking system call made inside
//! [`crate::blocking`]: the goroutine's processor is handed to another thread if the call
//! takes long (sysmon retakes it after a tick), and the other goroutines keep running, as Go
//! does for its file syscalls.
//!
//! Names and signatures are `std::fs`'s. For anything not here, wrap the std call in
//! `goro::blocking(|| ...)` yourself.

use std::fs;
use std::io::{self, IoSlice, IoSliceMut, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// `std::fs::read`.
pub fn read<P: AsRef<Path>>(path: P) -> io::Result<Vec<u8>> {
    crate::blocking(|| fs::read(path))
}

/// `std::fs::read_to_string`.
pub fn read_to_string<P: AsRef<Path>>(path: P) -> io::Result<String> {
    crate::blocking(|| fs::read_to_string(path))
}

/// `std::fs::write`.
pub fn write<P: AsRef<Path>, C: AsRef<[u8]>>(path: P, contents: C) -> io::Result<()> {
    crate::blocking(|| fs::write(path, contents))
}

/// `std::fs::metadata`.
pub fn metadata<P: AsRef<Path>>(path: P) -> io::Result<fs::Metadata> {
    crate::blocking(|| fs::metadata(path))
}

/// `std::fs::remove_file`.
pub fn remove_file<P: AsRef<Path>>(path: P) -> io::Result<()> {
    crate::blocking(|| fs::remove_file(path))
}

/// `std::fs::rename`.
pub fn rename<P: AsRef<Path>, Q: AsRef<Path>>(from: P, to: Q) -> io::Result<()> {
    crate::blocking(|| fs::rename(from, to))
}

/// `std::fs::create_dir_all`.
pub fn create_dir_all<P: AsRef<Path>>(path: P) -> io::Result<()> {
    crate::blocking(|| fs::create_dir_all(path))
}

/// An open file whose calls run inside [`crate::blocking`] (`std::fs::File`'s API).
#[derive(Debug)]
pub struct File(fs::File);

impl File {
    /// `std::fs::File::open`: read-only.
    pub fn open<P: AsRef<Path>>(path: P) -> io::Result<File> {
        crate::blocking(|| fs::File::open(path)).map(File)
    }

    /// `std::fs::File::create`: write-only, created or truncated.
    pub fn create<P: AsRef<Path>>(path: P) -> io::Result<File> {
        crate::blocking(|| fs::File::create(path)).map(File)
    }

    /// Opens with `std::fs::OpenOptions` (append, create_new, ...).
    pub fn open_with<P: AsRef<Path>>(opts: &fs::OpenOptions, path: P) -> io::Result<File> {
        crate::blocking(|| opts.open(path)).map(File)
    }

    pub fn metadata(&self) -> io::Result<fs::Metadata> {
        crate::blocking(|| self.0.metadata())
    }

    pub fn set_len(&self, size: u64) -> io::Result<()> {
        crate::blocking(|| self.0.set_len(size))
    }

    pub fn sync_all(&self) -> io::Result<()> {
        crate::blocking(|| self.0.sync_all())
    }

    pub fn sync_data(&self) -> io::Result<()> {
        crate::blocking(|| self.0.sync_data())
    }

    /// The std file, for calls not wrapped here.
    pub fn into_std(self) -> fs::File {
        self.0
    }

    pub fn from_std(f: fs::File) -> File {
        File(f)
    }
}

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::blocking(|| self.0.read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        crate::blocking(|| self.0.read_vectored(bufs))
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        crate::blocking(|| self.0.read_to_end(buf))
    }
}

impl Write for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::blocking(|| self.0.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        crate::blocking(|| self.0.write_vectored(bufs))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        crate::blocking(|| self.0.write_all(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        crate::blocking(|| self.0.flush())
    }
}

impl Seek for File {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        crate::blocking(|| self.0.seek(pos))
    }
}
