#!/usr/bin/env bash
# The README's first command: installs or checks what the agent needs, builds
# it (kernel programs included) and runs it. Arguments go to sockeye-agent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo build --release --locked -p sockeye-agent
exec target/release/sockeye-agent "$@"
