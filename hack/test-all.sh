#!/usr/bin/env bash
# The project's test command: bash hack/test-all.sh
#
# Runs, in order, failing fast with a clear message:
#   1. tools        hack/install-tools.sh (pinned helm, kubectl, kubernetes-validate in .tools/)
#   2. scripts      shellcheck of hack/, e2e/, bench/ and monitoring/ scripts and .ci/run; the
#                   Python helpers, benchmarks and monitoring tests compile; hadolint of the Dockerfile
#   3. fmt          cargo fmt --all -- --check
#   4. clippy       cargo clippy --workspace --all-targets -- -D warnings
#   5. model        hack/check-model.sh: the model crate (model/, meteor-model) has no Kubernetes
#                   client, runtime, driver or async runtime among its dependencies, its kube only
#                   the derive and cel features, and it compiles by itself (so `kube::Client`
#                   or the controller cannot be imported there)
#   6. test         cargo test --workspace (the operator, the model, the proxy and the plugin
#                   crates), and the scale benchmark at 100 apps, proxy off and on (no write on a
#                   steady resync); the permissions their requests needed equal hack/rbac-used.txt
#   7. crd          `meteor-operator crd` == crds/meteorapps.yaml == the chart's copy
#   8. render       `meteor-operator render` of every examples/*.yaml and e2e/testdata/*.yaml
#                   validates strictly; every e2e/invalid/*.yaml is refused
#   9. chart        helm lint --strict and helm template (default and every-option values),
#                   validated strictly, checked by hack/check-chart.py; unknown values refused;
#                   the dashboards, PrometheusRule and PodMonitor off by default, all there with
#                   every option
#  10. install      manifests/install.yaml is what hack/gen-install.sh generates
#  11. monitoring   monitoring/sync.sh --check; promtool check rules and test rules; every alert
#                   has a firing and a silent test and a runbook; monitoring/live-test.py: every
#                   dashboard query and alert expression against a real Prometheus scraping
#                   proxies under traffic and a running operator (about a minute), and the
#                   dashboard rendered to a PNG
# and ends with a summary line "test-all: N passed, N failed" (N counts steps).
# Run some steps only: bash hack/test-all.sh chart install   (tools always runs first)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${ROOT}"

CHART="charts/meteor-operator"
ALL_VALUES="${CHART}/ci/all-options-values.yaml"
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

STEPS=(tools scripts fmt clippy model test crd render chart install monitoring)
passed=0
current=""

summary() {
  local failed="$1"
  echo
  printf 'test-all: %d passed, %d failed\n' "${passed}" "${failed}"
}

# Runs when any command fails under set -e (or a step calls fail).
on_error() {
  local rc=$?
  trap - ERR
  printf '%sFAILED: step "%s" (exit %d)%s\n' "${_RED}" "${current}" "${rc}" "${_RESET}" >&2
  summary 1
  exit "${rc}"
}
trap on_error ERR
set -o errtrace

fail() {
  printf '%sERROR: %s%s\n' "${_RED}" "$*" "${_RESET}" >&2
  return 1
}

step() {
  current="$1"
  shift
  header "[$((passed + 1))/${TOTAL}] ${current}: $*"
}

done_step() {
  ok "${current}"
  passed=$((passed + 1))
}

# meteor-operator CLI through cargo (built once by the test step).
operator() { cargo run -q --bin meteor-operator -- "$@"; }

# ------------------------------------------------------------------------------------------------
step_tools() {
  step tools "install pinned tools into .tools/"
  bash hack/install-tools.sh
  need helm kubectl kubernetes-validate shellcheck hadolint prometheus promtool
  done_step
}

# ------------------------------------------------------------------------------------------------
step_scripts() {
  step scripts "shellcheck of hack/, e2e/, bench/, monitoring/, .ci/run; Python compiles; hadolint Dockerfile"
  local -a scripts
  mapfile -t scripts < <(find hack e2e bench monitoring -name '*.sh' -type f | sort)
  shellcheck -x "${scripts[@]}" .ci/run || fail "shellcheck found problems (above)"
  info "shellcheck: ${#scripts[@]} scripts and .ci/run"
  "${TOOLS_DIR}/venv/bin/python" -m py_compile hack/*.py bench/*.py monitoring/*.py e2e/*/*.py ||
    fail "a Python helper, benchmark or monitoring test does not compile"
  hadolint Dockerfile || fail "hadolint found problems in the Dockerfile (above)"
  done_step
}

