#!/usr/bin/env bash
# End-to-end suite: runs against the cluster in KUBECONFIG (kind, see e2e/README.md).
#   bash e2e/run.sh                  # every scenario
#   bash e2e/run.sh install basic    # some scenarios (install always runs first)
# Prints PASS/FAIL per scenario and "e2e: N passed, N failed"; exits non-zero on any failure.
# Settings: see the top of e2e/lib.sh (E2E_OPERATOR=incluster|local, E2E_IMAGE, ...).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCENARIOS=(install basic scale workers settings invalid rollback drift readiness-generation delete failover fleet)

# === scenarios ===================================================================================
# Each runs in its own subshell with set -e; `fail` ends it. Later scenarios (re)create what they
# need (ensure_app_ready), so one failure does not cascade.

scenario_install() {
  case "${E2E_OPERATOR}" in
    incluster) install_incluster ;;
    local) install_local ;;
    *) fail "E2E_OPERATOR must be incluster or local, not '${E2E_OPERATOR}'" ;;
  esac
  kubectl wait --for=condition=Established crd/meteorapps.meteorfleet.dev --timeout=60s >/dev/null \
    || fail "CRD meteorapps.meteorfleet.dev not Established"
  log "ok: CRD meteorapps.meteorfleet.dev Established"
  assert_eq "$(kubectl get crd meteorapps.meteorfleet.dev -o 'jsonpath={.spec.names.shortNames[0]}')" meteor "CRD short name"
}

install_incluster() {
  [[ "${E2E_IMAGE##*/}" == *:* ]] || fail "E2E_IMAGE must have a tag (repository:tag), got '${E2E_IMAGE}'"
  case "${E2E_INSTALL}" in
    helm)
      kubectl apply -f - >/dev/null <<YAML || fail "cannot create namespace ${OPERATOR_NAMESPACE}"
apiVersion: v1
kind: Namespace
metadata:
  name: ${OPERATOR_NAMESPACE}
  labels:
    pod-security.kubernetes.io/enforce: restricted
YAML
      helm upgrade --install "${OPERATOR_RELEASE}" "${ROOT}/charts/meteor-operator" \
        --namespace "${OPERATOR_NAMESPACE}" \
        --set image.repository="${E2E_IMAGE%:*}" --set image.tag="${E2E_IMAGE##*:}" \
        --set image.pullPolicy=IfNotPresent --set logFormat=text \
        --wait --timeout "${E2E_TIMEOUT}s" || fail "helm upgrade --install failed"
      log "ok: helm release ${OPERATOR_RELEASE} installed in ${OPERATOR_NAMESPACE}"
      # The chart hands its image to the operator as the proxy pods' default image.
      assert_eq "$(operator_env METEOR_OPERATOR_PROXY_IMAGE)" "${E2E_IMAGE}" \
        "operator env METEOR_OPERATOR_PROXY_IMAGE (the chart's image, for the proxy pods)"
      ;;
    manifest)
      kubectl apply --server-side --force-conflicts -f "${ROOT}/manifests/install.yaml" >/dev/null \
        || fail "kubectl apply manifests/install.yaml failed"
      [[ -n "$(operator_env METEOR_OPERATOR_PROXY_IMAGE)" ]] \
        || fail "manifests/install.yaml: the operator container has no env METEOR_OPERATOR_PROXY_IMAGE (the proxy pods' image)"
      kubectl -n "${OPERATOR_NAMESPACE}" set image "deployment/${OPERATOR_RELEASE}" "operator=${E2E_IMAGE}" >/dev/null \
        || fail "cannot set the operator image"
      # Retagging the operator means retagging the proxy too: they are one image.
      kubectl -n "${OPERATOR_NAMESPACE}" set env "deployment/${OPERATOR_RELEASE}" -c operator \
        "METEOR_OPERATOR_PROXY_IMAGE=${E2E_IMAGE}" >/dev/null || fail "cannot set METEOR_OPERATOR_PROXY_IMAGE"
      log "ok: manifests/install.yaml applied (image ${E2E_IMAGE}, also the proxy image)"
      ;;
    *) fail "E2E_INSTALL must be helm or manifest, not '${E2E_INSTALL}'" ;;
  esac
  kubectl -n "${OPERATOR_NAMESPACE}" rollout status "deployment/${OPERATOR_RELEASE}" --timeout="${E2E_TIMEOUT}s" \
    || fail "the operator Deployment did not become available"
  log "ok: operator running (readiness /readyz passed)"

  # Leader election: a pod of the Deployment holds the Lease.
  local deadline=$((SECONDS + 120)) holder=""
  until [[ "${holder}" == "${OPERATOR_RELEASE}-"* ]]; do
    ((SECONDS < deadline)) || fail "no operator pod holds Lease ${OPERATOR_NAMESPACE}/meteor-operator (holder: '${holder}')"
    sleep 2
    holder="$(kubectl -n "${OPERATOR_NAMESPACE}" get lease meteor-operator -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null || true)"
  done
  # The identity is POD_NAME_UUID: unique even for two processes on one host.
  [[ "${holder}" =~ _[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]] \
    || fail "Lease holder identity '${holder}' is not POD_NAME_UUID"
  kubectl -n "${OPERATOR_NAMESPACE}" get pod "${holder%%_*}" >/dev/null 2>&1 \
    || fail "Lease holder ${holder}: no pod ${holder%%_*} in ${OPERATOR_NAMESPACE}"
  log "ok: Lease meteor-operator held by ${holder}"

  # Metrics through the Service (apiserver service proxy: no port-forward needed).
  local metrics
  metrics="$(kubectl get --raw "/api/v1/namespaces/${OPERATOR_NAMESPACE}/services/${OPERATOR_RELEASE}-metrics:metrics/proxy/metrics")" \
    || fail "GET /metrics through service ${OPERATOR_RELEASE}-metrics failed"
  assert_contains "${metrics}" "# TYPE" "/metrics"

  # RBAC: the operator's ServiceAccount may do every permission the tests saw its requests need
  # (hack/rbac-used.txt: ClusterRole lines in the app namespace and, for list and watch, across
  # all namespaces; Role lines in the operator's namespace) ...
  local role resource verb sub checked=0
  while read -r role resource verb; do
    [[ -z "${role}" || "${role}" == \#* ]] && continue
    sub=""
    if [[ "${resource}" == */* ]]; then
      sub="${resource#*/}"
      resource="${resource%%/*}"
    fi
    case "${role}" in
      ClusterRole)
        can_i yes "${verb}" "${resource}" "${NS}" "${sub}"
        if [[ "${verb}" == list || "${verb}" == watch ]]; then
          can_i yes "${verb}" "${resource}" '*' "${sub}"
        fi
        ;;
      Role) can_i yes "${verb}" "${resource}" "${OPERATOR_NAMESPACE}" "${sub}" ;;
      *) fail "hack/rbac-used.txt: unknown role '${role}' in: ${role} ${resource} ${verb}" ;;
    esac
    checked=$((checked + 1))
  done <"${ROOT}/hack/rbac-used.txt"
  ((checked > 0)) || fail "hack/rbac-used.txt lists no permission"
  # ... and nothing of what it must not ("VERB RESOURCE NAMESPACE [SUBRESOURCE]").
  local check
  for check in "update meteorapps.meteorfleet.dev ${NS}" "delete secrets ${NS}" "delete configmaps ${NS}" \
    "create pods ${NS}" "update deployments.apps ${NS}" "get leases.coordination.k8s.io ${NS}" \
    "patch leases.coordination.k8s.io ${NS}" "update leases.coordination.k8s.io ${OPERATOR_NAMESPACE}"; do
    # shellcheck disable=SC2086 # split into arguments on purpose
    can_i no ${check}
  done
  log "ok: operator RBAC allows the ${checked} permissions of hack/rbac-used.txt and refuses the others tested"
}

