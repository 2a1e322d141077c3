# shellcheck shell=bash disable=SC2034
# Helpers for e2e/run.sh. Source it; do not run it.
# shellcheck source=../hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

# --- settings (environment) ------------------------------------------------------------------
# E2E_OPERATOR      incluster (default): install the chart and run the operator image in the
#                   cluster; local: install the CRD only and run `cargo run -- run` on this machine.
# E2E_INSTALL       helm (default) or manifest (kubectl apply manifests/install.yaml); incluster only.
# E2E_IMAGE         operator image for incluster (default meteor-operator:e2e, as built and loaded
#                   into kind in e2e/README.md).
# E2E_NAMESPACE     namespace the scenarios run in (default meteor-e2e); deleted at the end.
# E2E_KEEP          1: keep the namespace (and a local operator's log) for debugging.
# E2E_TIMEOUT       seconds for an app to become Ready (default 300).
# E2E_ADMIN_ADDR    admin address of a local operator (default 127.0.0.1:18080).
# E2E_FAILOVER_SECONDS  bound of the failover scenario (default 60).
# E2E_SOCKJS_IMAGE  app image of the routing scenario (default meteor-e2e-sockjs:e2e, built from
#                   e2e/routing/Dockerfile and loaded into kind as e2e/README.md says).
# E2E_AUTOSCALING_LOAD  concurrent request loops of the autoscaling scenario's load pod (default
#                   2, about 1/3 core each; see e2e/README.md, The autoscaling scenario).
# E2E_OPERATOR_BIN  local only: run this operator binary instead of building one with cargo build.
# E2E_CLUSTER       kind (default: any cluster with kubelets, port-forwards, DNS) or loopback (set
#                   by hack/e2e-local.sh: the control plane of ../shared/cluster; see the end of
#                   this file and e2e/README.md, On the loopback control plane).
# E2E_POD_LOGS      loopback only: the folder of the pods' logs (NAMESPACE.POD.log), set by
#                   hack/e2e-local.sh.
# The proxy pods run E2E_IMAGE in both modes: the chart hands it to the operator
# (METEOR_OPERATOR_PROXY_IMAGE), and a local operator is given it the same way.
E2E_OPERATOR="${E2E_OPERATOR:-incluster}"
E2E_INSTALL="${E2E_INSTALL:-helm}"
E2E_IMAGE="${E2E_IMAGE:-meteor-operator:e2e}"
E2E_NAMESPACE="${E2E_NAMESPACE:-meteor-e2e}"
E2E_KEEP="${E2E_KEEP:-0}"
E2E_TIMEOUT="${E2E_TIMEOUT:-300}"
E2E_ADMIN_ADDR="${E2E_ADMIN_ADDR:-127.0.0.1:18080}"
E2E_SOCKJS_IMAGE="${E2E_SOCKJS_IMAGE:-meteor-e2e-sockjs:e2e}"
E2E_AUTOSCALING_LOAD="${E2E_AUTOSCALING_LOAD:-2}"
E2E_CLUSTER="${E2E_CLUSTER:-kind}"
E2E_POD_LOGS="${E2E_POD_LOGS:-}"
OPERATOR_NAMESPACE="meteor-system"
OPERATOR_RELEASE="meteor-operator"
OPERATOR_SA="system:serviceaccount:${OPERATOR_NAMESPACE}:${OPERATOR_RELEASE}"
E2E_DIR="${ROOT}/e2e"
E2E_OUT="${E2E_DIR}/_out"
APP="e2e-app"
NS="${E2E_NAMESPACE}"
export E2E_OPERATOR E2E_INSTALL E2E_IMAGE E2E_NAMESPACE E2E_KEEP E2E_TIMEOUT E2E_ADMIN_ADDR E2E_SOCKJS_IMAGE NS APP

# --- logging and assertions ------------------------------------------------------------------
log() { printf '    %s\n' "$*"; }

# fail MESSAGE: ends the current scenario (each runs in its own subshell).
fail() {
  printf '%s    FAIL: %s%s\n' "${_RED}" "$*" "${_RESET}" >&2
  exit 1
}

