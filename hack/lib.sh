# shellcheck shell=bash
# Common helpers for the hack/ and e2e/ scripts. Source it; do not run it.
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Puts the project's pinned tools (.tools/bin, installed by hack/install-tools.sh) first on PATH.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${ROOT}/.tools"
TOOLS_BIN="${TOOLS_DIR}/bin"
export ROOT TOOLS_DIR TOOLS_BIN
case ":${PATH}:" in
  *":${TOOLS_BIN}:"*) ;;
  *) export PATH="${TOOLS_BIN}:${PATH}" ;;
esac

# The Kubernetes version manifests are validated against (kubernetes-validate schemas).
K8S_SCHEMA_VERSION="${K8S_SCHEMA_VERSION:-1.33.0}"
export K8S_SCHEMA_VERSION

# Colour only on a terminal.
if [[ -t 1 ]]; then
  _BOLD=$'\e[1m'; _RED=$'\e[31m'; _GREEN=$'\e[32m'; _RESET=$'\e[0m'
else
  _BOLD=''; _RED=''; _GREEN=''; _RESET=''
fi

header() { printf '\n%s==> %s%s\n' "${_BOLD}" "$*" "${_RESET}"; }
info() { printf '    %s\n' "$*"; }
ok() { printf '%s    ok: %s%s\n' "${_GREEN}" "$*" "${_RESET}"; }
die() { printf '%sERROR: %s%s\n' "${_RED}" "$*" "${_RESET}" >&2; exit 1; }

# need TOOL...: fail with a hint when a tool is missing from PATH.
need() {
  local tool
  for tool in "$@"; do
    command -v "${tool}" >/dev/null 2>&1 || die "'${tool}' not found on PATH; run: bash hack/install-tools.sh"
  done
}

# validate_manifests FILE...: strict offline schema validation (see hack/validate-manifests.py).
validate_manifests() {
  [[ -x "${TOOLS_DIR}/venv/bin/python" ]] || die "${TOOLS_DIR}/venv missing; run: bash hack/install-tools.sh"
  "${TOOLS_DIR}/venv/bin/python" "${ROOT}/hack/validate-manifests.py" \
    --kubernetes-version "${K8S_SCHEMA_VERSION}" "$@"
}