install_local() {
  # Two operators would fight over the same MeteorApps.
  local incluster
  incluster="$(kubectl -n "${OPERATOR_NAMESPACE}" get deployment "${OPERATOR_RELEASE}" -o 'jsonpath={.spec.replicas}' 2>/dev/null || true)"
  if [[ -n "${incluster}" && "${incluster}" != 0 ]]; then
    fail "an in-cluster operator runs (deployment ${OPERATOR_NAMESPACE}/${OPERATOR_RELEASE}); uninstall it first: helm -n ${OPERATOR_NAMESPACE} uninstall ${OPERATOR_RELEASE}"
  fi
  kubectl apply --server-side --force-conflicts -f "${ROOT}/crds/meteorapps.yaml" >/dev/null \
    || fail "kubectl apply crds/meteorapps.yaml failed"
  log "building the operator (cargo build)"
  (cd "${ROOT}" && cargo build -q --bin meteor-operator) || fail "cargo build failed"
  local bin="${CARGO_TARGET_DIR:-${ROOT}/target}/debug/meteor-operator"
  [[ -x "${bin}" ]] || fail "${bin} not found after cargo build"
  stop_local_operator
  mkdir -p "${E2E_OUT}"
  # Same as `cargo run -- run --leader-elect=false`, without cargo in between (so the pid is the
  # operator's own). The proxy pods it creates run E2E_IMAGE, as the chart would tell it: load
  # that image into the cluster (e2e/README.md).
  RUST_LOG="${RUST_LOG:-info,meteor_operator=debug}" POD_NAME="e2e-local" \
    METEOR_OPERATOR_PROXY_IMAGE="${E2E_IMAGE}" \
    "${bin}" run --leader-elect=false --admin-addr="${E2E_ADMIN_ADDR}" --log-format=text \
    >"${E2E_OUT}/operator.log" 2>&1 &
  echo $! >"${E2E_OUT}/operator.pid"
  log "operator started locally (pid $!, log e2e/_out/operator.log, proxy image ${E2E_IMAGE})"
  local deadline=$((SECONDS + 120))
  until python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "http://${E2E_ADMIN_ADDR}/readyz" >/dev/null 2>&1; do
    kill -0 "$(cat "${E2E_OUT}/operator.pid")" 2>/dev/null || fail "the local operator exited: $(tail -5 "${E2E_OUT}/operator.log")"
    ((SECONDS < deadline)) || fail "the local operator's /readyz did not answer 200 within 120s"
    sleep 2
  done
  log "ok: local operator ready (http://${E2E_ADMIN_ADDR}/readyz)"
}

# operator_env NAME: the value of env NAME of the in-cluster operator's container ('' if unset).
operator_env() {
  kubectl -n "${OPERATOR_NAMESPACE}" get "deployment/${OPERATOR_RELEASE}" \
    -o "jsonpath={.spec.template.spec.containers[?(@.name==\"operator\")].env[?(@.name==\"$1\")].value}" 2>/dev/null || true
}

# can_i WANT VERB RESOURCE NAMESPACE [SUBRESOURCE]: kubectl auth can-i as the operator's
# ServiceAccount; NAMESPACE '*' asks across all namespaces.
can_i() {
  local want="$1" verb="$2" resource="$3" namespace="$4" sub="${5:-}" got scope
  if [[ "${namespace}" == '*' ]]; then scope="--all-namespaces"; else scope="--namespace=${namespace}"; fi
  got="$(kubectl auth can-i "${verb}" "${resource}" "${scope}" ${sub:+--subresource="${sub}"} \
    --as="${OPERATOR_SA}" 2>/dev/null || true)"
  [[ "${got}" == "${want}" ]] \
    || fail "kubectl auth can-i ${verb} ${resource}${sub:+/${sub}} -n ${namespace} as the operator: got '${got}', want '${want}'"
}

stop_local_operator() {
  local pidfile="${E2E_OUT}/operator.pid"
  [[ -f "${pidfile}" ]] || return 0
  local pid
  pid="$(cat "${pidfile}")"
  if kill -0 "${pid}" 2>/dev/null; then
    kill "${pid}" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "${pid}" 2>/dev/null || break; sleep 1; done
    kill -9 "${pid}" 2>/dev/null || true
  fi
  rm -f "${pidfile}"
}

scenario_basic() {
  ensure_mongo_secret
  apply_app
  wait_until 60 "Deployment ${APP} created" exists "deployment/${APP}"
  wait_until 60 "Service ${APP} created" exists "service/${APP}"
  local uid selector proxy_selector
  uid="$(get "meteorapp/${APP}" '{.metadata.uid}')"
  selector="app.kubernetes.io/name=meteor,app.kubernetes.io/instance=${APP},app.kubernetes.io/component=app,app.kubernetes.io/managed-by=meteor-operator"
  proxy_selector="${selector/component=app/component=proxy}"
  # The proxy is on by default: the front door `e2e-app` selects the proxy pods, and `e2e-app-app`
  # the app pods (the Service whose EndpointSlices the proxy follows).
  wait_until 60 "Service ${APP}-app created" exists "service/${APP}-app"
  assert_eq "$(k get deployments -l "${selector}" -o name)" "deployment.apps/${APP}" "Deployments labelled ${selector}"
  assert_eq "$(k get services -l "${selector}" -o name)" "service/${APP}-app" "Services labelled ${selector}"
  wait_until 60 "Deployment ${APP}-proxy created" exists "deployment/${APP}-proxy"
  assert_eq "$(k get deployments -l "${proxy_selector}" -o name)" "deployment.apps/${APP}-proxy" "Deployments labelled ${proxy_selector}"
  assert_eq "$(k get services -l "${proxy_selector}" -o name)" "service/${APP}" "Services labelled ${proxy_selector}"
  assert_owned "deployment/${APP}" "${uid}"
  assert_owned "service/${APP}" "${uid}"

  wait_ready "meteorapp/${APP}"
  assert_eq "$(get "meteorapp/${APP}" '{.status.readyReplicas}')" 2 "meteorapp/${APP} status.readyReplicas"
  assert_eq "$(cond "meteorapp/${APP}" Ready reason)" AllReplicasReady "Ready reason"
  assert_eq "$(cond "meteorapp/${APP}" Degraded status)" False "Degraded"
  assert_exists "poddisruptionbudget/${APP}"
  assert_owned "poddisruptionbudget/${APP}" "${uid}"
  json_check "deployment/${APP}" \
    "any(m.get('manager') == 'meteor-operator' and m.get('operation') == 'Apply' for m in o['metadata']['managedFields'])" \
    "deployment/${APP} managedFields has manager meteor-operator, operation Apply"
  json_check "service/${APP}" \
    "any(m.get('manager') == 'meteor-operator' and m.get('operation') == 'Apply' for m in o['metadata']['managedFields'])" \
    "service/${APP} managedFields has manager meteor-operator, operation Apply"
  # The app-only Service reaches exactly the 2 ready app pods, on the app port.
  wait_until 60 "Service ${APP}-app has 2 ready endpoints on port 3000" endpoints_are "${APP}-app" 2 3000
  log "ok: app pods run under the namespace's restricted Pod Security Standard"
  # The proxy tier with its defaults (2 replicas of the operator's image, in front of the app).
  check_proxy_tier "${APP}" 2
}

# assert_owned RESOURCE UID [APP]: RESOURCE has a controller ownerReference to the MeteorApp
# (default ${APP}).
assert_owned() {
  local app="${3:-${APP}}"
  json_check "$1" \
    "any(r['kind'] == 'MeteorApp' and r['apiVersion'] == 'meteorfleet.dev/v1alpha1' and r['name'] == '${app}' and r['uid'] == '$2' and r.get('controller') for r in o['metadata'].get('ownerReferences', []))" \
    "$1 is controlled by meteorapp/${app}"
}

