#!/usr/bin/env bash
# The README's second command (and CI's): installs what the tests need, checks
# formatting and lints, then runs every test: unit tests, privileged
# integration tests (real programs, real sockets, cgroup + netns pods),
# end-to-end tests with real podman containers, and the kernel matrix (every
# program loaded and a smoke test on Debian's 6.1 and 6.12 kernels under QEMU
# and on this host's kernel); validates the Kubernetes manifests in deploy/
# and checks and unit-tests the alert rules in deploy/monitoring.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test --matrix

step() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }

step "format"
cargo fmt --all --check
(cd fuzz && cargo fmt --check)

step "clippy (user space)"
cargo clippy --locked --workspace --exclude sockeye-agent-ebpf --all-targets -- -D warnings

step "clippy (kernel programs, bpf target)"
# agent-ebpf/rust-toolchain.toml pins the nightly there.
(cd agent-ebpf && cargo clippy --locked --release --target bpfel-unknown-none -Z build-std=core -- -D warnings)

step "deployment manifests (Kubernetes schema, agent and collector flags)"
scripts/validate-deploy.sh

step "alert rules (promtool: both forms checked, every rule unit-tested)"
deploy/monitoring/generate.sh --check
promtool check rules deploy/monitoring/sockeye-rules.yml
# The PrometheusRule's spec, back as a rules file: what the Operator loads.
rules_from_crd=$(mktemp --suffix=.yml)
sed -n '/^spec:/,$p' deploy/monitoring/prometheusrule.yaml | tail -n +2 | sed 's/^  //' > "$rules_from_crd"
promtool check rules "$rules_from_crd"
rm -f "$rules_from_crd"
(cd deploy/monitoring && promtool test rules sockeye-rules.test.yml)
step "cargo deny: licenses, duplicate crates, sources, advisories"
cargo deny --locked check licenses bans sources
# The advisory database lives on github.com (RustSec), which some machines
# cannot reach (this project's build machine reaches only package
# registries). Then the check is reported as not done, never as passed;
# SOCKEYE_DENY_ADVISORIES=require makes that a failure (CI with network).
if timeout 120 cargo deny --locked fetch db >/dev/null 2>&1; then
  cargo deny --locked check advisories
elif compgen -G "${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/*/crates" >/dev/null; then
  echo "advisories: the database cannot be fetched now; checking against the copy fetched earlier"
  cargo deny --locked check --disable-fetch advisories
elif [[ "${SOCKEYE_DENY_ADVISORIES:-}" == require ]]; then
  echo "advisories: the RustSec database (github.com/rustsec/advisory-db) cannot be fetched, and SOCKEYE_DENY_ADVISORIES=require" >&2
  exit 1
else
  printf '\033[1;33madvisories: NOT CHECKED\033[0m: the RustSec database (github.com/rustsec/advisory-db) cannot be fetched from this machine; run `cargo deny check advisories` where github.com is reachable (set SOCKEYE_DENY_ADVISORIES=require there)\n'
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

step "fuzz: the user-side DNS parser, ${FUZZ_SECONDS:=30} s"
# New corpus entries go to fuzz/corpus (ignored by git); the seeds are read.
# libFuzzer refuses a corpus directory that does not exist (a fresh clone).
mkdir -p fuzz/corpus/dns_record
nightly=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' agent-ebpf/rust-toolchain.toml)
if ! (cd fuzz && cargo +"$nightly" fuzz run dns_record corpus/dns_record seeds/dns_record -- \
      -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048) >"$log" 2>&1; then
  tail -n 40 "$log"
  echo "fuzz: the DNS parser failed; the input that did it is in fuzz/artifacts/dns_record/" >&2
  exit 1
fi
grep -E '^Done [0-9]+ runs' "$log"

step "tests"
# The kernel crate only builds for the bpf target; the agent's build.rs builds it.
set +e
cargo test --locked --workspace --exclude sockeye-agent-ebpf --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# Kernel packages are downloaded once (~/.cache/sockeye/kernels); a guest
# that hangs is killed after --guest-timeout (300 s). About 20 s once the
# release agent is built.
step "kernel matrix (host, Debian 6.1 and 6.12 under QEMU)"
set +e
cargo xtask matrix 2>&1 | tee -a "$log"
matrix_status=${PIPESTATUS[0]}
set -e

# cargo ends with the (empty) doc-test runs: close with the totals instead,
# each kernel of the matrix counting as one test, and the matrix command as
# one failure if it failed with no kernel failing (a build error, or a
# program past twice its recorded verifier complexity).
awk -v matrix_status="$matrix_status" '
  /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  /^kernel matrix: [0-9]+ passed, [0-9]+ failed$/ { p += $3; f += $5; mf += $5 }
  END { if (matrix_status != 0 && mf == 0) f += 1; printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
(( status == 0 && matrix_status == 0 ))
