#!/usr/bin/env bash
# Installs (or checks) everything Sockeye needs to build and run on a fresh
# Debian 12 machine. Idempotent: a second run costs seconds.
#
#   scripts/bootstrap.sh            build + run prerequisites
#   scripts/bootstrap.sh --test     also what the test suites need (podman, runc, ...)
#   scripts/bootstrap.sh --matrix   also what the kernel matrix needs (QEMU, busybox)
#   scripts/bootstrap.sh --bench    also the peers of cargo xtask bench (bpftrace, iperf3)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
want_matrix=0
want_bench=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    --matrix) want_matrix=1 ;;
    --bench) want_bench=1 ;;
    *) printf 'usage: %s [--test] [--matrix] [--bench]\n' "$0" >&2; exit 2 ;;
  esac
done

log() { printf '\033[1;34m[bootstrap]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[bootstrap] error:\033[0m %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (loads eBPF programs, mounts tracefs/bpffs)"
command -v rustup >/dev/null || die "rustup not found; install Rust with rustup first"

# --- Debian packages -------------------------------------------------------
# iproute2: test pods (ip netns, veth, bridge); procps: sysctl in test pods.
debs=(iproute2 util-linux procps)
if (( want_test )); then
  # End-to-end tests run real containers (crun fails on hybrid cgroups: runc).
  # DNS tests: a real server (dnsmasq-base: the binary without the system
  # service) and real clients (dig; glibc's resolver through getent).
  # Findings tests: a real redis-server, started by each test in its pods
  # (the package's own service is not used).
  # python3-venv: scripts/validate-deploy.sh installs its pinned tools in a venv.
  # prometheus: promtool checks and unit-tests the alert rules, and the
  # Prometheus end-to-end test runs the server itself (the package's own
  # service is not used).
  debs+=(podman runc dnsmasq-base bind9-dnsutils redis-server python3-venv prometheus)
  # openssl: scripts/make-collector-cert.sh, which a collector test runs.
  debs+=(openssl)
  # The PostgreSQL incident: a real postgres, started by the test in its
  # own directory. The package's own cluster is not wanted.
  debs+=(postgresql)
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/sockeye.conf
  # chromium: the collector's web view is tested in headless Chromium
  # (collector/tests/ui.rs), with fonts to render its text in screenshots.
  debs+=(chromium fonts-dejavu-core)
  # clickhouse-server/-client: the collector's ClickHouse store tests start
  # their own server on free ports in a temporary directory (the package's
  # service is not used).
  debs+=(clickhouse-server clickhouse-client)
fi
if (( want_matrix )); then
  # cargo xtask matrix boots Debian kernels under QEMU (TCG) with a busybox
  # initramfs.
  debs+=(qemu-system-x86 busybox-static)
fi
if (( want_bench )); then
  # cargo xtask bench: the bpftrace script arm and the iperf3 bulk arm.
  debs+=(bpftrace iperf3)
fi
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if (( ${#missing[@]} )); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Rust toolchains ---------------------------------------------------------
# Both pinned: the stable one in rust-toolchain.toml, the kernel programs'
# nightly in agent-ebpf/rust-toolchain.toml (rustup installs what a
# toolchain file names, from static.rust-lang.org, the first time).
channel() { sed -n 's/^channel *= *"\(.*\)"/\1/p' "$1"; }
stable=$(channel rust-toolchain.toml)
nightly=$(channel agent-ebpf/rust-toolchain.toml)
[[ -n "$stable" && -n "$nightly" ]] || die "no channel in rust-toolchain.toml or agent-ebpf/rust-toolchain.toml"
for tc in "$stable" "$nightly"; do
  rustup toolchain list | grep -q "^$tc" || { log "installing toolchain $tc"; rustup toolchain install "$tc" --profile minimal; }
done
if ! rustup component list --toolchain "$nightly" --installed | grep -q '^rust-src'; then
  log "adding rust-src to $nightly (needed for -Z build-std=core on bpfel-unknown-none)"
  rustup component add rust-src --toolchain "$nightly"
fi
if (( want_test )); then
  # Lints of user space (stable) and of the kernel programs (nightly).
  for tc in "$stable" "$nightly"; do
    for c in clippy rustfmt; do
      rustup component list --toolchain "$tc" --installed | grep -q "^$c" \
        || { log "adding $c to $tc"; rustup component add "$c" --toolchain "$tc"; }
    done
  done
fi

# --- bpf-linker, linked against the nightly's own libLLVM ----------------------
# bpf-linker must use an LLVM with the same major version as the nightly rustc.
# Debian does not ship it, but the nightly carries a shared libLLVM we can link.
llvm_ver=$(rustc +"$nightly" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
# It runs with the nightly's library path (aya-build invokes it through
# `rustup run <nightly>`); if it starts there, it was built against this LLVM.
if ! rustup run "$nightly" bpf-linker --version >/dev/null 2>&1; then
  sysroot=$(rustc +"$nightly" --print sysroot)
  lib=$(ls "$sysroot"/lib/libLLVM.so.* 2>/dev/null | head -n1) || true
  [[ -n "$lib" ]] || die "nightly toolchain at $sysroot has no libLLVM.so.*; cannot build bpf-linker"
  llvm_dir="${XDG_CACHE_HOME:-$HOME/.cache}/sockeye/llvm-${llvm_ver}"
  mkdir -p "$llvm_dir/lib"
  ln -sf "$lib" "$llvm_dir/lib/libLLVM.so"
  log "building bpf-linker against $(basename "$lib") (about 80 s, once)"
  LLVM_PREFIX="$llvm_dir" LD_LIBRARY_PATH="$sysroot/lib" \
    cargo install bpf-linker --force --locked --version '^0.13' --no-default-features --features "llvm-${llvm_ver}"
fi

# --- cargo-fuzz, for the bounded fuzzing run of the DNS parser -----------------
if (( want_test )) && ! command -v cargo-fuzz >/dev/null; then
  log "installing cargo-fuzz (about a minute, once)"
  cargo install cargo-fuzz --locked --version '^0.13'
fi

# --- cargo-deny, for the licence, duplicate and advisory checks -----------------
if (( want_test )) && ! cargo deny --version 2>/dev/null | grep -q '^cargo-deny 0\.20\.'; then
  log "installing cargo-deny (about 6 minutes on two cores, once)"
  cargo install cargo-deny --locked --version '=0.20.2'
fi

# --- Kernel filesystems --------------------------------------------------------
mountpoint -q /sys/kernel/tracing || { log "mounting tracefs at /sys/kernel/tracing"; mount -t tracefs nodev /sys/kernel/tracing; }
mountpoint -q /sys/fs/bpf || { log "mounting bpffs at /sys/fs/bpf"; mount -t bpf bpf /sys/fs/bpf; }
log "ready"