# check_proxy_tier NAME APP_PODS: meteorapp/NAME (routing.proxy on, default replicas 2) has its
# proxy tier, owned by it: Deployment NAME-proxy (2 ready pods of the operator's image E2E_IMAGE
# running `proxy`, readiness /-/healthz on the admin port 9090, HTTP on 8080), the front Service
# NAME selecting the proxy pods (port 80 -> http only: the admin port is never exposed), the
# app-only Service NAME-app (APP_PODS ready endpoints on the app port 3000) that the proxy
# follows, PodDisruptionBudget, ServiceAccount, Role (get/list/watch EndpointSlices, nothing
# else) and RoleBinding NAME-proxy, the cookie Secret NAME-proxy-cookie; Routed=True and
# status.routing 2/2.
check_proxy_tier() {
  local name="$1" app_pods="$2" uid res
  uid="$(get "meteorapp/${name}" '{.metadata.uid}')"
  for res in $(proxy_objects "${name}") "secret/${name}-proxy-cookie"; do
    wait_until 60 "${res} created" exists "${res}"
    assert_owned "${res}" "${uid}" "${name}"
  done
  json_verify "deployment/${name}-proxy" "
s = o['spec']
t = s['template']
c = t['spec']['containers'][0]
ports = {p['name']: p['containerPort'] for p in c.get('ports') or []}
probe = (c.get('readinessProbe') or {}).get('httpGet') or {}
args = c.get('args') or []
ok = (s['replicas'] == 2 and t['metadata']['labels'].get('app.kubernetes.io/component') == 'proxy'
      and c['image'] == '${E2E_IMAGE}' and args[:1] == ['proxy'] and '--service' in args
      and args[args.index('--service') + 1] == '${NS}/${name}-app'
      and ports.get('http') == 8080 and ports.get('admin') == 9090
      and probe.get('path') == '/-/healthz' and probe.get('port') in ('admin', 9090)
      and t['spec'].get('serviceAccountName') == '${name}-proxy')" \
    "deployment/${name}-proxy: 2 replicas of ${E2E_IMAGE} running 'proxy --service ${NS}/${name}-app', http 8080, admin 9090, readiness /-/healthz on admin, ServiceAccount ${name}-proxy"
  json_verify "service/${name}" "
s = o['spec']
ok = (s['selector'] == {'app.kubernetes.io/name': 'meteor', 'app.kubernetes.io/instance': '${name}', 'app.kubernetes.io/component': 'proxy'}
      and [(p.get('name'), p['port'], p.get('targetPort')) for p in s['ports']] == [('http', 80, 'http')])" \
    "service/${name} (the front door) selects the proxy pods; its only port is http 80 -> http (no admin port)"
  json_verify "service/${name}-app" "
s = o['spec']
ok = (s['selector'] == {'app.kubernetes.io/name': 'meteor', 'app.kubernetes.io/instance': '${name}', 'app.kubernetes.io/component': 'app'}
      and [(p.get('name'), p.get('targetPort')) for p in s['ports']] == [('http', 'http')])" \
    "service/${name}-app selects the app pods, port http"
  json_verify "role/${name}-proxy" "
rules = [(r.get('apiGroups'), r.get('resources'), sorted(r.get('verbs') or []), r.get('resourceNames')) for r in o.get('rules') or []]
ok = rules == [(['discovery.k8s.io'], ['endpointslices'], ['get', 'list', 'watch'], None)]" \
    "role/${name}-proxy grants get/list/watch on endpointslices and nothing else"
  json_verify "rolebinding/${name}-proxy" "
subjects = [(x['kind'], x['name'], x.get('namespace')) for x in o.get('subjects') or []]
ok = (o['roleRef']['kind'] == 'Role' and o['roleRef']['name'] == '${name}-proxy'
      and subjects == [('ServiceAccount', '${name}-proxy', '${NS}')])" \
    "rolebinding/${name}-proxy binds the Role to ServiceAccount ${name}-proxy"
  json_verify "poddisruptionbudget/${name}-proxy" \
    "ok = o['spec']['selector']['matchLabels'].get('app.kubernetes.io/component') == 'proxy'" \
    "poddisruptionbudget/${name}-proxy covers the proxy pods"
  json_verify "secret/${name}-proxy-cookie" \
    "ok = len(base64.b64decode((o.get('data') or {}).get('cookie-key', ''))) >= 16" \
    "secret/${name}-proxy-cookie holds a cookie-key of at least 16 bytes"
  wait_until 120 "Service ${name} (the front door) has 2 ready proxy endpoints on port 8080" endpoints_are "${name}" 2 8080
  wait_until 120 "Service ${name}-app has ${app_pods} ready endpoints on port 3000" endpoints_are "${name}-app" "${app_pods}" 3000
  wait_until 60 "meteorapp/${name} Routed=True" condition_is "meteorapp/${name}" Routed True
  # Progress figures are written at most every 10 s.
  wait_field 60 "meteorapp/${name}" '{.status.routing.proxyReplicas}/{.status.routing.proxyReadyReplicas}' 2/2
}

scenario_scale() {
  ensure_app_ready
  k scale "meteorapp/${APP}" --replicas=3 >/dev/null || fail "kubectl scale meteorapp/${APP} --replicas=3 failed"
  wait_field 60 "deployment/${APP}" '{.spec.replicas}' 3
  wait_field "${E2E_TIMEOUT}" "meteorapp/${APP}" '{.status.replicas}' 3
  wait_field "${E2E_TIMEOUT}" "meteorapp/${APP}" '{.status.readyReplicas}' 3
  wait_ready "meteorapp/${APP}"
  assert_exists "poddisruptionbudget/${APP}"

  k scale "meteorapp/${APP}" --replicas=1 >/dev/null || fail "kubectl scale --replicas=1 failed"
  wait_field 60 "deployment/${APP}" '{.spec.replicas}' 1
  wait_until 60 "PodDisruptionBudget ${APP} deleted at 1 replica" absent "poddisruptionbudget/${APP}"
  wait_ready "meteorapp/${APP}"
  assert_exists "poddisruptionbudget/${APP}-proxy" # the proxy still runs 2 replicas

  k scale "meteorapp/${APP}" --replicas=0 >/dev/null || fail "kubectl scale --replicas=0 failed"
  wait_field 60 "deployment/${APP}" '{.spec.replicas}' 0
  wait_condition "${E2E_TIMEOUT}" "meteorapp/${APP}" Ready True Parked
  assert_exists "deployment/${APP}"
  assert_exists "service/${APP}"
  assert_eq "$(get "deployment/${APP}" '{.spec.replicas}')" 0 "parked deployment/${APP} spec.replicas"
  # A parked app behind the proxy: a short 503 at once, not a hang.
  assert_eq "$(get "deployment/${APP}-proxy" '{.spec.replicas}')" 2 "deployment/${APP}-proxy spec.replicas while parked"
  trap stop_port_forwards EXIT
  port_forward front "svc/${APP}" 80
  wait_until 60 "the proxy answers 503 with a short body while ${APP} is parked" parked_answer "${PF_URL[front]}/"
  stop_port_forward front

  apply_app # back to 2 replicas
  wait_ready "meteorapp/${APP}"
}

# parked_answer URL: GET URL answers 503 within 5 s, with a body under 1 KiB.
parked_answer() {
  http_get "$1" | python3 -c '
import json, sys
o = json.load(sys.stdin)
sys.exit(0 if o["status"] == 503 and len(o["body"]) < 1024 else 1)'
}

scenario_workers() {
  ensure_app_ready
  patch_app '{"spec":{"workers":{"replicas":1}}}'
  local worker="${APP}-worker"
  wait_until 60 "Deployment ${worker} created" exists "deployment/${worker}"
  assert_eq "$(k get deployments -l "app.kubernetes.io/name=meteor,app.kubernetes.io/instance=${APP},app.kubernetes.io/component=worker" -o name)" \
    "deployment.apps/${worker}" "Deployments with component=worker"
  assert_owned "deployment/${worker}" "$(get "meteorapp/${APP}" '{.metadata.uid}')"
  k rollout status "deployment/${worker}" --timeout="${E2E_TIMEOUT}s" >/dev/null || fail "deployment/${worker} did not roll out"
  log "ok: deployment/${worker} rolled out"
  no_service_selects "deployment/${worker}"
  wait_until 60 "Service ${APP}-app still has exactly the 2 app endpoints" endpoints_are "${APP}-app" 2 3000

  patch_app '{"spec":{"workers":{"replicas":0}}}'
  wait_until 60 "Deployment ${worker} deleted at 0 workers" absent "deployment/${worker}"
}

