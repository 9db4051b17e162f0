#!/usr/bin/env bash
# The README's first command: installs or checks what the agent needs, builds
# the agent (kernel programs included) and the CLI, and runs the agent with
# an embedded collector, showing the live table. Arguments go to
# sockeye-agent (they replace the default --collector embedded only if they
# name another --collector).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo build --release --locked -p sockeye-agent
args=("$@")
if [[ " ${args[*]-} " != *" --collector"* ]]; then
  args=(--collector embedded "${args[@]}")
fi
exec target/release/sockeye-agent "${args[@]}"
