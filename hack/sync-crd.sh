#!/usr/bin/env bash
# Regenerates the committed CRD copies from the Rust types (`meteor-operator crd`):
#   crds/meteorapps.yaml and charts/meteor-operator/crds/meteorapps.yaml
# then manifests/install.yaml, which embeds the CRD. Run after changing model/src/api/.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need cargo

tmp="$(mktemp)"
trap 'rm -f "${tmp}"' EXIT
(cd "${ROOT}" && cargo run -q -- crd) >"${tmp}" || die "cargo run -- crd failed"
[[ -s "${tmp}" ]] || die "cargo run -- crd printed nothing"
for dest in crds/meteorapps.yaml charts/meteor-operator/crds/meteorapps.yaml; do
  cp "${tmp}" "${ROOT}/${dest}"
  echo "wrote ${dest}"
done
bash "${ROOT}/hack/install-tools.sh" >/dev/null
bash "${ROOT}/hack/gen-install.sh"