# no_service_selects DEPLOYMENT: no Service in the namespace selects the Deployment's pods.
no_service_selects() {
  local deployment services
  deployment="$(k get "$1" -o json)" || fail "cannot get $1"
  services="$(k get services -o json)" || fail "cannot list services"
  python3 -c '
import json, sys
labels = json.loads(sys.argv[1])["spec"]["template"]["metadata"].get("labels") or {}
for svc in json.loads(sys.argv[2])["items"]:
    sel = svc["spec"].get("selector") or {}
    if sel and all(labels.get(k) == v for k, v in sel.items()):
        print("service/%s selects them" % svc["metadata"]["name"])
        sys.exit(1)
' "${deployment}" "${services}" || fail "a Service selects the pods of $1"
  log "ok: no Service selects the pods of $1"
}

HASH_PATH='{.spec.template.metadata.annotations.meteorfleet\.dev/config-hash}'

# settings_configmap NAME JSON: creates or updates a ConfigMap holding settings.json.
settings_configmap() {
  k create configmap "$1" --from-literal=settings.json="$2" --dry-run=client -o yaml \
    | k apply -f - >/dev/null || fail "cannot write ConfigMap $1"
}

use_settings() { patch_app "{\"spec\":{\"settings\":{\"configMapKeyRef\":{\"name\":\"$1\",\"key\":\"settings.json\"}}}}"; }

scenario_settings() {
  ensure_app_ready
  settings_configmap e2e-settings '{"public":{"e2e":1}}'
  use_settings e2e-settings
  wait_until 60 "deployment/${APP} pod template has annotation meteorfleet.dev/config-hash" \
    field_is_not "deployment/${APP}" "${HASH_PATH}" ""
  wait_ready "meteorapp/${APP}"
  local before
  before="$(get "deployment/${APP}" "${HASH_PATH}")"
  log "config-hash ${before}"

  settings_configmap e2e-settings '{"public":{"e2e":2}}'
  wait_until 120 "config-hash changes after the ConfigMap changed" hash_changed "${before}"
  log "config-hash $(get "deployment/${APP}" "${HASH_PATH}")"
  wait_ready "meteorapp/${APP}"
  drop_settings
  wait_ready "meteorapp/${APP}" # the operator applied the spec without settings

  # An env variable from a Secret key (spec.env[].valueFrom.secretKeyRef): changing that key
  # rolls the pods; changing another key of the same Secret does not.
  env_secret e2e-env token=one other=a
  before="$(get "deployment/${APP}" "${HASH_PATH}")"
  patch_app '{"spec":{"env":[{"name":"WHOAMI_PORT_NUMBER","value":"3000"},{"name":"E2E_TOKEN","valueFrom":{"secretKeyRef":{"name":"e2e-env","key":"token"}}}]}}'
  wait_until 60 "config-hash changes once the app reads the Secret" hash_changed "${before}"
  wait_rolled_out
  before="$(get "deployment/${APP}" "${HASH_PATH}")"
  log "config-hash ${before}"

  env_secret e2e-env token=one other=b
  sleep 10 # give a wrong rollout the chance to start
  assert_eq "$(get "deployment/${APP}" "${HASH_PATH}")" "${before}" "config-hash after another key changed (unchanged)"

  env_secret e2e-env token=two other=b
  wait_until 120 "config-hash changes after the referenced Secret key changed" hash_changed "${before}"
  wait_rolled_out
  log "config-hash $(get "deployment/${APP}" "${HASH_PATH}")"
  apply_app # takes back spec.env
}

hash_changed() {
  local now
  now="$(get "deployment/${APP}" "${HASH_PATH}")"
  [[ -n "${now}" && "${now}" != "$1" ]]
}

# env_secret NAME KEY=VALUE...: creates or updates a Secret with these keys only.
env_secret() {
  local name="$1" pair
  shift
  local -a literals=()
  for pair in "$@"; do literals+=("--from-literal=${pair}"); done
  k create secret generic "${name}" "${literals[@]}" --dry-run=client -o yaml \
    | k apply -f - >/dev/null || fail "cannot write Secret ${name}"
}

# wait_rolled_out: the app Deployment finished its rollout and every app pod left runs its pod
# template (label meteorfleet.dev/template-hash, which covers the config-hash annotation): the
# pods were replaced, not just the template.
wait_rolled_out() {
  k rollout status "deployment/${APP}" --timeout="${E2E_TIMEOUT}s" >/dev/null \
    || fail "deployment/${APP} did not roll out"
  local template
  template="$(get "deployment/${APP}" "${TEMPLATE_PATH}")"
  wait_until 120 "all 2 app pods ready on template ${template} (config-hash $(get "deployment/${APP}" "${HASH_PATH}"))" \
    app_pods_are 2 'p["metadata"]["labels"].get("meteorfleet.dev/template-hash") == arg' "${template}"
  wait_ready "meteorapp/${APP}"
}

