# lightcl's container image: built from source in a Rust image, run from a small Debian one as
# an unprivileged user.
#
#   docker build -t lightcl .          (or: podman build -t lightcl .)
#   docker run --rm lightcl --version
#   docker run -v lightcl-state:/var/lib/lightcl -v /path/to/jwt.hex:/jwt/jwt.hex:ro \
#     -p 9301:9301 lightcl run --network op-mainnet --source URL \
#     --engine-url http://EL:8551 --jwt-secret /jwt/jwt.hex --el-rpc http://EL:8545
#
# The base images are arguments, so that a mirror or a pinned digest can be given
# (--build-arg RUST_IMAGE=... --build-arg RUNTIME_IMAGE=...). The runtime stage runs nothing at
# build time (no RUN), so any image with glibc serves as its base. A prebuilt binary can replace
# the build stage: --build-context build=DIR, with DIR/out/lightcl and an empty DIR/out/state
# (the test in tests/it/container.rs builds the image that way, where no image registry is
# reachable).
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# The image's own toolchain builds it (rust-toolchain.toml would have rustup fetch the lint
# components, which a build behind a proxy or offline mirror may not reach).
RUN rm -f rust-toolchain.toml \
 && cargo build --release --locked -p lightcl --bin lightcl \
 && install -D -m 0755 target/release/lightcl /out/lightcl \
 && install -d -m 0750 /out/state

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=build /out/lightcl /usr/local/bin/lightcl
# The state folder (the finality floor lightcl keeps across restarts): a volume owned by the
# unprivileged user lightcl runs as.
COPY --from=build --chown=10001:10001 /out/state /var/lib/lightcl
USER 10001:10001
# The state folder is lightcl's default; the operations API listens on every interface of the
# container (an environment variable overrides a configuration file: -e to change it).
ENV LIGHTCL_API__LISTEN=0.0.0.0:9301
VOLUME ["/var/lib/lightcl"]
# The operations API: /metrics, /healthz, /readyz, /status.
EXPOSE 9301
# The health check asks port 9301: change both together.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/lightcl", "healthz", "--api", "http://127.0.0.1:9301"]
ENTRYPOINT ["/usr/local/bin/lightcl"]
CMD ["run"]