# ------------------------------------------------------------------------------------------------
step_fmt() {
  step fmt "cargo fmt --all -- --check"
  cargo fmt --all -- --check || fail "code is not formatted; fix: cargo fmt --all"
  done_step
}

# ------------------------------------------------------------------------------------------------
step_clippy() {
  step clippy "cargo clippy --workspace --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets -- -D warnings || fail "clippy found problems (see above)"
  done_step
}

# ------------------------------------------------------------------------------------------------
step_model() {
  step model "the model crate has no Kubernetes client (hack/check-model.sh)"
  bash hack/check-model.sh || fail "the model crate (model/) can reach the API server or does not compile by itself (above)"
  done_step
}

# ------------------------------------------------------------------------------------------------
step_test() {
  step test "cargo test --workspace"
  # Every fake API server records the permissions its requests needed (tests/support/rbac.rs; the
  # proxy crate's tests make no API request).
  bash hack/sync-rbac.sh --clear
  cargo test --workspace 2>&1 | tee "${WORK}/cargo-test.log" || fail "cargo test --workspace failed (see above)"
  grep -q '^test result: ' "${WORK}/cargo-test.log" || fail "cargo test printed no 'test result:' line"
  # Totals over every test binary and doc-test run of every crate.
  awk '/^test result: /{
         for (i = 1; i <= NF; i++) {
           if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i
         }
         n++
       }
       END { printf "    cargo test: %d tests passed, %d failed, %d ignored in %d runs\n", p, f, g, n
           if (p == 0) exit 1 }' \
    "${WORK}/cargo-test.log" || fail "cargo test ran no test"
  # The scale benchmark at a small size (debug build), with the proxy off and on: it fails if a
  # steady resync writes, and running it keeps it from rotting.
  METEOR_BENCH_APPS=100 cargo test --bench scale 2>&1 | tail -12 \
    || fail "the scale benchmark failed (cargo test --bench scale)"
  METEOR_BENCH_PROXY=1 METEOR_BENCH_APPS=100 cargo test --bench scale 2>&1 | tail -12 \
    || fail "the scale benchmark with the proxy on failed (METEOR_BENCH_PROXY=1)"
  bash hack/sync-rbac.sh --collect "${WORK}/rbac-used.txt"
  if ! diff -u hack/rbac-used.txt "${WORK}/rbac-used.txt" >"${WORK}/rbac.diff"; then
    cat "${WORK}/rbac.diff"
    fail "the permissions the tests' requests needed differ from hack/rbac-used.txt (diff above: - committed, + used); fix: bash hack/sync-rbac.sh (and make the chart's roles match it)"
  fi
  info "hack/rbac-used.txt: the $(grep -vc '^#' hack/rbac-used.txt) permissions the tests' requests needed"
  done_step
}

# ------------------------------------------------------------------------------------------------
step_crd() {
  step crd "generated CRD matches the committed copies"
  operator crd >"${WORK}/crd.yaml" || fail "meteor-operator crd failed"
  [[ -s "${WORK}/crd.yaml" ]] || fail "meteor-operator crd printed nothing"
  for committed in crds/meteorapps.yaml "${CHART}/crds/meteorapps.yaml"; do
    if ! diff -u "${committed}" "${WORK}/crd.yaml" >"${WORK}/crd.diff"; then
      cat "${WORK}/crd.diff"
      fail "${committed} differs from \`cargo run -- crd\` (diff above: - committed, + generated); fix: bash hack/sync-crd.sh"
    fi
    info "${committed} is up to date"
  done
  validate_manifests "${WORK}/crd.yaml"
  done_step
}

