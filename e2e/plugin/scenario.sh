# shellcheck shell=bash
# plugin: `kubectl meteor` (plugin/, the kubectl-meteor binary) against the cluster, as a user
# with the suite's kubeconfig runs it: status of the base app (its conditions, pods with their
# template, sessions read through the API server's pod proxy from each proxy pod), park and
# unpark (replicas remembered and given back), restart (a new pod template the operator rolls).
# Sourced by e2e/run.sh.

scenario_plugin() {
  ensure_app_ready
  local bin="${CARGO_TARGET_DIR:-${ROOT}/target}/debug/kubectl-meteor" out status template before
  log "building the plugin (cargo build -p kubectl-meteor)"
  (cd "${ROOT}" && cargo build -q -p kubectl-meteor) || fail "cargo build -p kubectl-meteor failed"
  [[ -x "${bin}" ]] || fail "${bin} not found after cargo build"
  mkdir -p "${E2E_OUT}/plugin"
  # kubectl finds the plugin on PATH, as after `krew install` or a copy into ~/bin.
  ln -sf "${bin}" "${E2E_OUT}/plugin/kubectl-meteor"
  local path="${E2E_OUT}/plugin:${PATH}"
  meteor() { PATH="${path}" kubectl meteor -n "${NS}" --request-timeout 20s "$@"; }

  out="$(meteor status "${APP}" 2>&1)" || fail "kubectl meteor status ${APP} failed: ${out}"
  printf '%s\n' "${out}" | sed 's/^/      /' | head -40
  grep -q "Ready" <<<"${out}" || fail "kubectl meteor status ${APP} shows no Ready condition"
  template="$(get "deployment/${APP}" '{.spec.template.metadata.labels.meteorfleet\.dev/template-hash}')"
  # The plugin shows a template as its first 10 characters, as kubectl shows pod-template-hash.
  grep -q "${template:0:10}" <<<"${out}" || fail "kubectl meteor status ${APP} does not show the pods' template ${template:0:10}"
  log "ok: kubectl meteor status ${APP} shows its conditions and its pods' template ${template}"

  status="$(meteor sessions "${APP}" -o json 2>"${E2E_OUT}/plugin/sessions.err")" || fail "kubectl meteor sessions ${APP} failed: $(cat "${E2E_OUT}/plugin/sessions.err")"
  python3 -c '
import json, sys
report = json.loads(sys.argv[1])
answered = [p for p in report["proxies"] if p.get("answered")]
assert report["counted"] and len(answered) == 2, report
print("      proxies answered: %d, app pods: %d, open sessions: %d" % (len(answered), len(report["pods"]), report["total"]))
' "${status}" || fail "kubectl meteor sessions ${APP} -o json: want both proxy pods to answer through the API server's pod proxy: ${status:0:600}"
  log "ok: kubectl meteor sessions ${APP} read both proxy pods through the API server's pod proxy"

  before="$(get "meteorapp/${APP}" '{.spec.replicas}')"
  meteor park "${APP}" >/dev/null || fail "kubectl meteor park ${APP} failed"
  wait_field 60 "deployment/${APP}" '{.spec.replicas}' 0
  wait_condition 120 "meteorapp/${APP}" Ready True
  assert_eq "$(cond "meteorapp/${APP}" Ready reason)" Parked "Ready reason once parked"
  meteor unpark "${APP}" >/dev/null || fail "kubectl meteor unpark ${APP} failed"
  wait_field 60 "deployment/${APP}" '{.spec.replicas}' "${before}"
  wait_ready "meteorapp/${APP}"
  log "ok: kubectl meteor park/unpark: replicas 0, Ready=True Parked, then ${before} again"

  meteor restart "${APP}" >/dev/null || fail "kubectl meteor restart ${APP} failed"
  wait_until 120 "deployment/${APP} rolled to a new template" field_is_not "deployment/${APP}" \
    '{.spec.template.metadata.labels.meteorfleet\.dev/template-hash}' "${template}"
  wait_ready "meteorapp/${APP}"
  log "ok: kubectl meteor restart: a new pod template, rolled by the operator, Ready again"
  # Leave the base app as ensure_app_ready makes it.
  k patch "meteorapp/${APP}" --type=json -p '[{"op":"remove","path":"/spec/podAnnotations/meteorfleet.dev~1restartedAt"}]' >/dev/null 2>&1 || true
}
