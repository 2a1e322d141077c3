# syntax=docker/dockerfile:1
# The meteor-operator image: a static-ish Rust binary on distroless (glibc, CA certificates, nonroot).
#   docker build -t meteor-operator:dev .

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src

# 1. Dependencies only, cached until Cargo.toml, Cargo.lock or benches/ change: build them against
#    a dummy crate with the real manifests. (benches/ is copied because Cargo.toml names a bench
#    target; `cargo build` does not compile it.)
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src \
        target/release/meteor-operator* \
        target/release/deps/meteor_operator-* \
        target/release/deps/libmeteor_operator-* \
        target/release/.fingerprint/meteor-operator-*

# 2. The operator itself.
COPY src ./src
RUN cargo build --release --locked --bin meteor-operator \
    && install -m 0755 target/release/meteor-operator /meteor-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="meteor-operator" \
      org.opencontainers.image.description="A Kubernetes operator that runs fleets of Meteor.js apps" \
      org.opencontainers.image.source="https://github.com/meteorfleet/meteor-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /meteor-operator /meteor-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/meteor-operator"]
CMD ["run"]
