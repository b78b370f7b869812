# Multi-stage build: a static-ish release binary on a small runtime image, non-root by
# default (the DaemonSet runs it as root with only DAC_READ_SEARCH: see daemonset.yaml).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/at-forwarder

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/at-forwarder /usr/local/bin/at-forwarder
USER 10001:10001
EXPOSE 24231
ENTRYPOINT ["/usr/local/bin/at-forwarder"]
CMD ["run", "--config", "/etc/at-forwarder/logging-activity-tracker.conf"]
