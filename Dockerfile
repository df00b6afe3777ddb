# mcp-proxy and mcpctl in one image. Build from the repository root:
#   docker build -t mcp-proxy .
# Run (io_uring needs locked memory and, under Docker's default seccomp profile, the io_uring
# system calls; see "What the host must allow" in README.md):
#   docker run --rm --ulimit memlock=-1 --security-opt seccomp=unconfined \
#     -p 8080:8080 -p 127.0.0.1:8085:8085 -v "$PWD/mcp-proxy.toml:/etc/mcp-proxy/mcp-proxy.toml:ro" mcp-proxy
# Inside the container `mcpctl` finds the proxy's generated admin token with no setting:
#   docker exec CONTAINER mcpctl health

# The build stage runs the same build command as CI (tests/run.sh), so the binaries copied
# below are the ones the tests ran against.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace

FROM debian:bookworm-slim
COPY --from=build /src/target/release/mcp-proxy /usr/local/bin/mcp-proxy
COPY --from=build /src/target/release/mcpctl /usr/local/bin/mcpctl
# An unprivileged user; its state directory keeps the generated admin token and the servers
# added through the admin API across restarts (mount a volume there to keep them).
RUN useradd --system --uid 10001 --home-dir /var/lib/mcp-proxy --create-home --shell /usr/sbin/nologin mcp-proxy
USER 10001
WORKDIR /var/lib/mcp-proxy
VOLUME ["/var/lib/mcp-proxy"]
# 8080: the MCP endpoint (/mcp); 8085: the admin port (/metrics, /healthz, /readyz, the API).
EXPOSE 8080 8085
ENTRYPOINT ["/usr/local/bin/mcp-proxy"]
CMD ["--config", "/etc/mcp-proxy/mcp-proxy.toml"]
