#!/usr/bin/env bash
# The model crate (model/, package meteor-model) has no Kubernetes client, so the compiler
# refuses an upward import: the API types, builders, plan, status and the replica-set state
# machine cannot reach the API server or the controller's I/O (issue 19).
#   bash hack/check-model.sh      (hack/test-all.sh runs it as its `model` step)
# Checks, with the dependencies resolved for meteor-model alone:
#   1. no client, runtime, driver, TLS or async runtime among its normal and build dependencies
#      (kube-client, kube-runtime, hyper, tower, rustls, tokio, mongodb, ...), nor the operator or
#      the proxy crate;
#   2. its `kube` has only the features the types need: derive (CustomResource, KubeSchema) and
#      cel (validate.rs evaluates the CRD's rules), never client, config, runtime or a TLS one;
#   3. it compiles by itself (`cargo check -p meteor-model --all-targets`). This is the check that
#      refuses a `use kube::Client` in model/: a workspace build (clippy, test) unifies kube's
#      features with the operator's, `client` included, so only the crate's own build lacks it.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${ROOT}"
need cargo

PACKAGE=meteor-model
# Crates that would give the model I/O. A name here is refused whatever version or path.
FORBIDDEN=(kube-client kube-runtime kube-lease-manager hyper hyper-util hyper-rustls hyper-timeout
  tower tower-http rustls tokio-rustls tokio tokio-util mongodb meteor-operator meteor-proxy)
# The only features its kube may have (kube-derive is the optional dependency behind derive).
KUBE_FEATURES_ALLOWED=(cel derive kube-derive)

tree="$(cargo tree --locked -p "${PACKAGE}" -e normal,build --prefix none -f '{p} {f}')" \
  || die "cargo tree -p ${PACKAGE} failed"
# A graph that did not resolve would pass the checks below: kube itself must be in it.
grep -q '^kube v' <<<"${tree}" || die "cargo tree -p ${PACKAGE}: kube not found in its dependencies"

found=()
for name in "${FORBIDDEN[@]}"; do
  if grep -q "^${name} v" <<<"${tree}"; then
    found+=("${name}")
  fi
done
if ((${#found[@]} > 0)); then
  for name in "${found[@]}"; do
    printf 'how %s reaches %s:\n' "${PACKAGE}" "${name}" >&2
    cargo tree --locked -p "${PACKAGE}" -e normal,build -i "${name}" >&2 || true
  done
  die "${PACKAGE} depends on ${found[*]}: the model must not be able to do I/O (see above); keep that in the operator (src/)"
fi
info "${PACKAGE}: none of ${#FORBIDDEN[@]} I/O crates (kube-client, kube-runtime, tokio, mongodb, ...) among its dependencies"

# "kube v5.0.0 cel,derive,kube-derive": the third field lists kube's features (empty when none).
kube_features="$(awk '$1 == "kube" && $2 ~ /^v/ { print $3; exit }' <<<"${tree}")"
bad=()
IFS=, read -r -a features <<<"${kube_features}"
for feature in "${features[@]}"; do
  [[ " ${KUBE_FEATURES_ALLOWED[*]} " == *" ${feature} "* ]] || bad+=("${feature}")
done
((${#bad[@]} == 0)) \
  || die "${PACKAGE}'s kube has the feature(s) ${bad[*]} (all: ${kube_features}); allowed: ${KUBE_FEATURES_ALLOWED[*]} (model/Cargo.toml)"
info "${PACKAGE}: kube features ${kube_features} (allowed: ${KUBE_FEATURES_ALLOWED[*]})"

cargo check --locked -q -p "${PACKAGE}" --all-targets \
  || die "${PACKAGE} does not compile by itself (above): does it use kube's client or something only the operator has?"
info "${PACKAGE} compiles by itself, without kube's client"
