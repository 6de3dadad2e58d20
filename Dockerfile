# video-server: a multi-stage build; the runtime image holds the binary, its demo clip and a
# config, and runs as an unprivileged user.
#   docker build -t video-server .
#   docker run -p 8090:8090 -p 8091:8091 video-server           # the demo stream
#   docker run -v /etc/video-server:/etc/video-server -p 8090:8090 -p 8091:8091 video-server \
#     --conf /etc/video-server/conf.toml                         # your cameras

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY examples examples
COPY web web
COPY players players
COPY assets assets
# protoc builds the etcd client of the fleet (`--features cluster`, docs/operations.md).
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
RUN cargo build --release --locked --features cluster --bin video-server

FROM debian:bookworm-slim
# ffmpeg decodes H.265 keyframes for /snapshot/{id}.jpg (docs/api.md); nothing else needs it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata ffmpeg \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/video-server --create-home video-server
COPY --from=build /src/target/release/video-server /usr/local/bin/video-server
COPY assets /usr/share/video-server/assets
COPY deploy/conf.docker.toml /etc/video-server/conf.toml
USER video-server
WORKDIR /var/lib/video-server
# The archive (and its S3 upload spool) lives here; mount a volume to keep it.
VOLUME ["/var/lib/video-server/mp4"]
EXPOSE 8090 8091
HEALTHCHECK --interval=30s --timeout=3s CMD ["/usr/local/bin/video-server", "check", "--conf", "/etc/video-server/conf.toml"]
ENTRYPOINT ["/usr/local/bin/video-server"]
CMD ["--conf", "/etc/video-server/conf.toml", "--log-format", "json"]