# k ARGS...: kubectl in the e2e namespace.
k() { kubectl -n "${NS}" "$@"; }

# skip WHY: ends a scenario as SKIP (it cannot run on this cluster or with these settings).
SKIP_STATUS=3
skip() {
  log "SKIP: $*"
  exit "${SKIP_STATUS}"
}

# get RESOURCE JSONPATH: one field ('' when the object or the field is missing).
get() { k get "$1" -o "jsonpath=$2" 2>/dev/null || true; }

# cond RESOURCE TYPE FIELD: a field (status, reason, message) of a status condition.
cond() { get "$1" "{.status.conditions[?(@.type==\"$2\")].$3}"; }

assert_eq() { # ACTUAL EXPECTED WHAT
  [[ "$1" == "$2" ]] || fail "$3: got '$1', want '$2'"
  log "ok: $3 = '$2'"
}

assert_contains() { # HAYSTACK NEEDLE WHAT
  [[ "$1" == *"$2"* ]] || fail "$3: '$2' not found in: $1"
  log "ok: $3 contains '$2'"
}

assert_exists() { # RESOURCE
  k get "$1" -o name >/dev/null 2>&1 || fail "$1 does not exist in ${NS}"
  log "ok: $1 exists"
}

assert_absent() { # RESOURCE
  if k get "$1" -o name >/dev/null 2>&1; then fail "$1 exists in ${NS}, want none"; fi
  log "ok: $1 does not exist"
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 2 s until it succeeds; bounded.
wait_until() {
  local timeout="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for ${what}"
    sleep 2
  done
  log "ok: ${what}"
}

# field_is RESOURCE JSONPATH VALUE: true when the field has that value (for wait_until).
field_is() { [[ "$(get "$1" "$2")" == "$3" ]]; }
field_is_not() { [[ "$(get "$1" "$2")" != "$3" ]]; }
exists() { k get "$1" -o name >/dev/null 2>&1; }
absent() { ! exists "$1"; }

# wait_field SECONDS RESOURCE JSONPATH VALUE
wait_field() {
  local timeout="$1" res="$2" path="$3" want="$4"
  local deadline=$((SECONDS + timeout))
  until field_is "${res}" "${path}" "${want}"; do
    ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for ${res} ${path} == '${want}' (now '$(get "${res}" "${path}")')"
    sleep 2
  done
  log "ok: ${res} ${path} = '${want}'"
}

# condition_is RESOURCE TYPE STATUS [REASON [GENERATION]]: true when the condition has that status
# (and reason, and observedGeneration); for wait_until.
condition_is() {
  [[ "$(cond "$1" "$2" status)" == "$3" ]] || return 1
  [[ -z "${4:-}" || "$(cond "$1" "$2" reason)" == "$4" ]] || return 1
  [[ -z "${5:-}" || "$(cond "$1" "$2" observedGeneration)" == "$5" ]]
}

# wait_condition SECONDS RESOURCE TYPE STATUS [REASON]: waits for a condition by polling (kubectl
# wait would accept a condition left over from before the change under test).
wait_condition() {
  local timeout="$1" res="$2" type="$3" status="$4" reason="${5:-}"
  local deadline=$((SECONDS + timeout))
  until condition_is "${res}" "${type}" "${status}" "${reason}"; do
    if ((SECONDS >= deadline)); then
      fail "timed out after ${timeout}s waiting for ${res} ${type}=${status}${reason:+ (${reason})}; now: $(cond "${res}" "${type}" status) $(cond "${res}" "${type}" reason): $(cond "${res}" "${type}" message)"
    fi
    sleep 2
  done
  log "ok: ${res} ${type}=${status}${reason:+ reason ${reason}}"
}

# wait_ready RESOURCE [SECONDS]: status caught up with the spec, then kubectl wait for Ready.
wait_ready() {
  local res="$1" timeout="${2:-${E2E_TIMEOUT}}"
  wait_until "${timeout}" "${res} observedGeneration == generation" observed_current "${res}"
  k wait --for=condition=Ready "${res}" --timeout="${timeout}s" >/dev/null \
    || fail "${res} not Ready within ${timeout}s: $(cond "${res}" Ready reason): $(cond "${res}" Ready message)"
  log "ok: ${res} Ready"
}
observed_current() {
  local gen obs
  gen="$(get "$1" '{.metadata.generation}')"
  obs="$(get "$1" '{.status.observedGeneration}')"
  [[ -n "${gen}" && "${gen}" == "${obs}" ]]
}

# assert_serving: meteorapp/${APP} is Ready=True right now (a failed read is no sample).
assert_serving() {
  local ready
  ready="$(k get "meteorapp/${APP}" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" \
    || return 0
  [[ "${ready}" == True ]] \
    || fail "meteorapp/${APP} Ready=${ready:-<unset>} ($(cond "meteorapp/${APP}" Ready reason): $(cond "meteorapp/${APP}" Ready message)), want True throughout"
}

# wait_serving SECONDS WHAT COMMAND...: wait_until, sampling assert_serving at every poll.
wait_serving() {
  local timeout="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    assert_serving
    ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for ${what}"
    sleep 2
  done
  assert_serving
  log "ok: ${what} (Ready=True at every sample)"
}

# stays_serving SECONDS WHAT COMMAND...: COMMAND keeps succeeding for SECONDS, sampled every 3 s
# together with assert_serving; bounded.
stays_serving() {
  local seconds="$1" what="$2"
  shift 2
  local start=${SECONDS}
  while :; do
    "$@" >/dev/null 2>&1 || fail "${what}: no longer so after $((SECONDS - start))s"
    assert_serving
    ((SECONDS - start < seconds)) || break
    sleep 3
  done
  log "ok: ${what}, for ${seconds}s (Ready=True at every sample)"
}

# assert_no_writes SECONDS RESOURCE...: no resourceVersion of RESOURCE... changes for SECONDS.
assert_no_writes() {
  local seconds="$1" res now
  shift
  local -A before=()
  for res in "$@"; do
    before["${res}"]="$(get "${res}" '{.metadata.resourceVersion}')"
    [[ -n "${before["${res}"]}" ]] || fail "cannot read the resourceVersion of ${res}"
  done
  local start=${SECONDS}
  while ((SECONDS - start < seconds)); do
    sleep 2
    for res in "$@"; do
      now="$(get "${res}" '{.metadata.resourceVersion}')"
      [[ "${now}" == "${before["${res}"]}" ]] \
        || fail "${res} was written after $((SECONDS - start))s of a steady app (resourceVersion ${before["${res}"]} -> ${now}); managedFields: $(writers "${res}")"
    done
  done
  log "ok: no write to $* in ${seconds}s"
}

# writers RESOURCE: manager/operation[/subresource]@time of each managedFields entry.
writers() {
  k get "$1" --show-managed-fields \
    -o 'jsonpath={range .metadata.managedFields[*]}{.manager}/{.operation}/{.subresource}@{.time} {end}' 2>/dev/null || true
}

# assert_operator_owns RESOURCE FIELD...: the operator's apply entry in managedFields owns the
# field (FIELD... is its path in fieldsV1, e.g. f:spec f:replicas).
assert_operator_owns() {
  local res="$1" json
  shift
  json="$(k get "${res}" -o json --show-managed-fields)" || fail "cannot get ${res}"
  python3 -c '
import json, sys
def owns(fields, path):
    for key in path:
        if not isinstance(fields, dict) or key not in fields:
            return False
        fields = fields[key]
    return True
entries = json.loads(sys.stdin.read())["metadata"].get("managedFields") or []
sys.exit(0 if any(e.get("manager") == "meteor-operator" and e.get("operation") == "Apply"
                  and owns(e.get("fieldsV1"), sys.argv[1:]) for e in entries) else 1)
' "$@" <<<"${json}" || fail "${res}: the meteor-operator apply entry does not own $*; managedFields: $(writers "${res}")"
  log "ok: ${res}: meteor-operator owns $*"
}

# json_check RESOURCE PYTHON_EXPR MESSAGE: evaluates PYTHON_EXPR with `o` bound to the object's JSON.
json_check() {
  local json
  json="$(k get "$1" -o json --show-managed-fields)" || fail "cannot get $1"
  python3 -c '
import json, sys
o = json.loads(sys.stdin.read())
sys.exit(0 if eval(sys.argv[1]) else 1)
' "$2" <<<"${json}" || fail "$3"
  log "ok: $3"
}

# json_verify RESOURCE PYTHON_CODE MESSAGE: runs PYTHON_CODE (statements) with `o` bound to the
# object's JSON (modules json and base64 at hand); it must set `ok` to a true value.
json_verify() {
  local json
  json="$(k get "$1" -o json)" || fail "cannot get $1"
  python3 -c '
import base64, json, sys
scope = {"o": json.loads(sys.stdin.read()), "json": json, "base64": base64}
exec(sys.argv[1], scope)
sys.exit(0 if scope.get("ok") else 1)
' "$2" <<<"${json}" || fail "$3: not so; $1 is: $(k get "$1" -o json | head -c 1500)"
  log "ok: $3"
}

# --- app helpers -----------------------------------------------------------------------------

# apply_app: (re)applies e2e/testdata/app.yaml, taking back fields that scenarios changed.
apply_app() {
  k apply --server-side --force-conflicts --field-manager=e2e -f "${E2E_DIR}/testdata/app.yaml" >/dev/null \
    || fail "kubectl apply e2e/testdata/app.yaml failed"
}

# patch_app JSON: merge-patches the MeteorApp's spec.
patch_app() { k patch "meteorapp/${APP}" --type=merge -p "$1" >/dev/null || fail "patch meteorapp/${APP} $1 failed"; }

# drop_settings: removes spec.settings (set by merge patches, which apply_app does not undo).
drop_settings() {
  if [[ -n "$(get "meteorapp/${APP}" '{.spec.settings}')" ]]; then
    k patch "meteorapp/${APP}" --type=json -p '[{"op":"remove","path":"/spec/settings"}]' >/dev/null \
      || fail "cannot remove spec.settings from meteorapp/${APP}"
  fi
}

# drop_rollout_overrides: spec.rollout.progressDeadlineSeconds and autoRollback back to their
# defaults (merge-patched by the rollback scenario; a merge-patch null removes the field and the
# CRD default fills it in again).
drop_rollout_overrides() {
  if exists "meteorapp/${APP}" \
    && [[ "$(get "meteorapp/${APP}" '{.spec.rollout.progressDeadlineSeconds}/{.spec.rollout.autoRollback}')" != 900/true ]]; then
    patch_app '{"spec":{"rollout":{"progressDeadlineSeconds":null,"autoRollback":null}}}'
  fi
}

# ensure_app_ready: the base app exists (without settings or rollout overrides), its Secret too,
# and it is Ready with all 2 replicas ready.
ensure_app_ready() {
  ensure_mongo_secret
  drop_settings
  drop_rollout_overrides
  apply_app
  wait_ready "meteorapp/${APP}"
  wait_field "${E2E_TIMEOUT}" "meteorapp/${APP}" '{.status.readyReplicas}' 2
}

APP_PODS="app.kubernetes.io/instance=${APP},app.kubernetes.io/component=app"
TEMPLATE_PATH='{.spec.template.metadata.labels.meteorfleet\.dev/template-hash}'
IMAGE_PATH='{.spec.template.spec.containers[0].image}'

# app_pods_are COUNT PYTHON_EXPR [ARG]: exactly COUNT app pods that are not terminating, all ready,
# and PYTHON_EXPR true for each (`p` is the pod's JSON, `arg` is ARG).
app_pods_are() {
  local json
  json="$(k get pods -l "${APP_PODS}" -o json)" || return 1
  python3 -c '
import json, sys
pods = [p for p in json.loads(sys.stdin.read())["items"] if not p["metadata"].get("deletionTimestamp")]
def ready(p): return any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
arg = sys.argv[3] if len(sys.argv) > 3 else None
sys.exit(0 if len(pods) == int(sys.argv[1]) and all(ready(p) and eval(sys.argv[2], {}, {"p": p, "arg": arg}) for p in pods) else 1)
' "$@" <<<"${json}"
}

# app_settled: the app Deployment's controller saw its spec, every replica is updated, ready and
# available, none is terminating, and no app pod is left terminating.
app_settled() { deployment_settled "deployment/${APP}" "${APP_PODS}"; }

# deployment_settled DEPLOYMENT SELECTOR: app_settled for any Deployment and its pods.
deployment_settled() {
  local json stamps
  json="$(k get "$1" -o json)" || return 1
  python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
s, want = d.get("status") or {}, d["spec"]["replicas"]
sys.exit(0 if s.get("observedGeneration") == d["metadata"]["generation"]
         and all(s.get(k, 0) == want for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"))
         and not s.get("unavailableReplicas") and not s.get("terminatingReplicas") else 1)
' <<<"${json}" || return 1
  stamps="$(k get pods -l "$2" -o 'jsonpath={.items[*].metadata.deletionTimestamp}')" || return 1
  [[ -z "${stamps// /}" ]]
}

# wait_app_settled: app_settled, then the MeteorApp says so for its current generation.
wait_app_settled() {
  wait_until "${E2E_TIMEOUT}" "deployment/${APP} settled (rolled out, no pod terminating)" app_settled
  wait_ready "meteorapp/${APP}"
  wait_condition 60 "meteorapp/${APP}" Progressing False RolloutComplete
}

# endpoints_are SERVICE COUNT PORT: the Service's EndpointSlices hold COUNT ready endpoints, all
# on PORT (the target container port).
endpoints_are() {
  local json
  json="$(k get endpointslices -l "kubernetes.io/service-name=$1" -o json)" || return 1
  python3 -c '
import json, sys
items = json.loads(sys.stdin.read())["items"]
ready = [e for s in items for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")]
ports = {p.get("port") for s in items for p in s.get("ports") or []}
sys.exit(0 if len(ready) == int(sys.argv[1]) and ports == {int(sys.argv[2])} else 1)
' "$2" "$3" <<<"${json}"
}

# The app's proxy tier (routing.proxy on, the default): Deployment, PDB, ServiceAccount, Role and
# RoleBinding NAME-proxy; the app-only Service NAME-app; the cookie Secret NAME-proxy-cookie.
proxy_objects() { # NAME
  echo "deployment/$1-proxy" "poddisruptionbudget/$1-proxy" "serviceaccount/$1-proxy" \
    "rolebinding/$1-proxy" "service/$1-app"
}

# log_ready_delay NAME: how long after the last of meteorapp/NAME's app and proxy pods got ready
# (their Ready condition's lastTransitionTime) the MeteorApp's Ready condition turned True (the
# API server's clock, 1 s resolution). A figure, not a check.
log_ready_delay() {
  local app pods
  app="$(k get "meteorapp/$1" -o json 2>/dev/null)" || return 0
  pods="$(k get pods -l "app.kubernetes.io/instance=$1" -o json 2>/dev/null)" || return 0
  python3 -c '
import datetime, json, sys
def t(s): return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
def ready(o): return next((c for c in (o.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})
app, pods = json.loads(sys.argv[1]), json.loads(sys.argv[2])["items"]
live = [p for p in pods if not p["metadata"].get("deletionTimestamp") and ready(p).get("status") == "True"
        and p["metadata"]["labels"].get("app.kubernetes.io/component") in ("app", "proxy")]
r = ready(app)
if not live or r.get("status") != "True":
    sys.exit(0)
last = max(live, key=lambda p: t(ready(p)["lastTransitionTime"]))
count = {c: sum(1 for p in live if p["metadata"]["labels"]["app.kubernetes.io/component"] == c) for c in ("app", "proxy")}
print("meteorapp/%s Ready=True at %s: %d s after the last of its %d app and %d proxy pods got ready (%s, %s)" % (
    sys.argv[3], r["lastTransitionTime"], (t(r["lastTransitionTime"]) - t(ready(last)["lastTransitionTime"])).total_seconds(),
    count["app"], count["proxy"], last["metadata"]["name"], ready(last)["lastTransitionTime"]))
' "${app}" "${pods}" "$1" 2>/dev/null | while read -r line; do log "${line}"; done || true
}

ensure_mongo_secret() {
  k create secret generic e2e-mongo \
    --from-literal=MONGO_URL='mongodb://mongo.invalid:27017/e2e?replicaSet=rs0' \
    --dry-run=client -o yaml | k apply -f - >/dev/null || fail "cannot create Secret e2e-mongo"
}

# diagnostics: what a failing scenario leaves behind, for the log.
diagnostics() {
  echo "    --- diagnostics (${NS}) ---"
  k get meteorapps,deployments,services,endpointslices,poddisruptionbudgets,pods -o wide 2>&1 | sed 's/^/    /' || true
  k get meteorapps -o yaml 2>/dev/null | sed -n '/^  status:/,/^- /p' | head -60 | sed 's/^/    /' || true
  k get events --sort-by=.lastTimestamp 2>/dev/null | tail -20 | sed 's/^/    /' || true
  echo "    --- proxy pods' logs (last 10 lines each) ---"
  pod_logs "${NS}" 10 app.kubernetes.io/component=proxy 2>&1 | sed 's/^/    /' || true
  echo "    --- operator log (last 40 lines) ---"
  operator_logs 2>&1 | tail -40 | sed 's/^/    /' || true
}

operator_logs() {
  if [[ "${E2E_OPERATOR}" == "local" ]]; then
    cat "${E2E_OUT}/operator.log"
  else
    pod_logs "${OPERATOR_NAMESPACE}" 200 "deployment/${OPERATOR_RELEASE}"
  fi
}

# pod_logs NAMESPACE LINES SELECTOR|pod/NAME|deployment/NAME: the last LINES lines of the pods'
# logs (kubectl logs; with a label selector, each line prefixed with its pod).
pod_logs() {
  local ns="$1" lines="$2" what="$3"
  if loopback; then
    loopback_pod_logs "$@"
  elif [[ "${what}" == */* && "${what}" != *=* ]]; then
    kubectl -n "${ns}" logs "${what}" --tail="${lines}"
  else
    kubectl -n "${ns}" logs -l "${what}" --prefix --tail="${lines}" --max-log-requests=20
  fi
}

# --- port-forwards and HTTP (routing) ---------------------------------------------------------

# Background `kubectl port-forward`s of the current scenario, by name: local URL and pid.
declare -A PF_URL=() PF_PID=()

# port_forward NAME TARGET PORT: kubectl port-forward TARGET (pod/..., svc/...) :PORT on a free
# local port of 127.0.0.1, in the background; PF_URL[NAME] is then http://127.0.0.1:LOCAL.
# Bounded: fails when kubectl has not reported the forward within 30 s. stop_port_forward(s) end it.
port_forward() {
  local name="$1" target="$2" port="$3" log="${E2E_OUT}/port-forward-$1.log" local_port=""
  stop_port_forward "${name}"
  if loopback; then
    loopback_forward "$@"
    return
  fi
  mkdir -p "${E2E_OUT}"
  # kubectl itself, not the function k: $! must be the pid of kubectl, not of a subshell.
  kubectl -n "${NS}" port-forward "${target}" ":${port}" --address=127.0.0.1 >"${log}" 2>&1 &
  PF_PID["${name}"]=$!
  local deadline=$((SECONDS + 30))
  until [[ -n "${local_port}" ]]; do
    kill -0 "${PF_PID["${name}"]}" 2>/dev/null || fail "kubectl port-forward ${target} :${port} exited: $(tail -3 "${log}")"
    ((SECONDS < deadline)) || fail "kubectl port-forward ${target} :${port} reported no local port within 30s: $(tail -3 "${log}")"
    sleep 0.5
    local_port="$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9][0-9]*\) -> .*/\1/p' "${log}" | head -1)"
  done
  PF_URL["${name}"]="http://127.0.0.1:${local_port}"
  log "port-forward ${name}: ${target} port ${port} on ${PF_URL["${name}"]}"
}

# port_forward_alive NAME: the port-forward still runs (on loopback: there is no process to die).
port_forward_alive() {
  if loopback; then [[ -n "${PF_URL["$1"]:-}" ]]; else [[ -n "${PF_PID["$1"]:-}" ]] && kill -0 "${PF_PID["$1"]}" 2>/dev/null; fi
}

stop_port_forward() { # NAME
  local pid="${PF_PID["$1"]:-}"
  if [[ -n "${pid}" ]]; then
    kill "${pid}" 2>/dev/null || true
    wait "${pid}" 2>/dev/null || true
  fi
  unset "PF_PID[$1]" "PF_URL[$1]"
}

stop_port_forwards() {
  local name
  for name in "${!PF_PID[@]}"; do stop_port_forward "${name}"; done
}

# http_get URL [COOKIE]: one GET (5 s timeout); prints {"status", "headers" (lower-case names;
# set-cookie a list), "body"} as JSON. A network error is status 0 and the error as body.
http_get() {
  python3 - "$1" "${2:-}" <<'PY'
import http.client, json, sys, urllib.parse
url, cookie = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2]
try:
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    conn.request("GET", url.path + ("?" + url.query if url.query else ""), headers={"Cookie": cookie} if cookie else {})
    res = conn.getresponse()
    headers = {}
    for name, value in res.getheaders():
        name = name.lower()
        if name == "set-cookie":
            headers.setdefault(name, []).append(value)
        else:
            headers[name] = value
    print(json.dumps({"status": res.status, "headers": headers, "body": res.read().decode(errors="replace")}))
except OSError as e:
    print(json.dumps({"status": 0, "headers": {}, "body": str(e)}))
PY
}

# py_check JSON PYTHON_EXPR MESSAGE [ARG...]: PYTHON_EXPR (may span lines) true with `o` bound
# to the parsed JSON and `args` to ARG...; else fail with MESSAGE and the JSON.
py_check() {
  local json="$1" expr="$2" what="$3"
  shift 3
  python3 -c '
import json, sys
o = json.loads(sys.stdin.read())
args = sys.argv[2:]
sys.exit(0 if eval("(" + sys.argv[1].strip() + ")") else 1)
' "${expr}" "$@" <<<"${json}" || fail "${what}: ${json:0:600}"
  log "ok: ${what}"
}

# pull_problems SELECTOR: "pod: reason (image)" for each container of the selected pods that
# cannot get its image; empty when none.
pull_problems() {
  k get pods -l "$1" -o json 2>/dev/null | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    for c in (p.get("status") or {}).get("containerStatuses") or []:
        w = (c.get("state") or {}).get("waiting") or {}
        if w.get("reason") in ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"):
            print("%s: %s (%s)" % (p["metadata"]["name"], w["reason"], c.get("image")))
' 2>/dev/null || true
}

# --- the loopback control plane (E2E_CLUSTER=loopback, set by hack/e2e-local.sh) ---------------
# ../shared/cluster: a real kube-apiserver and kube-controller-manager, with a fake kubelet that
# runs the pods in network namespaces on this host (hack/e2e-local-runtime.py). There is no
# kubectl port-forward, logs or exec, no cluster DNS and no Service VIPs (no kube-proxy), but every
# pod that runs is reachable from this host at its pod IP. Each difference from kind is one
# function here, called from the one place that needs it.
loopback() { [[ "${E2E_CLUSTER}" == loopback ]]; }

# direct_address TARGET PORT: "IP:PORT" at which TARGET's PORT is reached from this host without
# a port-forward: pod/NAME: its pod IP; svc/NAME: one ready endpoint of the Service's port PORT
# (its pod IP and target port), as `kubectl port-forward svc/NAME` picks one pod.
direct_address() {
  local target="$1" port="$2" ip service slices
  case "${target}" in
    pod/*)
      ip="$(get "${target}" '{.status.podIP}')"
      [[ -n "${ip}" ]] || return 1
      echo "${ip}:${port}"
      ;;
    svc/* | service/*)
      service="$(k get "service/${target#*/}" -o json 2>/dev/null)" || return 1
      slices="$(k get endpointslices -l "kubernetes.io/service-name=${target#*/}" -o json 2>/dev/null)" || return 1
      python3 -c '
import json, sys
port, service, slices = int(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
names = [p.get("name", "") for p in service["spec"]["ports"] if p["port"] == port]
if not names:
    sys.exit(1)
for s in slices["items"]:
    target = next((p["port"] for p in s.get("ports") or [] if p.get("name", "") == names[0]), None)
    for e in s.get("endpoints") or []:
        if target and (e.get("conditions") or {}).get("ready"):
            print("%s:%d" % (e["addresses"][0], target))
            sys.exit(0)
sys.exit(1)
' "${port}" "${service}" "${slices}"
      ;;
    *) return 1 ;;
  esac
}

# loopback_forward NAME TARGET PORT: port_forward on loopback: PF_URL[NAME] is TARGET's address
# itself (direct_address; bounded as a port-forward is: 30 s).
loopback_forward() {
  local name="$1" target="$2" port="$3" address="" deadline=$((SECONDS + 30))
  until address="$(direct_address "${target}" "${port}")"; do
    ((SECONDS < deadline)) || fail "no address for ${target} port ${port} within 30s (loopback: pods are reached at their pod IP)"
    sleep 1
  done
  PF_URL["${name}"]="http://${address}"
  log "port-forward ${name}: ${target} port ${port} at ${PF_URL["${name}"]} (loopback: its pod IP, no kubectl port-forward)"
}

# service_url NAME PORT: the URL of Service NAME's PORT for a client in a pod of the namespace:
# its DNS name; on loopback (no cluster DNS, no Service VIPs) one of its ready endpoints.
service_url() {
  local address
  if loopback; then
    address="$(direct_address "svc/$1" "$2")" || fail "service/$1 has no ready endpoint for port $2"
    echo "http://${address}"
  elif [[ "$2" == 80 ]]; then
    echo "http://$1"
  else
    echo "http://$1:$2"
  fi
}

# loopback_pod_logs NAMESPACE LINES SELECTOR|pod/NAME|deployment/NAME: pod_logs on loopback, from
# the files hack/e2e-local-runtime.py writes (E2E_POD_LOGS/NAMESPACE.POD.log), each line prefixed
# with its pod as kubectl logs --prefix does. Pods that did not run here have no log.
loopback_pod_logs() {
  local ns="$1" lines="$2" what="$3" selector pod file
  local -a pods=()
  case "${what}" in
    pod/*) pods=("${what#pod/}") ;;
    deployment/*)
      selector="$(kubectl -n "${ns}" get "${what}" -o json 2>/dev/null \
        | python3 -c 'import json, sys; print(",".join("%s=%s" % kv for kv in json.load(sys.stdin)["spec"]["selector"]["matchLabels"].items()))')" \
        || { echo "no ${what} in ${ns}"; return 1; }
      mapfile -t pods < <(kubectl -n "${ns}" get pods -l "${selector}" -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}')
      ;;
    *) mapfile -t pods < <(kubectl -n "${ns}" get pods -l "${what}" -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}') ;;
  esac
  for pod in "${pods[@]}"; do
    [[ -n "${pod}" ]] || continue
    file="${E2E_POD_LOGS}/${ns}.${pod}.log"
    if [[ -f "${file}" ]]; then
      tail -n "${lines}" "${file}" | sed "s|^|[pod/${pod}] |"
    else
      echo "[pod/${pod}] (no log: the pod did not run on the loopback control plane)"
    fi
  done
}
