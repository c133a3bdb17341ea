# syntax=docker/dockerfile:1
#
# shopchat container image: build with the Rust toolchain, run from a small distroless
# image as an unprivileged user.
#
#   docker build -t shopchat .
#   docker run -d --name shopchat -p 127.0.0.1:8000:8000 \
#       -v /var/www/shop/.env:/etc/shopchat/shop.env:ro \
#       -v shopchat-outbox:/var/lib/shopchat \
#       -e DB_HOST=db.internal \
#       shopchat
#
# Configuration as in docs/operations.md: the shop's .env is mounted and read with Laravel's
# rules (SHOPCHAT_ENV_FILE); `-e VAR=value` wins over it (e.g. DB_HOST, which is often
# 127.0.0.1 in the shop's .env but another host from inside a container).

# At least the dependencies' minimum (actix-web: 1.89). Build and runtime are both Debian 12
# (bookworm), so the binary links against the glibc the runtime image has.
ARG RUST_VERSION=1.89

# ---- build ---------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The crate embeds these files at compile time (include_str!).
COPY src ./src
COPY config ./config
COPY docs ./docs
COPY schema ./schema
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin shopchat \
    && strip target/release/shopchat \
    && mkdir -p /out/var/lib/shopchat/outbox \
    && cp target/release/shopchat /out/shopchat

# ---- runtime -------------------------------------------------------------------------------
# glibc, libgcc, CA certificates and tzdata; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /out/shopchat /usr/local/bin/shopchat
# The outbox (pending notification mails) is the only state: keep it on a volume.
COPY --from=build --chown=65532:65532 /out/var/lib/shopchat /var/lib/shopchat

ENV SHOPCHAT_LISTEN=0.0.0.0:8000 \
    SHOPCHAT_OUTBOX_DIR=/var/lib/shopchat/outbox \
    SHOPCHAT_ENV_FILE=/etc/shopchat/shop.env \
    SHOPCHAT_LOG_FORMAT=json

USER 65532:65532
WORKDIR /var/lib/shopchat
VOLUME ["/var/lib/shopchat"]
EXPOSE 8000

# Several containers of this image serve one shop side by side (docs/scaling.md): give each its
# own outbox volume, set SHOPCHAT_RATE_LIMIT_STORE=redis with the shop's REDIS_* so the throttle
# is one budget, SHOPCHAT_INSTANCE to tell them apart in /metrics, and list them in nginx's
# `upstream shopchat`. Replace them one at a time (stop, start, wait for `shopchat health`).
# SIGTERM drains: requests in flight finish within SHOPCHAT_SHUTDOWN_TIMEOUT (30 s); give
# `docker stop` at least that (docker stop -t 40).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/shopchat", "health"]

ENTRYPOINT ["/usr/local/bin/shopchat"]
CMD ["serve"]
