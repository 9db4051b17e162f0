#!/usr/bin/env bash
# The README's second command (and CI's): installs what the tests need, checks
# formatting and lints, then runs every test: unit tests, privileged
# integration tests (real programs, real sockets, cgroup + netns pods) and
# end-to-end tests with real podman containers; validates the Kubernetes
# manifests in deploy/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test

step() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }

step "format"
cargo fmt --all --check
(cd fuzz && cargo fmt --check)

step "clippy (user space)"
cargo clippy --locked --workspace --exclude sockeye-agent-ebpf --all-targets -- -D warnings

step "clippy (kernel programs, bpf target)"
(cd agent-ebpf && cargo +nightly clippy --locked --release --target bpfel-unknown-none -Z build-std=core -- -D warnings)

step "deployment manifests (Kubernetes schema, agent flags)"
scripts/validate-deploy.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT

step "fuzz: the user-side DNS parser, ${FUZZ_SECONDS:=30} s"
# New corpus entries go to fuzz/corpus (ignored by git); the seeds are read.
# libFuzzer refuses a corpus directory that does not exist (a fresh clone).
mkdir -p fuzz/corpus/dns_record
if ! (cd fuzz && cargo +nightly fuzz run dns_record corpus/dns_record seeds/dns_record -- \
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
# cargo ends with the (empty) doc-test runs: close with the totals instead.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
