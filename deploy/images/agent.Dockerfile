# sockeye-agent image. Build from the repository root:
#
#   docker build -f deploy/images/agent.Dockerfile -t sockeye-agent:0.1.0 .
#
# Stage 1 builds the kernel programs (nightly + bpf-linker, as
# scripts/bootstrap.sh does on a host) and the agent; stage 2 is a small
# runtime image with only the binary and glibc.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# The toolchain files first (they name the pinned stable and nightly), so
# the toolchain layers are cached across source changes.
COPY rust-toolchain.toml ./
COPY agent-ebpf/rust-toolchain.toml agent-ebpf/
# The kernel programs build with the pinned nightly's build-std; bpf-linker
# links against that nightly's own libLLVM (Debian has no matching LLVM).
RUN nightly="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' agent-ebpf/rust-toolchain.toml)" \
 && rustup toolchain install "$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)" --profile minimal \
 && rustup toolchain install "$nightly" --profile minimal --component rust-src \
 && sysroot="$(rustc +"$nightly" --print sysroot)" \
 && llvm_ver="$(rustc +"$nightly" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')" \
 && mkdir -p /opt/llvm/lib \
 && ln -s "$(ls "$sysroot"/lib/libLLVM.so.* | head -n1)" /opt/llvm/lib/libLLVM.so \
 && LLVM_PREFIX=/opt/llvm LD_LIBRARY_PATH="$sysroot/lib" \
    cargo install bpf-linker --locked --version '^0.13' --no-default-features --features "llvm-${llvm_ver}"
COPY . .
RUN cargo build --release --locked -p sockeye-agent -p sockeye-cli \
 && cp target/release/sockeye-agent target/release/sockeye /

# distroless/cc: glibc and libgcc, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /sockeye-agent /usr/bin/sockeye-agent
# The CLI, for `kubectl exec ... -- sockeye conns` against the agent's socket.
COPY --from=build /sockeye /usr/bin/sockeye
# Runs as uid 0 with every capability dropped except the few the DaemonSet
# adds (Kubernetes gives added capabilities to uid 0 only).
USER 0
ENTRYPOINT ["/usr/bin/sockeye-agent"]
