# moongate: build stage (Rust toolchain) and a Debian slim runtime running as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# lua/ holds moongate's own Lua modules when the tree has them; the runtime copies it either way.
RUN mkdir -p lua/plugins \
 && cargo build --release --locked --bin moongate \
 && cp target/release/moongate /usr/local/bin/moongate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libpcre2-8-0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /moongate --shell /usr/sbin/nologin moongate \
 && mkdir -p /moongate/conf /moongate/logs \
 && chown -R moongate:moongate /moongate
COPY --from=build /usr/local/bin/moongate /usr/local/bin/moongate
COPY --from=build --chown=moongate:moongate /src/lua /moongate/lua
COPY --from=build --chown=moongate:moongate /src/conf /moongate/conf
USER moongate
WORKDIR /moongate
EXPOSE 9080
ENTRYPOINT ["moongate"]
CMD ["run", "-p", "/moongate"]
