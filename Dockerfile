# syntax=docker/dockerfile:1
# The meteor-operator image: a static-ish Rust binary on distroless (glibc, CA certificates, nonroot).
#   docker build -t meteor-operator:dev .

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src

# 1. Dependencies only, cached until a Cargo.toml, Cargo.lock or benches/ change: build them
#    against dummy crates with the real manifests (the workspace: the operator at the root, the
#    model crate in model/, the proxy crate in proxy/, the kubectl plugin in plugin/, which the
#    image does not build but the workspace names). (benches/ is copied because Cargo.toml names
#    a bench target; `cargo build` does not compile it.)
COPY Cargo.toml Cargo.lock ./
COPY model/Cargo.toml ./model/
COPY proxy/Cargo.toml ./proxy/
COPY plugin/Cargo.toml ./plugin/
COPY benches ./benches
RUN mkdir -p src model/src proxy/src plugin/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && touch model/src/lib.rs \
    && echo 'fn main() {}' > proxy/src/main.rs \
    && touch proxy/src/lib.rs \
    && echo 'fn main() {}' > plugin/src/main.rs \
    && touch plugin/src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src model/src proxy/src \
        target/release/meteor-operator* \
        target/release/deps/meteor_operator-* \
        target/release/deps/libmeteor_operator-* \
        target/release/.fingerprint/meteor-operator-* \
        target/release/deps/meteor_model-* \
        target/release/deps/libmeteor_model-* \
        target/release/.fingerprint/meteor-model-* \
        target/release/deps/meteor_proxy-* \
        target/release/deps/libmeteor_proxy-* \
        target/release/.fingerprint/meteor-proxy-*

# 2. The operator itself, with the model and proxy crates (their sources only, not their tests).
COPY src ./src
COPY model/src ./model/src
COPY proxy/src ./proxy/src
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