# ------------------------------------------------------------------------------------------------
step_render() {
  local example out bad expect message
  local -a examples testdata invalid
  step render "render examples/*.yaml and e2e/testdata/*.yaml (strict Kubernetes ${K8S_SCHEMA_VERSION} schemas); refuse e2e/invalid/*.yaml"
  shopt -s nullglob
  examples=(examples/*.yaml)
  testdata=(e2e/testdata/*.yaml)
  invalid=(e2e/invalid/*.yaml)
  shopt -u nullglob
  ((${#examples[@]} > 0)) || fail "no examples/*.yaml to render"
  ((${#invalid[@]} > 0)) || fail "no e2e/invalid/*.yaml"
  # The examples themselves: Kubernetes objects and MeteorApps (CRD structural schema; CEL is
  # checked by render below and by the apiserver in e2e).
  validate_manifests --crd crds/meteorapps.yaml "${examples[@]}" "${testdata[@]}"
  local n=0
  for example in "${examples[@]}" "${testdata[@]}"; do
    n=$((n + 1))
    out="${WORK}/render-${n}.yaml"
    operator render -f "${example}" >"${out}" || fail "meteor-operator render -f ${example} failed"
    validate_manifests --crd crds/meteorapps.yaml "${out}" \
      || fail "the objects rendered from ${example} do not validate (above)"
  done
  for bad in "${invalid[@]}"; do
    expect="$(sed -n '1s/^# expect: //p' "${bad}")"
    [[ -n "${expect}" ]] || fail "${bad}: first line must be '# expect: <message substring>'"
    if operator render -f "${bad}" >"${WORK}/out" 2>"${WORK}/err"; then
      fail "meteor-operator render -f ${bad} succeeded; it must refuse it (${expect})"
    fi
    # Refused for the intended fault: the message names the field (a CEL rule), or the field is
    # missing altogether (a required field: serde's "missing field `key`").
    message="$(tr '\n' ' ' <"${WORK}/err")"
    if [[ "${message}" != *"${expect}"* && "${message}" != *"missing field \`${expect##*.}\`"* ]]; then
      fail "meteor-operator render -f ${bad} refused it, but not for ${expect}: ${message}"
    fi
    info "refused ${bad}: ${message:0:160}"
  done
  done_step
}

# ------------------------------------------------------------------------------------------------
step_chart() {
  step chart "helm lint --strict and helm template of ${CHART}"
  helm lint --strict "${CHART}" || fail "helm lint --strict ${CHART} (default values) failed"
  helm lint --strict "${CHART}" -f "${ALL_VALUES}" || fail "helm lint --strict ${CHART} -f ${ALL_VALUES} failed"
  helm template meteor-operator "${CHART}" --namespace meteor-system --include-crds \
    >"${WORK}/chart-default.yaml" || fail "helm template (default values) failed"
  helm template meteor-operator "${CHART}" --namespace meteor-system --include-crds -f "${ALL_VALUES}" \
    >"${WORK}/chart-all.yaml" || fail "helm template -f ${ALL_VALUES} failed"
  info "ServiceMonitor (monitoring.coreos.com/v1) is not in the Kubernetes schemas: hack/validate-manifests.py checks it against its own small schema"
  validate_manifests "${WORK}/chart-default.yaml" "${WORK}/chart-all.yaml"
  # The chart's container args must be flags the operator knows.
  operator run --help >"${WORK}/run-help.txt" || fail "meteor-operator run --help failed"
  "${TOOLS_DIR}/venv/bin/python" hack/check-chart.py --run-help "${WORK}/run-help.txt" \
    "${WORK}/chart-default.yaml" "${WORK}/chart-all.yaml"
  # NOTES.txt renders and tells how to wait for an app (helm install --dry-run needs no cluster).
  local values_args notes
  for values_args in "" "-f ${ALL_VALUES}"; do
    # shellcheck disable=SC2086 # values_args is empty or "-f FILE"
    notes="$(KUBECONFIG=/dev/null helm install meteor-operator "${CHART}" --namespace meteor-system \
      --dry-run=client ${values_args} 2>&1 | sed -n '/^NOTES:/,$p')"
    [[ "${notes}" == *"kubectl wait --for=condition=Ready meteorapp/"* ]] \
      || fail "NOTES.txt (values: ${values_args:-default}) does not render the kubectl wait hint: ${notes}"
  done
  info "NOTES.txt renders (default and every-option values)"
  # Monitoring is off by default and all there with every option.
  local kind want_default want_all got
  for kind in PrometheusRule PodMonitor grafana_dashboard; do
    case "${kind}" in
      grafana_dashboard) want_default=0 want_all="$(find monitoring/dashboards -name '*.json' | wc -l)" ;;
      *) want_default=0 want_all=1 ;;
    esac
    for file in chart-default chart-all; do
      if [[ "${kind}" == grafana_dashboard ]]; then
        got="$(grep -c '^    grafana_dashboard: "1"$' "${WORK}/${file}.yaml" || true)"
      else
        got="$(grep -c "^kind: ${kind}$" "${WORK}/${file}.yaml" || true)"
      fi
      local want="${want_default}"
      [[ "${file}" == chart-all ]] && want="${want_all}"
      [[ "${got}" == "${want}" ]] || fail "${file}: ${got} ${kind} objects, want ${want}"
    done
  done
  info "dashboards, PrometheusRule, PodMonitor: off by default, all there with every option"
  # The values schema is strict: an unknown key must be refused.
  for bad_value in bogus=1 image.bogus=1 serviceMonitor.bogus=1 logFormat=xml replicas=0 \
    prometheusRule.bogus=1 grafanaDashboards.bogus=1 proxyPodMonitor.bogus=1; do
    if helm template meteor-operator "${CHART}" --set "${bad_value}" >/dev/null 2>"${WORK}/err"; then
      fail "helm template --set ${bad_value} succeeded; values.schema.json must refuse it"
    fi
    info "refused --set ${bad_value}"
  done
  done_step
}

# ------------------------------------------------------------------------------------------------
step_install() {
  step install "manifests/install.yaml is up to date"
  bash hack/gen-install.sh "${WORK}/install.yaml" >/dev/null
  if ! diff -u manifests/install.yaml "${WORK}/install.yaml" >"${WORK}/install.diff"; then
    cat "${WORK}/install.diff"
    fail "manifests/install.yaml is stale (diff above: - committed, + generated); fix: bash hack/gen-install.sh"
  fi
  validate_manifests "${WORK}/install.yaml"
  done_step
}

# ------------------------------------------------------------------------------------------------
step_monitoring() {
  step monitoring "alert rules (promtool), dashboards and alerts against a live Prometheus"
  bash monitoring/sync.sh --check \
    || fail "the chart's dashboards or monitoring/rules/meteor-operator.rules.yaml are stale (diff above); fix: bash monitoring/sync.sh"
  promtool check rules monitoring/rules/meteor-operator.rules.yaml || fail "promtool check rules failed (above)"
  (cd monitoring/rules && promtool test rules meteor-operator.test.yaml) || fail "promtool test rules failed (above)"
  "${TOOLS_DIR}/venv/bin/python" monitoring/check-rules.py || fail "an alert lacks a test case or a runbook (above)"
  # The operator binary serves both sides: `run` against a fake API server, and `proxy`.
  cargo build -q --bin meteor-operator || fail "cargo build --bin meteor-operator failed"
  local rc=0
  "${TOOLS_DIR}/venv/bin/python" monitoring/live-test.py \
    --operator "${CARGO_TARGET_DIR:-target}/debug/meteor-operator" --png "${WORK}/dashboard-app.png" || rc=$?
  ((rc == 0)) || fail "monitoring/live-test.py failed (exit ${rc}, above)"
  done_step
}

# ------------------------------------------------------------------------------------------------
selected=("$@")
if ((${#selected[@]} == 0)); then
  selected=("${STEPS[@]}")
fi
for name in "${selected[@]}"; do
  [[ " ${STEPS[*]} " == *" ${name} "* ]] || die "unknown step '${name}'; steps: ${STEPS[*]}"
done
# The tools step always runs first: the other steps need its tools.
[[ "${selected[0]}" == tools ]] || selected=(tools "${selected[@]}")
TOTAL=${#selected[@]}
for name in "${selected[@]}"; do
  "step_${name}"
done
summary 0