scenario_invalid() {
  # 1. The apiserver refuses each invalid MeteorApp with a message naming the field.
  local file expect out
  for file in "${E2E_DIR}"/invalid/*.yaml; do
    expect="$(sed -n '1s/^# expect: //p' "${file}")"
    [[ -n "${expect}" ]] || fail "${file#"${ROOT}/"}: first line must be '# expect: <substring>'"
    if out="$(k apply -f "${file}" 2>&1)"; then
      k delete -f "${file}" --ignore-not-found >/dev/null 2>&1 || true
      fail "the apiserver accepted ${file#"${ROOT}/"} (want an error naming ${expect})"
    fi
    assert_contains "${out}" "${expect}" "error for ${file#"${ROOT}/"}"
  done

  # 2. A missing Secret: not Ready, Degraded ReferenceNotFound, a Warning event, no Deployment.
  local missing=e2e-missing
  k apply -f "${E2E_DIR}/testdata/missing-secret.yaml" >/dev/null || fail "cannot apply testdata/missing-secret.yaml"
  wait_condition 120 "meteorapp/${missing}" Ready False ReferenceNotFound
  wait_condition 30 "meteorapp/${missing}" Degraded True ReferenceNotFound
  wait_until 60 "a Warning event on meteorapp/${missing}" has_warning_event "${missing}"
  assert_absent "deployment/${missing}"
  assert_eq "$(k get deployments,services -l "app.kubernetes.io/instance=${missing}" -o name)" "" \
    "objects labelled app.kubernetes.io/instance=${missing}"
  k delete "meteorapp/${missing}" --timeout=60s >/dev/null || fail "cannot delete meteorapp/${missing}"

  # 3. Settings that do not parse: InvalidSettings, and the running Deployment is left alone.
  ensure_app_ready
  settings_configmap e2e-bad-settings '{"public":{"ok":true}}'
  use_settings e2e-bad-settings
  wait_until 60 "config-hash annotation present" field_is_not "deployment/${APP}" "${HASH_PATH}" ""
  wait_ready "meteorapp/${APP}"
  local generation hash
  generation="$(get "deployment/${APP}" '{.metadata.generation}')"
  hash="$(get "deployment/${APP}" "${HASH_PATH}")"
  settings_configmap e2e-bad-settings '{"public": {"ok": tru'
  # Degraded says why; Ready stays about serving (the running pods are untouched).
  wait_condition 120 "meteorapp/${APP}" Degraded True InvalidSettings
  assert_eq "$(cond "meteorapp/${APP}" Ready status)" True "Ready (the old pods still serve)"
  sleep 5 # give a wrong update the chance to land
  assert_eq "$(get "deployment/${APP}" '{.metadata.generation}')" "${generation}" "deployment/${APP} generation (unchanged)"
  assert_eq "$(get "deployment/${APP}" "${HASH_PATH}")" "${hash}" "deployment/${APP} config-hash (unchanged)"
  assert_eq "$(get "deployment/${APP}" '{.status.readyReplicas}')" 2 "deployment/${APP} readyReplicas (still serving)"

  # ... and it recovers once the settings parse again.
  settings_configmap e2e-bad-settings '{"public":{"ok":false}}'
  wait_condition 120 "meteorapp/${APP}" Degraded False AsExpected
  wait_ready "meteorapp/${APP}"
  drop_settings
}

# has_warning_event NAME [REASON]: a Warning event (with that reason) about meteorapp/NAME.
has_warning_event() {
  [[ -n "$(k get events -o name 2>/dev/null \
    --field-selector "involvedObject.kind=MeteorApp,involvedObject.name=$1,type=Warning${2:+,reason=$2}")" ]]
}

GOOD_IMAGE="traefik/whoami:v1.10"
# A tag that does not exist: its pod stays in ErrImagePull/ImagePullBackOff, never ready and never
# restarting, so the rollout can only fail by the Deployment's progress deadline.
BAD_IMAGE="traefik/whoami:v0.0.0-does-not-exist"
# spec.rollout.progressDeadlineSeconds for these scenarios: the minimum the CRD allows.
DEADLINE=60

# rollback: a rollout that makes no progress within progressDeadlineSeconds goes back to the last
# template that completed and stays there until the spec changes, while the old pods keep serving;
# with autoRollback: false it is only reported (RolloutStuck) and left in place.
scenario_rollback() {
  ensure_app_ready
  patch_app "{\"spec\":{\"rollout\":{\"progressDeadlineSeconds\":${DEADLINE}}}}"
  wait_ready "meteorapp/${APP}"
  wait_field 60 "deployment/${APP}" '{.spec.progressDeadlineSeconds}' "${DEADLINE}"
  local good
  good="$(get "deployment/${APP}" "${TEMPLATE_PATH}")"
  [[ -n "${good}" ]] || fail "deployment/${APP} pod template has no label meteorfleet.dev/template-hash"
  wait_field 120 "meteorapp/${APP}" '{.status.rollout.availableTemplate}' "${good}"
  assert_eq "$(get "meteorapp/${APP}" '{.status.rollout.availableImage}')" "${GOOD_IMAGE}" "status.rollout.availableImage"

  patch_app "{\"spec\":{\"image\":\"${BAD_IMAGE}\"}}"
  local generation
  generation="$(get "meteorapp/${APP}" '{.metadata.generation}')"
  wait_serving 60 "deployment/${APP} rolls out ${BAD_IMAGE}" field_is "deployment/${APP}" "${IMAGE_PATH}" "${BAD_IMAGE}"
  wait_serving $((DEADLINE + 90)) "Degraded=True RolledBack for generation ${generation}" \
    condition_is "meteorapp/${APP}" Degraded True RolledBack "${generation}"
  local message
  message="$(cond "meteorapp/${APP}" Degraded message)"
  assert_contains "${message}" "${BAD_IMAGE}" "Degraded message"
  assert_contains "${message}" "progressDeadlineSeconds (${DEADLINE} s)" "Degraded message"
  assert_eq "$(cond "meteorapp/${APP}" Progressing reason)" RolledBack "Progressing reason"
  assert_eq "$(get "meteorapp/${APP}" '{.status.rollout.failedImage}')" "${BAD_IMAGE}" "status.rollout.failedImage"
  assert_eq "$(get "deployment/${APP}" "${IMAGE_PATH}")" "${GOOD_IMAGE}" "deployment/${APP} image (rolled back)"
  assert_eq "$(get "deployment/${APP}" "${TEMPLATE_PATH}")" "${good}" "deployment/${APP} template (the last available)"
  wait_until 60 "a Warning event RolledBack on meteorapp/${APP}" has_warning_event "${APP}" RolledBack
  wait_serving "${E2E_TIMEOUT}" "2 ready app pods run ${GOOD_IMAGE} (the failed pod is gone)" \
    app_pods_are 2 'p["spec"]["containers"][0]["image"] == arg' "${GOOD_IMAGE}"
  wait_serving 60 "Service ${APP}-app has 2 ready endpoints on port 3000" endpoints_are "${APP}-app" 2 3000

  # It stays there: the spec still asks for the failed template, nothing is written.
  local deployment_generation
  deployment_generation="$(get "deployment/${APP}" '{.metadata.generation}')"
  stays_serving 30 "deployment/${APP} stays rolled back (generation ${deployment_generation}, ${GOOD_IMAGE})" \
    deployment_stays "${deployment_generation}" "${GOOD_IMAGE}" RolledBack

  # A spec fix is a new attempt: Degraded clears.
  patch_app "{\"spec\":{\"image\":\"${GOOD_IMAGE}\"}}"
  generation="$(get "meteorapp/${APP}" '{.metadata.generation}')"
  wait_serving 120 "Degraded=False for the fixed generation ${generation}" \
    condition_is "meteorapp/${APP}" Degraded False AsExpected "${generation}"
  assert_eq "$(get "meteorapp/${APP}" '{.status.rollout.failedImage}')" "" "status.rollout.failedImage (cleared)"
  assert_eq "$(get "deployment/${APP}" "${IMAGE_PATH}")" "${GOOD_IMAGE}" "deployment/${APP} image"
  wait_app_settled

  # autoRollback: false reports the stuck rollout and leaves the failed template in place.
  patch_app '{"spec":{"rollout":{"autoRollback":false}}}'
  wait_ready "meteorapp/${APP}"
  patch_app "{\"spec\":{\"image\":\"${BAD_IMAGE}\"}}"
  generation="$(get "meteorapp/${APP}" '{.metadata.generation}')"
  wait_serving $((DEADLINE + 90)) "Degraded=True RolloutStuck for generation ${generation} (autoRollback: false)" \
    condition_is "meteorapp/${APP}" Degraded True RolloutStuck "${generation}"
  assert_eq "$(cond "meteorapp/${APP}" Progressing reason)" RolloutStuck "Progressing reason"
  assert_eq "$(get "meteorapp/${APP}" '{.status.rollout.failedImage}')" "" "status.rollout.failedImage (nothing rolled back)"
  deployment_generation="$(get "deployment/${APP}" '{.metadata.generation}')"
  stays_serving 15 "deployment/${APP} stays on ${BAD_IMAGE} (generation ${deployment_generation})" \
    deployment_stays "${deployment_generation}" "${BAD_IMAGE}" RolloutStuck

  apply_app # the good image again
  generation="$(get "meteorapp/${APP}" '{.metadata.generation}')"
  wait_serving 120 "Degraded=False for the fixed generation ${generation}" \
    condition_is "meteorapp/${APP}" Degraded False AsExpected "${generation}"
  drop_rollout_overrides
  wait_app_settled
}

# deployment_stays GENERATION IMAGE REASON: the app Deployment is still at GENERATION on IMAGE, and
# the MeteorApp still Degraded with REASON.
deployment_stays() {
  field_is "deployment/${APP}" '{.metadata.generation}' "$1" \
    && field_is "deployment/${APP}" "${IMAGE_PATH}" "$2" \
    && condition_is "meteorapp/${APP}" Degraded True "$3"
}

# drift: edits of the children by someone else (kubectl scale, a Service selector patch, kubectl
# rollout undo) are put back within 30 s, the operator owning the fields again; a steady app makes
# no write.
scenario_drift() {
  ensure_app_ready
  wait_app_settled

  # 1. kubectl scale of the app Deployment (the scale subresource).
  local generation
  generation="$(get "deployment/${APP}" '{.metadata.generation}')"
  k scale "deployment/${APP}" --replicas=3 >/dev/null || fail "kubectl scale deployment/${APP} --replicas=3 failed"
  wait_field 30 "deployment/${APP}" '{.spec.replicas}' 2
  assert_written_twice "deployment/${APP}" "${generation}"
  assert_operator_owns "deployment/${APP}" f:spec f:replicas
  wait_until 120 "deployment/${APP} settled at 2 replicas" app_settled

  # 2. The front Service's selector (the proxy pods, the proxy being on by default).
  local selector edited
  selector="$(get "service/${APP}" '{.spec.selector}')"
  edited="$(k patch "service/${APP}" --type=merge -p '{"spec":{"selector":{"app.kubernetes.io/component":"drifted"}}}' \
    -o 'jsonpath={.spec.selector.app\.kubernetes\.io/component}')" || fail "kubectl patch service/${APP} failed"
  assert_eq "${edited}" drifted "service/${APP} selector component after kubectl patch"
  wait_field 30 "service/${APP}" '{.spec.selector}' "${selector}"
  assert_operator_owns "service/${APP}" f:spec f:selector f:app.kubernetes.io/component
  wait_until 60 "Service ${APP} has the 2 ready proxy endpoints on port 8080 again" endpoints_are "${APP}" 2 8080

  # 3. kubectl rollout undo, once the Deployment has a second template to go back to.
  local before
  before="$(get "deployment/${APP}" "${TEMPLATE_PATH}")"
  patch_app '{"spec":{"env":[{"name":"WHOAMI_PORT_NUMBER","value":"3000"},{"name":"E2E_DRIFT","value":"1"}]}}'
  wait_until 60 "deployment/${APP} has a new pod template" field_is_not "deployment/${APP}" "${TEMPLATE_PATH}" "${before}"
  wait_rolled_out
  wait_until 120 "deployment/${APP} settled" app_settled
  local template applied out
  template="$(get "deployment/${APP}" "${TEMPLATE_PATH}")"
  applied="$(get "deployment/${APP}" '{.metadata.annotations.meteorfleet\.dev/applied-hash}')"
  generation="$(get "deployment/${APP}" '{.metadata.generation}')"
  out="$(k rollout undo "deployment/${APP}" 2>&1)" || fail "kubectl rollout undo deployment/${APP} failed: ${out}"
  assert_contains "${out}" "rolled back" "kubectl rollout undo"
  wait_field 30 "deployment/${APP}" "${TEMPLATE_PATH}" "${template}"
  assert_written_twice "deployment/${APP}" "${generation}"
  assert_eq "$(get "deployment/${APP}" '{.metadata.annotations.meteorfleet\.dev/applied-hash}')" "${applied}" \
    "deployment/${APP} annotation meteorfleet.dev/applied-hash (restored)"
  assert_operator_owns "deployment/${APP}" f:spec f:template f:metadata f:labels f:meteorfleet.dev/template-hash
  wait_rolled_out

  # 4. A steady app makes no write.
  wait_until 120 "deployment/${APP} settled" app_settled
  wait_app_settled
  assert_no_writes 20 "deployment/${APP}" "service/${APP}" "meteorapp/${APP}" \
    "deployment/${APP}-proxy" "service/${APP}-app" "poddisruptionbudget/${APP}-proxy" "secret/${APP}-proxy-cookie"

  apply_app # takes back spec.env
  wait_rolled_out
}

app_pod_uids() { k get pods -l "${APP_PODS}" -o 'jsonpath={.items[*].metadata.uid}' 2>/dev/null || true; }

# assert_written_twice RESOURCE GENERATION: RESOURCE's spec changed at least twice since GENERATION
# (the edit, then the operator's revert).
assert_written_twice() {
  local now
  now="$(get "$1" '{.metadata.generation}')"
  ((now >= $2 + 2)) || fail "$1 generation ${now}, want at least $(($2 + 2)) (edited, then put back)"
  log "ok: $1 generation $2 -> ${now} (edited, then put back)"
}

# readiness-generation: a spec that a reconcile-time problem blocks (a missing Secret) leaves the
# app Ready for the last accepted generation only, so kubectl wait on the new one does not pass,
# and leaves the running pods alone; creating the Secret lets it through.
scenario_readiness_generation() {
  ensure_app_ready
  wait_app_settled
  local accepted pods deployment_generation generation
  accepted="$(get "meteorapp/${APP}" '{.metadata.generation}')"
  pods="$(app_pod_uids)"
  deployment_generation="$(get "deployment/${APP}" '{.metadata.generation}')"
  k delete secret e2e-later --ignore-not-found >/dev/null || fail "cannot delete Secret e2e-later"

  patch_app '{"spec":{"env":[{"name":"WHOAMI_PORT_NUMBER","value":"3000"},{"name":"E2E_LATER","valueFrom":{"secretKeyRef":{"name":"e2e-later","key":"token"}}}]}}'
  generation="$(get "meteorapp/${APP}" '{.metadata.generation}')"
  ((generation > accepted)) || fail "meteorapp/${APP} generation ${generation} after the patch, want above ${accepted}"
  wait_until 60 "Degraded=True ReferenceNotFound for generation ${generation}" \
    condition_is "meteorapp/${APP}" Degraded True ReferenceNotFound "${generation}"
  assert_contains "$(cond "meteorapp/${APP}" Degraded message)" \
    "spec.env[1].valueFrom.secretKeyRef: Secret ${NS}/e2e-later not found" "Degraded message"
  assert_eq "$(cond "meteorapp/${APP}" Ready status)" True "Ready (the pods of generation ${accepted} still serve)"
  assert_eq "$(cond "meteorapp/${APP}" Ready observedGeneration)" "${accepted}" \
    "Ready observedGeneration (the last accepted generation, below ${generation})"
  assert_eq "$(get "meteorapp/${APP}" '{.status.observedGeneration}')" "${generation}" "status.observedGeneration"
  if k wait --for=condition=Ready "meteorapp/${APP}" --timeout=10s >/dev/null 2>&1; then
    fail "kubectl wait --for=condition=Ready passed on generation ${generation}, which was never applied"
  fi
  log "ok: kubectl wait --for=condition=Ready times out (10s) on generation ${generation}"
  assert_eq "$(get "deployment/${APP}" '{.metadata.generation}')" "${deployment_generation}" "deployment/${APP} generation (untouched)"
  assert_eq "$(app_pod_uids)" "${pods}" "app pod uids (untouched)"

  env_secret e2e-later token=now
  k wait --for=condition=Ready "meteorapp/${APP}" --timeout=120s >/dev/null \
    || fail "kubectl wait --for=condition=Ready did not pass within 120s of creating Secret e2e-later: $(cond "meteorapp/${APP}" Degraded reason): $(cond "meteorapp/${APP}" Degraded message)"
  log "ok: kubectl wait --for=condition=Ready passes once Secret e2e-later exists"
  assert_eq "$(cond "meteorapp/${APP}" Ready observedGeneration)" "${generation}" "Ready observedGeneration"
  wait_condition 60 "meteorapp/${APP}" Degraded False AsExpected
  wait_rolled_out # the new env rolls the pods

  apply_app # takes back spec.env
  wait_rolled_out
}

scenario_delete() {
  ensure_app_ready
  settings_configmap e2e-settings '{"public":{"e2e":3}}'
  patch_app '{"spec":{"workers":{"replicas":1}}}'
  wait_until 60 "Deployment ${APP}-worker created" exists "deployment/${APP}-worker"
  assert_exists "poddisruptionbudget/${APP}"

  k delete "meteorapp/${APP}" --timeout=120s >/dev/null || fail "kubectl delete meteorapp/${APP} failed"
  local res
  for res in "deployment/${APP}" "deployment/${APP}-worker" "service/${APP}" "poddisruptionbudget/${APP}" \
    $(proxy_objects "${APP}") "secret/${APP}-proxy-cookie"; do
    wait_until 120 "${res} garbage-collected" absent "${res}"
  done
  assert_exists secret/e2e-mongo
  assert_exists configmap/e2e-settings
}

# failover: two operator replicas; the leader pod is killed, then the MeteorApp's spec changes.
# Prints the seconds until status.observedGeneration catches up (a standby has to notice the
# Lease expired, take it and reconcile from its already-filled caches); fails past
# E2E_FAILOVER_SECONDS (60).
scenario_failover() {
  if [[ "${E2E_OPERATOR}" == local ]]; then
    log "skipped: E2E_OPERATOR=local runs one operator process outside the cluster; failover needs two in-cluster replicas"
    return 0
  fi
  local bound="${E2E_FAILOVER_SECONDS:-60}"
  ensure_app_ready
  trap 'set_operator_replicas 1 || log "warning: could not scale the operator back to 1 replica"' EXIT
  set_operator_replicas 2 || fail "cannot run 2 operator replicas"
  log "ok: 2 operator replicas running"
  # Let the standby list and watch (its caches are what makes the failover fast).
  sleep 5
  local leader
  leader="$(lease_holder_pod)"
  [[ "${leader}" == "${OPERATOR_RELEASE}-"* ]] || fail "no operator pod holds Lease meteor-operator (holder pod: '${leader}')"
  kubectl -n "${OPERATOR_NAMESPACE}" get pod "${leader}" >/dev/null 2>&1 \
    || fail "the Lease holder ${leader} is not a pod in ${OPERATOR_NAMESPACE}"
  log "leader: ${leader}"

  local started
  started="${EPOCHREALTIME}"
  kubectl -n "${OPERATOR_NAMESPACE}" delete pod "${leader}" --grace-period=0 --force >/dev/null 2>&1 \
    || fail "cannot delete the leader pod ${leader}"
  patch_app '{"spec":{"replicas":3}}'
  local deadline=$((SECONDS + bound + 30))
  until observed_current "meteorapp/${APP}"; do
    ((SECONDS < deadline)) || fail "status.observedGeneration of meteorapp/${APP} did not catch up within $((bound + 30))s of the leader's deletion"
    sleep 0.5
  done
  local elapsed
  elapsed="$(awk -v a="${started}" -v b="${EPOCHREALTIME}" 'BEGIN { printf "%.1f", b - a }')"
  log "failover: observedGeneration caught up ${elapsed}s after the leader pod was deleted"
  awk -v e="${elapsed}" -v b="${bound}" 'BEGIN { exit !(e <= b) }' \
    || fail "failover took ${elapsed}s (bound: ${bound}s)"
  local now
  now="$(lease_holder_pod)"
  [[ "${now}" != "${leader}" && "${now}" == "${OPERATOR_RELEASE}-"* ]] \
    || fail "after the failover the Lease is held by '${now}', want the other replica (not ${leader})"
  log "ok: Lease now held by ${now}"

  apply_app # back to 2 replicas
  wait_ready "meteorapp/${APP}"
}

# lease_holder_pod: the pod named by the Lease's holder (identities are POD_NAME_UUID).
lease_holder_pod() {
  local holder
  holder="$(kubectl -n "${OPERATOR_NAMESPACE}" get lease meteor-operator -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null || true)"
  echo "${holder%%_*}"
}

# set_operator_replicas N: runs N operator pods (helm value `replicas`, or a scale of the
# Deployment of manifests/install.yaml) and waits until they are available.
set_operator_replicas() {
  case "${E2E_INSTALL}" in
    helm)
      helm upgrade "${OPERATOR_RELEASE}" "${ROOT}/charts/meteor-operator" --namespace "${OPERATOR_NAMESPACE}" \
        --reuse-values --set replicas="$1" --wait --timeout "${E2E_TIMEOUT}s" >/dev/null || return 1
      ;;
    manifest)
      kubectl -n "${OPERATOR_NAMESPACE}" scale "deployment/${OPERATOR_RELEASE}" --replicas="$1" >/dev/null || return 1
      ;;
    *) return 1 ;;
  esac
  kubectl -n "${OPERATOR_NAMESPACE}" rollout status "deployment/${OPERATOR_RELEASE}" --timeout="${E2E_TIMEOUT}s" >/dev/null
}

# === runner ======================================================================================

# fleet: E2E_FLEET_APPS (default 500) MeteorApps of one pod each, created at once. Prints the
# scale table (apps, time until all are Ready, slowest app, operator RSS, API requests and writes
# per app from the operator's own request counter) and fails past issue 10's targets: at most 8
# requests and 4.5 writes per app from creation to Ready, RSS at most 40 MiB for 1,000 apps and
# 60 MiB for 3,000 (linear between, 40 MiB below 1,000), every app Ready within a minute.
scenario_fleet() {
  local n="${E2E_FLEET_APPS:-500}" started room
  room="$(schedulable_pod_room)"
  ((room >= n + 1)) || fail "the fleet needs $((n + 1)) pods, the schedulable nodes have room for ${room}: use more nodes or a smaller E2E_FLEET_APPS (e2e/README.md)"
  log "room for ${room} more pods on the schedulable nodes"
  ensure_mongo_secret
  # One app alone first: how fast the cluster makes a lone app Ready, to compare the fleet's last.
  fleet_manifests solo 1 | k apply --server-side --field-manager=e2e -f - >/dev/null || fail "cannot create the solo app"
  wait_until 120 "the solo app Ready" fleet_ready 1 solo
  local solo
  solo="$(fleet_times solo | awk '{print $1}')"
  log "an app alone: Ready ${solo}s after its creation"
  local before
  before="$(operator_requests)"
  started=${SECONDS}
  fleet_manifests fleet "${n}" | k apply --server-side --field-manager=e2e -f - >/dev/null || fail "cannot create the fleet"
  log "created ${n} MeteorApps in $((SECONDS - started))s"
  wait_until 900 "all ${n} fleet apps Ready" fleet_ready "${n}" fleet
  local all_ready=$((SECONDS - started))
  # Let the last status writes land before reading the counters.
  sleep 15
  local after worst last pods rss
  after="$(operator_requests)"
  read -r worst last pods <<<"$(fleet_times fleet)"
  rss="$(operator_rss_bytes)"
  python3 - "${n}" "${all_ready}" "${worst}" "${last}" "${solo}" "${rss}" "${before}" "${after}" <<'PY' || fail "the fleet missed its targets (table above)"
import sys
n, all_ready, worst, last, solo, rss = (int(float(x)) for x in sys.argv[1:7])
def counts(text):
    out = {}
    for pair in text.split(","):
        if "=" in pair:
            kind, value = pair.split("=")
            out[kind] = float(value)
    return out
before, after = counts(sys.argv[7]), counts(sys.argv[8])
delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
per_app = {k: v / n for k, v in delta.items()}
requests = sum(per_app.get(k, 0) for k in ("get", "apply", "status", "event", "create", "delete"))
writes = sum(per_app.get(k, 0) for k in ("apply", "status", "event", "create", "delete"))
limit_mib = 40 if n <= 1000 else 40 + (n - 1000) * 20 / 2000
print(f"| apps | all Ready after the first was applied | slowest app, creation → Ready | app created last → Ready (alone: {solo} s) | operator RSS | requests per app (get / apply / status / event) | writes per app |")
print("|---|---|---|---|---|---|---|")
print(f"| {n} | {all_ready} s | {worst} s | {last} s | {rss / 1048576:.1f} MiB | {requests:.2f} ({per_app.get('get', 0):.2f} / {per_app.get('apply', 0):.2f} / {per_app.get('status', 0):.2f} / {per_app.get('event', 0):.2f}) | {writes:.2f} |")
print(f"watches and lists in the window (not per app): {delta.get('watch', 0):.0f} / {delta.get('list', 0):.0f}")
failed = []
if requests > 8: failed.append(f"{requests:.2f} requests per app (target: at most 8)")
if writes > 4.5: failed.append(f"{writes:.2f} writes per app (target: at most 4.5)")
if rss > limit_mib * 1048576: failed.append(f"RSS {rss / 1048576:.1f} MiB (target: at most {limit_mib:.0f} MiB for {n} apps)")
if worst > 60: failed.append(f"slowest app {worst} s (target: within a minute)")
for f in failed: print("MISSED:", f)
sys.exit(1 if failed else 0)
PY
  assert_eq "${pods}" "${n}" "ready fleet pods (one per app)"
  k delete meteorapps -l e2e-fleet --wait=false >/dev/null || fail "cannot delete the fleet"
}

# fleet_manifests PREFIX N: N MeteorApps of one small whoami pod each, labelled e2e-fleet=PREFIX.
# Without the proxy: two proxy pods per app would triple the pods, and the fleet measures the
# operator, not the routing tier (the routing scenario does that).
fleet_manifests() {
  # Small requests so that hundreds of whoami pods fit on kind nodes.
  python3 - "$1" "$2" <<'PY'
import sys
prefix, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    print(f"""---
apiVersion: meteorfleet.dev/v1alpha1
kind: MeteorApp
metadata: {{name: {prefix}-{i:04d}, labels: {{e2e-fleet: "{prefix}"}}}}
spec:
  image: traefik/whoami:v1.10
  imagePullPolicy: IfNotPresent
  replicas: 1
  rootUrl: http://{prefix}-{i:04d}.e2e.example.com
  env: [{{name: WHOAMI_PORT_NUMBER, value: "3000"}}]
  resources: {{requests: {{cpu: 5m, memory: 16Mi}}, limits: {{memory: 64Mi}}}}
  rollout: {{drainSeconds: 0, shutdownSeconds: 5}}
  routing: {{proxy: {{enabled: false}}}}
  mongo: {{external: {{url: {{name: e2e-mongo, key: MONGO_URL}}}}}}""")
PY
}

# fleet_times PREFIX: "slowest last ready-pods": the longest creation → Ready of the apps
# labelled e2e-fleet=PREFIX, that of the one created last, and their ready pods.
fleet_times() {
  k get meteorapps -l "e2e-fleet=$1" -o json | python3 -c '
import datetime, json, sys
def t(s): return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
worst, last, last_created, pods = 0, 0, None, 0
for app in json.load(sys.stdin)["items"]:
    ready = next(c for c in app["status"]["conditions"] if c["type"] == "Ready")
    created = t(app["metadata"]["creationTimestamp"])
    took = (t(ready["lastTransitionTime"]) - created).total_seconds()
    worst = max(worst, took)
    if last_created is None or created >= last_created:
        last_created, last = created, took
    pods += app["status"].get("readyReplicas") or 0
print(int(worst), int(last), pods)'
}

# schedulable_pod_room: pods the nodes that take workloads (not cordoned, no NoSchedule or
# NoExecute taint) can still run: allocatable pods minus the pods bound to them.
schedulable_pod_room() {
  local nodes bound
  nodes="$(kubectl get nodes -o json)" || fail "cannot list nodes"
  bound="$(kubectl get pods -A --field-selector=status.phase!=Succeeded,status.phase!=Failed \
    -o 'jsonpath={range .items[*]}{.spec.nodeName}{"\n"}{end}')" || fail "cannot list pods"
  python3 -c '
import json, sys
def takes_pods(n):
    taints = n["spec"].get("taints") or []
    return not n["spec"].get("unschedulable") and not any(t["effect"] in ("NoSchedule", "NoExecute") for t in taints)
nodes = {n["metadata"]["name"]: int(n["status"]["allocatable"]["pods"]) for n in json.load(sys.stdin)["items"] if takes_pods(n)}
print(sum(nodes.values()) - sum(1 for name in sys.argv[1].split() if name in nodes))
' "${bound}" <<<"${nodes}"
}

# fleet_ready N PREFIX: at least N apps labelled e2e-fleet=PREFIX are Ready.
fleet_ready() {
  local ready
  ready="$(k get meteorapps -l "e2e-fleet=$2" \
    -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$' || true)"
  [[ "${ready}" -ge "$1" ]]
}

# operator_metrics: the operator's /metrics text.
operator_metrics() {
  if [[ "${E2E_OPERATOR}" == local ]]; then
    python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
      "http://${E2E_ADMIN_ADDR}/metrics" || fail "cannot read the local operator's /metrics"
  else
    kubectl get --raw "/api/v1/namespaces/${OPERATOR_NAMESPACE}/services/${OPERATOR_RELEASE}-metrics:metrics/proxy/metrics" \
      || fail "cannot read the operator's /metrics"
  fi
}

# operator_rss_bytes: process_resident_memory_bytes from the operator's /metrics.
operator_rss_bytes() {
  operator_metrics | awk '$1 == "process_resident_memory_bytes" { printf "%d", $2 }'
}

# operator_requests: "kind=count,..." from meteor_operator_api_requests_total.
operator_requests() {
  operator_metrics | sed -n 's/^meteor_operator_api_requests_total{kind="\([a-z]*\)"} \([0-9.e+]*\)$/\1=\2/p' | paste -sd, -
}

cleanup() {
  local rc=$?
  if [[ "${E2E_OPERATOR}" == "local" ]]; then
    stop_local_operator
  fi
  if [[ "${E2E_KEEP}" == 1 ]]; then
    echo "E2E_KEEP=1: namespace ${NS} kept"
  elif [[ -n "${NAMESPACE_CREATED:-}" ]]; then
    kubectl delete namespace "${NS}" --wait=true --timeout=120s >/dev/null 2>&1 \
      || echo "warning: namespace ${NS} not deleted within 120s" >&2
  fi
  exit "${rc}"
}

main() {
  bash "${ROOT}/hack/install-tools.sh" >/dev/null || die "hack/install-tools.sh failed"
  need kubectl helm python3
  local selected=("$@")
  ((${#selected[@]} > 0)) || selected=("${SCENARIOS[@]}")
  local name
  for name in "${selected[@]}"; do
    [[ " ${SCENARIOS[*]} " == *" ${name} "* ]] || die "unknown scenario '${name}'; scenarios: ${SCENARIOS[*]}"
  done
  [[ "${selected[0]}" == install ]] || selected=(install "${selected[@]}")

  header "e2e: cluster"
  kubectl version --request-timeout=15s >/dev/null 2>&1 \
    || die "no Kubernetes cluster reachable (KUBECONFIG=${KUBECONFIG:-~/.kube/config}); see e2e/README.md"
  info "context $(kubectl config current-context 2>/dev/null || echo '?'), operator ${E2E_OPERATOR}, namespace ${NS}"

  trap cleanup EXIT
  if kubectl get namespace "${NS}" >/dev/null 2>&1; then
    info "deleting namespace ${NS} left by an earlier run"
    kubectl delete namespace "${NS}" --wait=true --timeout=180s >/dev/null || die "cannot delete namespace ${NS}"
  fi
  kubectl apply -f - >/dev/null <<YAML || die "cannot create namespace ${NS}"
apiVersion: v1
kind: Namespace
metadata:
  name: ${NS}
  labels:
    app.kubernetes.io/part-of: meteor-operator-e2e
    # App pods must meet the restricted Pod Security Standard.
    pod-security.kubernetes.io/enforce: restricted
YAML
  NAMESPACE_CREATED=1

  local passed=0 failed=0 rc
  local -a results=()
  for name in "${selected[@]}"; do
    header "e2e: ${name}"
    if [[ "${name}" != install && " ${results[*]} " == *" FAIL:install "* ]]; then
      echo "FAIL ${name} (not run: install failed)"
      results+=("FAIL:${name}")
      failed=$((failed + 1))
      continue
    fi
    set +e
    (
      set -euo pipefail
      "scenario_${name//-/_}"
    )
    rc=$?
    set -e
    if ((rc == 0)); then
      echo "${_GREEN}PASS ${name}${_RESET}"
      results+=("PASS:${name}")
      passed=$((passed + 1))
    else
      diagnostics
      echo "${_RED}FAIL ${name}${_RESET}"
      results+=("FAIL:${name}")
      failed=$((failed + 1))
    fi
  done

  echo
  local result
  for result in "${results[@]}"; do echo "  ${result%%:*} ${result#*:}"; done
  echo
  echo "e2e: ${passed} passed, ${failed} failed"
  ((failed == 0))
}

main "$@"
