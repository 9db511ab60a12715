# Strata: the server binary, the built web app and the shipped ladders on Debian 12 with
# FFmpeg's libraries. Used by docker-compose.yml.

FROM rust:1.95-bookworm AS server
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev \
        libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev libsrt-openssl-dev >/dev/null \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY ladders ladders
COPY benches benches
RUN cargo build --release --locked --bin strata

FROM node:20-bookworm AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm install --no-save --no-audit --no-fund --loglevel=error
COPY web .
RUN npm run build

FROM debian:bookworm-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ca-certificates libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 \
        libavfilter8 libavdevice59 libsrt1.5-openssl >/dev/null \
    && rm -rf /var/lib/apt/lists/*
COPY --from=server /src/target/release/strata /usr/local/bin/strata
COPY --from=web /src/web/dist /usr/share/strata/web
COPY ladders /usr/share/strata/ladders
ENV STRATA__DATA_DIR=/var/lib/strata \
    STRATA__HTTP__WEB_ROOT=/usr/share/strata/web \
    STRATA__TRANSCODE__LADDERS=/usr/share/strata/ladders
VOLUME /var/lib/strata
EXPOSE 1935 1936 8080 9000/udp
CMD ["strata", "serve"]
