# sockeye-collector image. Build from the repository root:
#
#   docker build -f deploy/images/collector.Dockerfile -t sockeye-collector:0.1.0 .
#
# The collector needs no kernel programs: a plain stable build.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sockeye-collector \
 && cp target/release/sockeye-collector /sockeye-collector

# distroless/cc:nonroot: glibc, no shell, uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /sockeye-collector /usr/bin/sockeye-collector
USER 65532:65532
EXPOSE 7070
VOLUME ["/var/lib/sockeye"]
ENTRYPOINT ["/usr/bin/sockeye-collector"]
CMD ["--listen=0.0.0.0:7070", "--data-dir=/var/lib/sockeye"]
