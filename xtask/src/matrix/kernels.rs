//! The guest kernels: Debian's cloud kernels, fetched with `apt-get download`
//! once and kept in a cache directory, so later runs are offline. Only the
//! kernel image is used: the cloud kernels have what the guest needs
//! (loopback, IPv6, cgroup v2, BPF, tracefs) built in, no modules.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A kernel series and how its Debian packages are named.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    /// Row label, e.g. `6.1`.
    pub label: &'static str,
    /// Package names are `{prefix}{N}{suffix}`; the highest N is used.
    prefix: &'static str,
    suffix: &'static str,
}

/// The kernels EKS nodes run that Debian 12 ships: Amazon Linux 2023 runs
/// 6.1 and 6.12.
pub const GUESTS: [Series; 2] = [
    Series {
        label: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-amd64",
    },
    Series {
        label: "6.12",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-cloud-amd64",
    },
];

/// A kernel image ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub package: String,
    pub vmlinuz: PathBuf,
}

/// The newest kernel of `series`, downloaded into `cache` if not there yet.
pub fn fetch(series: &Series, cache: &Path) -> Result<Kernel> {
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    // Two matrix runs at once (two checkouts' test suites) share the cache:
    // one fetches while the other waits, then finds the image there.
    let lock_path = cache.join(".lock");
    let lock = fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    // SAFETY: flock on a descriptor we own; it blocks until the lock is ours
    // and is released when `lock` is closed at the end of this function.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "locking {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        );
    }
    let package = newest_package(series, cache)?;
    let vmlinuz = cache.join(&package).join("vmlinuz");
    if vmlinuz.is_file() {
        return Ok(Kernel { package, vmlinuz });
    }
    let deb = match cached_deb(cache, &package)? {
        Some(deb) => deb,
        None => download(cache, &package)?,
    };
    extract_vmlinuz(&deb, &vmlinuz)?;
    // The .deb is 30 MB of mostly modules; the image is all we keep.
    fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))?;
    remove_older(series, cache, &package);
    Ok(Kernel { package, vmlinuz })
}

/// The highest-numbered package of the series in apt's lists, or if apt
/// knows none (no lists on this machine), in the cache.
fn newest_package(series: &Series, cache: &Path) -> Result<String> {
    let listed = Command::new("apt-cache")
        .args(["pkgnames", series.prefix])
        .output()
        .context("running apt-cache pkgnames")?;
    let names = String::from_utf8_lossy(&listed.stdout);
    let cached: Vec<String> = fs::read_dir(cache)
        .with_context(|| format!("listing {}", cache.display()))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    newest(series, names.lines())
        .or_else(|| newest(series, cached.iter().map(String::as_str)))
        .with_context(|| {
            format!(
                "no {}*{} package in apt's lists or in {}; run apt-get update",
                series.prefix,
                series.suffix,
                cache.display()
            )
        })
}

/// The name of the form `{prefix}{N}{suffix}` with the highest N.
fn newest<'a>(series: &Series, names: impl Iterator<Item = &'a str>) -> Option<String> {
    names
        .filter_map(|name| {
            let n: u32 = name
                .strip_prefix(series.prefix)?
                .strip_suffix(series.suffix)?
                .parse()
                .ok()?;
            Some((n, name))
        })
        .max()
        .map(|(_, name)| name.to_string())
}

fn cached_deb(cache: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    Ok(fs::read_dir(cache)
        .with_context(|| format!("listing {}", cache.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        }))
}

/// `apt-get download` into the cache; after `apt-get update` if the lists
/// are stale (the mirror no longer has the version they name).
fn download(cache: &Path, package: &str) -> Result<PathBuf> {
    eprintln!("matrix: apt-get download {package}");
    let get = || {
        Command::new("apt-get")
            // apt's sandbox user cannot write to a cache under root's home.
            .args(["-q", "-o", "APT::Sandbox::User=root", "download", package])
            .current_dir(cache)
            .status()
            .context("running apt-get download")
    };
    if !get()?.success() {
        eprintln!("matrix: download failed; apt-get update and one more try");
        let updated = Command::new("apt-get")
            .args(["-qq", "update"])
            .status()
            .context("running apt-get update")?;
        if !updated.success() || !get()?.success() {
            bail!("apt-get download {package} failed");
        }
    }
    cached_deb(cache, package)?.with_context(|| {
        format!(
            "apt-get download {package} left no .deb in {}",
            cache.display()
        )
    })
}

/// Unpacks the package into a scratch directory and keeps `boot/vmlinuz-*`.
fn extract_vmlinuz(deb: &Path, vmlinuz: &Path) -> Result<()> {
    let parent = vmlinuz.parent().context("vmlinuz path has no parent")?;
    let mut scratch = parent.as_os_str().to_owned();
    scratch.push(".unpacking");
    let scratch = PathBuf::from(scratch);
    // Left over from an interrupted run, or absent.
    let _ = fs::remove_dir_all(&scratch);
    let result = (|| {
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(&scratch)
            .status()
            .context("running dpkg-deb -x")?;
        if !status.success() {
            bail!("dpkg-deb -x {} failed ({status})", deb.display());
        }
        let image = fs::read_dir(scratch.join("boot"))
            .context("the package has no boot/ directory")?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
            .with_context(|| format!("no boot/vmlinuz-* in {}", deb.display()))?;
        fs::create_dir_all(parent)?;
        // Copied under another name and renamed: an image that is there is
        // whole, even if a run was killed while copying.
        let partial = vmlinuz.with_extension("partial");
        fs::copy(&image, &partial)
            .with_context(|| format!("copying {} to {}", image.display(), partial.display()))?;
        fs::rename(&partial, vmlinuz)
            .with_context(|| format!("renaming {} to {}", partial.display(), vmlinuz.display()))?;
        Ok(())
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// Removes older kernels of the series from the cache; failures only cost
/// disk space.
fn remove_older(series: &Series, cache: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(series.prefix) && !name.starts_with(keep) {
            let _ = fs::remove_dir_all(entry.path()).or_else(|_| fs::remove_file(entry.path()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_by_number_not_by_text() {
        let names = [
            "linux-image-6.12.99+deb12-cloud-amd64",
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12.117+deb12-cloud-amd64-dbg",
            "linux-image-6.12-cloud-amd64",
            "linux-image-6.12.118+deb12-amd64",
        ];
        assert_eq!(
            newest(&GUESTS[1], names.into_iter()).as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64")
        );
        let names = [
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
        ];
        assert_eq!(
            newest(&GUESTS[0], names.into_iter()).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            newest(
                &GUESTS[0],
                ["linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb"].into_iter()
            ),
            None
        );
    }
}
