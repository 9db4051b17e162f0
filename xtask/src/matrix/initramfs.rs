//! The guest's whole root filesystem, as the initramfs the kernel unpacks:
//! busybox, `/init` (`init.sh`), the agent, this xtask binary (which runs
//! the smoke test inside) and the shared libraries the two need. The cloud
//! kernels have no 9p, so nothing can be shared with the host at run time.
//!
//! The archive is written directly in the kernel's `newc` cpio format.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The guest's `/init`.
const INIT: &str = include_str!("init.sh");

/// Where the programs go in the guest; `init.sh` runs them from there.
pub struct Contents<'a> {
    pub busybox: &'a Path,
    pub agent: &'a Path,
    pub xtask: &'a Path,
}

/// Writes the initramfs to `out`.
pub fn build(out: &Path, contents: &Contents) -> Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut archive = Cpio::new(BufWriter::new(file));
    for dir in ["dev", "proc", "sys", "tmp", "bin", "run"] {
        archive.dir(dir)?;
    }
    // The kernel opens /dev/console for init's stdin/stdout/stderr before
    // devtmpfs is mounted.
    archive.char_device("dev/console", 0o600, 5, 1)?;
    archive.file("init", 0o755, INIT.as_bytes())?;
    for (path, binary) in [
        ("bin/busybox", contents.busybox),
        ("bin/sockeye-agent", contents.agent),
        ("bin/xtask", contents.xtask),
    ] {
        archive.copy(path, binary)?;
    }
    let mut libraries = BTreeSet::new();
    for binary in [contents.agent, contents.xtask] {
        libraries.extend(shared_libraries(binary)?);
    }
    for library in libraries {
        // Same path inside as outside, so the dynamic loader finds them.
        archive.copy(library.trim_start_matches('/'), Path::new(&library))?;
    }
    archive
        .finish()
        .with_context(|| format!("writing {}", out.display()))
}

/// The libraries `ldd` resolves for `binary`, the dynamic loader included.
fn shared_libraries(binary: &Path) -> Result<Vec<String>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    if !output.status.success() {
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse_ldd(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("reading ldd's output for {}", binary.display()))
}

fn parse_ldd(text: &str) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            bail!("missing library: {}", line.trim());
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", or the
        // loader as "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no path.
        let target = line.split_once("=>").map_or(line, |(_, to)| to);
        if let Some(path) = target
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            paths.push(path.to_string());
        }
    }
    Ok(paths)
}

/// A `newc` cpio writer (see the kernel's
/// Documentation/driver-api/early-userspace/buffer-format.rst).
struct Cpio<W: Write> {
    out: W,
    next_inode: u32,
    dirs: BTreeSet<String>,
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

impl<W: Write> Cpio<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            next_inode: 1,
            dirs: BTreeSet::new(),
        }
    }

    /// A directory and its parents, each once.
    fn dir(&mut self, path: &str) -> Result<()> {
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if self.dirs.insert(at.clone()) {
                self.entry(&at.clone(), S_IFDIR | 0o755, 2, (0, 0), &[])?;
            }
        }
        Ok(())
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.entry(path, S_IFREG | mode, 1, (0, 0), data)
    }

    /// A host file, with its permission bits.
    fn copy(&mut self, path: &str, from: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
        let mode = fs::metadata(from)?.permissions().mode() & 0o7777;
        self.file(path, mode, &data)
    }

    fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        self.entry(path, S_IFCHR | mode, 1, (major, minor), &[])
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<()> {
        let inode = self.next_inode;
        self.next_inode += 1;
        let size = u32::try_from(data.len()).context("file too large for cpio")?;
        // The name's length counts its terminating NUL.
        let name_size = u32::try_from(name.len() + 1).context("name too long")?;
        let fields = [
            inode, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        let mut header = String::from("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        // Header plus name, then the data, each padded to 4 bytes.
        self.pad(header.len() + name.len() + 1)?;
        self.out.write_all(data)?;
        self.pad(data.len())?;
        Ok(())
    }

    fn pad(&mut self, len: usize) -> Result<()> {
        let zeros = [0u8; 3];
        self.out.write_all(&zeros[..(4 - len % 4) % 4])?;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[])?;
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths_and_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
    }

    #[test]
    fn newc_layout() {
        let mut out = Vec::new();
        let mut cpio = Cpio::new(&mut out);
        cpio.file("a/b", 0o644, b"hello").unwrap();
        cpio.finish().unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        // Directory "a" first (mode 040755, nlink 2), then "a/b".
        assert!(text.starts_with("07070100000001000041ed0000000000000000000000020000000000000000"));
        let b = text.find("a/b\0").unwrap();
        // 110-byte header + "a/b\0" = 114, padded to 116: the data follows.
        assert_eq!(&text[b - 110..b - 110 + 6], "070701");
        assert_eq!(&text[b + 6..b + 11], "hello");
        assert_eq!(out.len() % 4, 0);
        assert!(text.contains("TRAILER!!!\0"));
    }
}
