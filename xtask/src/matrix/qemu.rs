//! Boots a kernel and initramfs in QEMU under TCG emulation and returns what
//! the guest wrote to its serial console. `/dev/kvm` on the machines this
//! runs on cannot run a guest kernel, so there is no `-enable-kvm`. QEMU's
//! exit status says nothing about the guest (a kernel that oopses at boot
//! still powers off with status 0), so it is only reported, never judged.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub struct Boot {
    /// Everything on the serial console: firmware, kernel, the guest's output.
    pub serial: String,
    /// Killed at the timeout.
    pub timed_out: bool,
    pub status: Option<ExitStatus>,
}

/// Boots and waits until the guest powers off or `timeout` passes. The
/// console is written to `serial_log` as it comes, so a hung guest can be
/// watched with `tail -f`.
pub fn boot(kernel: &Path, initramfs: &Path, timeout: Duration, serial_log: &Path) -> Result<Boot> {
    let log =
        File::create(serial_log).with_context(|| format!("creating {}", serial_log.display()))?;
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1G"])
        // One vCPU: with two, 6.12 sometimes oopses at boot under TCG.
        .args(["-smp", "1", "-nographic", "-no-reboot", "-net", "none"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        // panic=-1: a kernel panic reboots, and -no-reboot turns that into
        // an exit instead of a hang until the timeout.
        .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=3"])
        // A terminal on stdin would be switched to raw mode.
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the serial log")?)
        .stderr(log);
    // SAFETY: the closure runs between fork and exec and only makes two
    // async-signal-safe system calls.
    unsafe {
        command.pre_exec(|| {
            // QEMU dies with us (Ctrl-C, a panic), never left running alone.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Emulation is one busy core for minutes: let interactive work
            // on the machine go first. Failing to lower priority is harmless.
            libc::setpriority(libc::PRIO_PROCESS, 0, 10);
            Ok(())
        });
    }
    let start = Instant::now();
    let child = command
        .spawn()
        .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let mut qemu = Qemu(child);
    let (status, timed_out) = loop {
        if let Some(status) = qemu.0.try_wait().context("waiting for QEMU")? {
            break (Some(status), false);
        }
        if start.elapsed() >= timeout {
            qemu.kill();
            break (None, true);
        }
        thread::sleep(Duration::from_millis(200));
    };
    let serial = fs::read(serial_log)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .with_context(|| format!("reading {}", serial_log.display()))?;
    Ok(Boot {
        serial,
        timed_out,
        status,
    })
}

/// Kills QEMU when dropped, also on an early return or a panic.
struct Qemu(Child);

impl Qemu {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.kill();
        }
    }
}
