# shellcheck shell=bash
# The `autoscaling` scenario of e2e/run.sh, which sources this file after lib.sh; it uses both
# (and run.sh's wait_routed, ready_pods, proxies_follow, assert_owned, can_i, has_warning_event).
# See e2e/README.md, "The autoscaling scenario". Needs metrics-server in the cluster.
#
# App e2e-as (testdata/autoscaling.yaml: the routing scenario's SockJS app behind the sticky
# proxy, spec.autoscaling 2..4 at 50 % of a 100m CPU request, scale-down after 30 s by one pod per
# 30 s) gets its HorizontalPodAutoscaler on the MeteorApp's scale subresource and Autoscaled=True.
# App e2e-as-nocpu (no CPU request) gets Autoscaled=False MetricsUnavailable. A load pod makes
# e2e-as's pods burn CPU until the HPA scales it up (through the MeteorApp: only the operator
# writes the Deployment); WebSockets are then held open unevenly on its pods (fewest on the
# oldest), the load stops, and the HPA scales it down to 2: the pods removed must be those with
# the lowest pod-deletion-cost, which the operator sets to each pod's open sessions just before
# it lowers the Deployment. Finally spec.autoscaling is removed: the HPA goes, replicas stay.

AS="e2e-as"
AS_NOCPU="e2e-as-nocpu"
AS_PODS="app.kubernetes.io/instance=${AS},app.kubernetes.io/component=app"
AS_PROXY_PODS="app.kubernetes.io/instance=${AS},app.kubernetes.io/component=proxy"
# As in e2e/testdata/autoscaling.yaml:
AS_MIN=2
AS_MAX=4
AS_TARGET=50
AS_DOWN_WINDOW=30
AS_DOWN_PERIOD=30
AS_LOAD_POD="e2e-as-load"
AS_BURN_MS=50   # CPU per request of the load (GET /peer/burn?ms=50) ...
AS_PAUSE_MS=100 # ... and the pause of each loop between requests: about 1/3 core per loop
# WebSockets held on each app pod during the scale-down, oldest pod first: the ReplicaSet
# controller's own choice among equally ready pods is the newest, so the costs must overrule it.
AS_SESSIONS=(1 3 5 7)
AS_OUT="${E2E_OUT}/autoscaling"
AS_METRICS_SERVER_URL="https://github.com/kubernetes-sigs/metrics-server/releases/download/v0.7.2/components.yaml"
AS_WATCH_PIDS=()
AS_SESSIONS_PID=""
AS_PEAK=0
AS_PDB_UID=""
AS_PLAN="{}"
AS_PLAN_BY_IP="{}"

scenario_autoscaling() {
  autoscaling_preflight
  trap autoscaling_cleanup EXIT
  ensure_mongo_secret

  log "--- ${AS}: autoscaled ${AS_MIN}..${AS_MAX} at ${AS_TARGET} % CPU; ${AS_NOCPU}: autoscaled, no CPU request"
  autoscaling_apply autoscaling.yaml
  autoscaling_apply autoscaling-no-cpu-request.yaml
  autoscaling_hpa
  autoscaling_without_metrics

  log "--- load: the HPA scales ${AS} up through the MeteorApp"
  autoscaling_scale_up

  log "--- sessions held unevenly, the load stops: the HPA scales ${AS} down to ${AS_MIN}"
  autoscaling_scale_down

  log "--- spec.autoscaling removed: the HPA goes, spec.replicas stays"
  autoscaling_off

  log "--- delete"
  stop_port_forwards
  k delete "meteorapp/${AS}" --timeout=120s >/dev/null || fail "kubectl delete meteorapp/${AS} failed"
  wait_until 120 "deployment/${AS} garbage-collected" absent "deployment/${AS}"
}

# autoscaling_preflight: the CRD knows spec.autoscaling, the resource metrics API answers
# (metrics-server), and an in-cluster operator may manage HPAs and annotate pods.
autoscaling_preflight() {
  rm -rf "${AS_OUT}"
  mkdir -p "${AS_OUT}"
  [[ "${E2E_AUTOSCALING_LOAD}" =~ ^[1-9][0-9]*$ ]] \
    || fail "E2E_AUTOSCALING_LOAD must be a number of request loops (1 or more), not '${E2E_AUTOSCALING_LOAD}'"
  local type
  type="$(kubectl get crd meteorapps.meteorfleet.dev \
    -o 'jsonpath={.spec.versions[?(@.name=="v1alpha1")].schema.openAPIV3Schema.properties.spec.properties.autoscaling.type}' 2>/dev/null || true)"
  [[ "${type}" == object ]] \
    || fail "the installed CRD meteorapps.meteorfleet.dev has no spec.autoscaling: install the CRD of this checkout (crds/meteorapps.yaml, or the chart)"
  local available
  available="$(kubectl get apiservice v1beta1.metrics.k8s.io \
    -o 'jsonpath={.status.conditions[?(@.type=="Available")].status}' 2>/dev/null || true)"
  [[ "${available}" == True ]] \
    || fail "the resource metrics API (APIService v1beta1.metrics.k8s.io) is ${available:+not available (Available=${available})}${available:-not registered}: the autoscaling scenario needs metrics-server. On kind: kubectl apply -f ${AS_METRICS_SERVER_URL} && kubectl -n kube-system patch deployment metrics-server --type=json -p '[{\"op\":\"add\",\"path\":\"/spec/template/spec/containers/0/args/-\",\"value\":\"--kubelet-insecure-tls\"}]' && kubectl -n kube-system rollout status deployment/metrics-server (e2e/README.md, The autoscaling scenario)"
  # metrics-server serves nothing for a while after it starts (and never on kind without
  # --kubelet-insecure-tls): wait a little for the first pod metrics.
  local deadline=$((SECONDS + 90))
  until kubectl top pods -n kube-system --no-headers >"${AS_OUT}/top.txt" 2>&1 && [[ -s "${AS_OUT}/top.txt" ]]; do
    ((SECONDS < deadline)) \
      || fail "kubectl top pods -n kube-system gives no pod metrics within 90s ($(tail -1 "${AS_OUT}/top.txt")): metrics-server runs but cannot scrape the kubelets; on kind it needs --kubelet-insecure-tls (e2e/README.md, The autoscaling scenario); its log: $(kubectl -n kube-system logs deployment/metrics-server --tail=3 2>&1 | tr '\n' ' ')"
    sleep 5
  done
  log "ok: CRD with spec.autoscaling; metrics API available, kubectl top pods answers"
  if [[ "${E2E_OPERATOR}" == incluster ]]; then
    local verb
    for verb in get list watch create patch delete; do
      can_i yes "${verb}" horizontalpodautoscalers.autoscaling "${NS}"
    done
    can_i yes list pods "${NS}"
    can_i yes patch pods "${NS}"
    log "ok: the operator's ServiceAccount may manage HorizontalPodAutoscalers and patch pods (pod-deletion-cost) in ${NS}"
  fi
}

# autoscaling_cleanup: EXIT trap of the scenario (its subshell): stops what it started, prints
# what a failure needs, and deletes its apps and the load pod (the apps stay with E2E_KEEP=1).
autoscaling_cleanup() {
  local rc=$? pid
  touch "${AS_OUT}/stop" 2>/dev/null || true
  [[ -z "${AS_SESSIONS_PID}" ]] || { kill "${AS_SESSIONS_PID}" 2>/dev/null || true; }
  for pid in "${AS_WATCH_PIDS[@]}"; do kill "${pid}" 2>/dev/null || true; done
  stop_port_forwards || true
  if ((rc != 0)); then
    echo "    --- autoscaling: HPAs, the load pod's log, the app and proxy pods' logs (last 10 lines each) ---"
    k describe horizontalpodautoscalers 2>&1 | tail -40 | sed 's/^/    /' || true
    k get pods -l "app.kubernetes.io/instance=${AS}" \
      -o 'jsonpath={range .items[*]}{.metadata.name} created {.metadata.creationTimestamp} cost={.metadata.annotations.controller\.kubernetes\.io/pod-deletion-cost} deleting={.metadata.deletionTimestamp}{"\n"}{end}' \
      2>&1 | sed 's/^/    /' || true
    k top pods 2>&1 | sed 's/^/    /' || true
    pod_logs "${NS}" 5 "pod/${AS_LOAD_POD}" 2>&1 | sed 's/^/    /' || true
    pod_logs "${NS}" 10 "app.kubernetes.io/instance=${AS}" 2>&1 | sed 's/^/    /' || true
    echo "    (sessions, watches and the report: ${AS_OUT#"${ROOT}/"})"
  fi
  k delete pod "${AS_LOAD_POD}" --ignore-not-found --wait=false --grace-period=1 >/dev/null 2>&1 || true
  if [[ "${E2E_KEEP}" != 1 ]]; then
    k delete meteorapp "${AS}" "${AS_NOCPU}" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
}

# autoscaling_apply FILE: applies e2e/testdata/FILE with E2E_SOCKJS_IMAGE as the image.
autoscaling_apply() {
  sed "s|image: meteor-e2e-sockjs:e2e|image: ${E2E_SOCKJS_IMAGE}|" "${E2E_DIR}/testdata/$1" \
    | k apply --server-side --force-conflicts --field-manager=e2e -f - >/dev/null \
    || fail "kubectl apply e2e/testdata/$1 failed"
}

# autoscaling_hpa: step 2. The HPA scales the MeteorApp (its scale subresource), with the spec's
# bounds, target and behavior; Autoscaled=True; status.autoscaling follows the HPA.
autoscaling_hpa() {
  local res="meteorapp/${AS}" hpa="horizontalpodautoscaler/${AS}" uid
  wait_routed "${res}"
  wait_until 60 "${hpa} created" exists "${hpa}"
  uid="$(get "${res}" '{.metadata.uid}')"
  assert_owned "${hpa}" "${uid}" "${AS}"
  json_verify "${hpa}" "
s = o['spec']
down = (s.get('behavior') or {}).get('scaleDown') or {}
metrics = [(m['type'], m['resource']['name'], m['resource']['target']) for m in s.get('metrics') or []]
ok = (o['apiVersion'] == 'autoscaling/v2'
      and s['scaleTargetRef'] == {'apiVersion': 'meteorfleet.dev/v1alpha1', 'kind': 'MeteorApp', 'name': '${AS}'}
      and s.get('minReplicas') == ${AS_MIN} and s['maxReplicas'] == ${AS_MAX}
      and metrics == [('Resource', 'cpu', {'type': 'Utilization', 'averageUtilization': ${AS_TARGET}})]
      and down.get('stabilizationWindowSeconds') == ${AS_DOWN_WINDOW}
      and [(p['type'], p['value'], p['periodSeconds']) for p in down.get('policies') or []] == [('Pods', 1, ${AS_DOWN_PERIOD})]
      and o['metadata']['labels'].get('app.kubernetes.io/managed-by') == 'meteor-operator')" \
    "${hpa} (autoscaling/v2): scaleTargetRef MeteorApp ${AS} (meteorfleet.dev/v1alpha1), min ${AS_MIN}, max ${AS_MAX}, CPU ${AS_TARGET} %, scaleDown window ${AS_DOWN_WINDOW} s and 1 pod per ${AS_DOWN_PERIOD} s"
  # The HPA needs the new pods' first metrics: MetricsUnavailable until then.
  wait_condition 180 "${res}" Autoscaled True
  log "Autoscaled: $(cond "${res}" Autoscaled reason): $(cond "${res}" Autoscaled message)"
  wait_until 60 "${res} status.autoscaling: currentReplicas ${AS_MIN}, desiredReplicas ${AS_MIN}" \
    field_is "${res}" '{.status.autoscaling.currentReplicas}/{.status.autoscaling.desiredReplicas}' "${AS_MIN}/${AS_MIN}"
  assert_eq "$(get "${res}" '{.spec.replicas}')/$(get "deployment/${AS}" '{.spec.replicas}')" "${AS_MIN}/${AS_MIN}" \
    "${res} spec.replicas / deployment/${AS} spec.replicas at rest"
  assert_exists "poddisruptionbudget/${AS}"
  AS_PDB_UID="$(get "poddisruptionbudget/${AS}" '{.metadata.uid}')"
}

# autoscaling_without_metrics: no CPU request, so no utilization: Autoscaled=False
# MetricsUnavailable with the HPA's reason; the PDB follows maxReplicas (2), not the 1 replica.
autoscaling_without_metrics() {
  local res="meteorapp/${AS_NOCPU}" message
  wait_until 60 "horizontalpodautoscaler/${AS_NOCPU} created" exists "horizontalpodautoscaler/${AS_NOCPU}"
  wait_condition 180 "${res}" Autoscaled False MetricsUnavailable
  message="$(cond "${res}" Autoscaled message)"
  assert_contains "${message}" "HorizontalPodAutoscaler FailedGetResourceMetric" "${res} Autoscaled message (the HPA's reason)"
  log "Autoscaled=False MetricsUnavailable: ${message}"
  assert_eq "$(get "${res}" '{.spec.replicas}')" 1 "${res} spec.replicas"
  assert_exists "poddisruptionbudget/${AS_NOCPU}"
  log "ok: poddisruptionbudget/${AS_NOCPU} exists with 1 replica (an autoscaled app's budget follows maxReplicas 2)"
  k delete "${res}" --wait=false >/dev/null || fail "cannot delete ${res}"
}

# autoscaling_forwards: port-forwards to each proxy pod of AS (8080 as A and B, 9090 as admin-A
# and admin-B).
autoscaling_forwards() {
  local -a proxies
  mapfile -t proxies < <(ready_pods "${AS_PROXY_PODS}" | awk '{print $1}')
  ((${#proxies[@]} == 2)) || fail "want 2 ready proxy pods of ${AS}, found ${#proxies[@]}: ${proxies[*]}"
  port_forward A "pod/${proxies[0]}" 8080
  port_forward B "pod/${proxies[1]}" 8080
  port_forward admin-A "pod/${proxies[0]}" 9090
  port_forward admin-B "pod/${proxies[1]}" 9090
}

# autoscaling_load_pod: the load pod's manifest (JSON): restricted-compliant, image
# E2E_SOCKJS_IMAGE running e2e/autoscaling/load.js against the front Service (service_url: its
# DNS name; on the loopback control plane, which has no cluster DNS, one of its proxy pods). Its
# label e2e.meteorfleet.dev/run-on-loopback has hack/e2e-local.sh really run it (nothing on kind).
autoscaling_load_pod() {
  local url
  url="$(service_url "${AS}" 80)" || exit 1
  python3 - "${AS_LOAD_POD}" "${E2E_SOCKJS_IMAGE}" "${url}/peer/burn?ms=${AS_BURN_MS}" \
    "${E2E_AUTOSCALING_LOAD}" "${AS_PAUSE_MS}" "${E2E_DIR}/autoscaling/load.js" <<'PY'
import json, sys
name, image, url, concurrency, pause, script = sys.argv[1:7]
print(json.dumps({
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "meteor-operator-e2e",
                                          "e2e.meteorfleet.dev/run-on-loopback": "true"}},
    "spec": {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 2,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "load", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["node", "-e", open(script).read()],
            "env": [{"name": "LOAD_URL", "value": url}, {"name": "LOAD_CONCURRENCY", "value": concurrency},
                    {"name": "LOAD_PAUSE_MS", "value": pause}],
            "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "96Mi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }],
    },
}))
PY
}

# hpa_desired_above N: the HPA wants more than N replicas.
hpa_desired_above() {
  local desired
  desired="$(get "horizontalpodautoscaler/${AS}" '{.status.desiredReplicas}')"
  [[ -n "${desired}" ]] && ((desired > $1))
}

# app_follows_hpa: the HPA's desiredReplicas is the MeteorApp's spec.replicas and the app
# Deployment's.
app_follows_hpa() {
  local desired
  desired="$(get "horizontalpodautoscaler/${AS}" '{.status.desiredReplicas}')"
  [[ -n "${desired}" ]] || return 1
  [[ "$(get "meteorapp/${AS}" '{.spec.replicas}')/$(get "deployment/${AS}" '{.spec.replicas}')" == "${desired}/${desired}" ]]
}

# autoscaling_scale_up: step 3. Load until the HPA wants more than AS_MIN, the MeteorApp and the
# Deployment follow; the HPA writes only the MeteorApp's scale, the operator only the Deployment.
autoscaling_scale_up() {
  autoscaling_forwards
  py_check "$(http_get "${PF_URL[A]}/peer/burn?ms=1")" 'o["status"] == 200 and "burnedMs" in json.loads(o["body"])' \
    "GET /peer/burn?ms=1 through the proxy: an app pod burns CPU on demand (if this fails, E2E_SOCKJS_IMAGE=${E2E_SOCKJS_IMAGE} predates /peer/burn: rebuild it from e2e/routing/Dockerfile and load it, e2e/README.md)"
  autoscaling_load_pod | k apply -f - >/dev/null || fail "cannot create pod ${AS_LOAD_POD}"
  local deadline=$((SECONDS + 120)) problems
  until [[ "$(get "pod/${AS_LOAD_POD}" '{.status.phase}')" == Running ]]; do
    problems="$(pull_problems app.kubernetes.io/part-of=meteor-operator-e2e)"
    [[ -z "${problems}" ]] || fail "the load pod cannot get its image: ${problems}"
    ((SECONDS < deadline)) || fail "pod ${AS_LOAD_POD} not running within 120s: $(get "pod/${AS_LOAD_POD}" '{.status}')"
    sleep 2
  done
  local started=${SECONDS}
  log "load: pod ${AS_LOAD_POD}, ${E2E_AUTOSCALING_LOAD} loops of GET /peer/burn?ms=${AS_BURN_MS} through service/${AS}, ${AS_PAUSE_MS} ms apart"

  # The metrics pipeline: metrics-server scrapes every 15 s, the HPA looks every 15 s.
  deadline=$((SECONDS + 240))
  until hpa_desired_above "${AS_MIN}"; do
    ((SECONDS < deadline)) \
      || fail "horizontalpodautoscaler/${AS} still wants $(get "horizontalpodautoscaler/${AS}" '{.status.desiredReplicas}') replicas after 240s of load (CPU $(get "horizontalpodautoscaler/${AS}" '{.status.currentMetrics[0].resource.current.averageUtilization}') % of the request, target ${AS_TARGET}; conditions: $(get "horizontalpodautoscaler/${AS}" '{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}; {end}')); the load pod says: $(pod_logs "${NS}" 1 "pod/${AS_LOAD_POD}" 2>&1). More load: E2E_AUTOSCALING_LOAD (loops, default 2)"
    sleep 3
  done
  log "ok: horizontalpodautoscaler/${AS} wants more than ${AS_MIN} replicas"
  log "HPA: desiredReplicas $(get "horizontalpodautoscaler/${AS}" '{.status.desiredReplicas}'), CPU $(get "horizontalpodautoscaler/${AS}" '{.status.currentMetrics[0].resource.current.averageUtilization}') % after $((SECONDS - started))s of load"
  wait_until 60 "meteorapp/${AS} spec.replicas and deployment/${AS} spec.replicas follow the HPA" app_follows_hpa
  # Up at once: let it reach its peak (maxReplicas, or no change for 30 s).
  local peak last_change=${SECONDS} seen
  deadline=$((SECONDS + 120))
  peak="$(get "meteorapp/${AS}" '{.spec.replicas}')"
  while ((peak < AS_MAX && SECONDS - last_change < 30 && SECONDS < deadline)); do
    sleep 3
    seen="$(get "meteorapp/${AS}" '{.spec.replicas}')"
    if [[ -n "${seen}" && "${seen}" != "${peak}" ]]; then
      peak="${seen}"
      last_change=${SECONDS}
    fi
  done
  wait_until 60 "meteorapp/${AS} and deployment/${AS} at the HPA's ${peak}" app_follows_hpa
  AS_PEAK="$(get "meteorapp/${AS}" '{.spec.replicas}')"
  ((AS_PEAK > AS_MIN)) || fail "meteorapp/${AS} spec.replicas fell back to ${AS_PEAK} under load"
  wait_until "${E2E_TIMEOUT}" "deployment/${AS} settled at ${AS_PEAK} ready pods" deployment_settled "deployment/${AS}" "${AS_PODS}"
  wait_until 60 "both proxy replicas route to the ${AS_PEAK} app pods" proxies_follow "${AS_PODS}"
  log "scaled ${AS_MIN} -> ${AS_PEAK} (max ${AS_MAX}) in $((SECONDS - started))s of load"

  local res="meteorapp/${AS}"
  wait_until 60 "${res} status.autoscaling.desiredReplicas ${AS_PEAK}" \
    field_is "${res}" '{.status.autoscaling.desiredReplicas}' "${AS_PEAK}"
  # The HPA writes its currentReplicas at its next sync after the scale, which can come after
  # the Deployment settled (pods that get ready at once): bounded, as the wait above.
  local deadline=$((SECONDS + 60))
  until autoscaling_status_under_load "${res}"; do
    ((SECONDS < deadline)) \
      || fail "${res} status.autoscaling under load: $(get "${res}" '{.status.autoscaling}'), want currentReplicas above ${AS_MIN} and a CPU figure (60s after desiredReplicas ${AS_PEAK}); the HPA: $(get "horizontalpodautoscaler/${AS}" '{.status}')"
    sleep 2
  done
  log "ok: ${res} status.autoscaling under load: $(get "${res}" '{.status.autoscaling}')"
  wait_condition 60 "${res}" Autoscaled True
  log "Autoscaled under load: $(cond "${res}" Autoscaled reason): $(cond "${res}" Autoscaled message)"

  # Who wrote what: the HPA the MeteorApp's scale subresource; the Deployment the operator only
  # (the Deployment controller writes its status).
  scale_writer_check "${res}"
  local others
  others="$(k get "deployment/${AS}" --show-managed-fields -o json | python3 -c '
import json, sys
for e in json.load(sys.stdin)["metadata"].get("managedFields") or []:
    if e.get("manager") != "meteor-operator" and e.get("subresource") != "status":
        print("%s/%s/%s" % (e.get("manager"), e.get("operation"), e.get("subresource", "")))')"
  [[ -z "${others}" ]] || fail "deployment/${AS} has writers besides meteor-operator (and the status): ${others//$'\n'/, }; managedFields: $(writers "deployment/${AS}")"
  log "ok: deployment/${AS} written by meteor-operator only (besides its status): $(writers "deployment/${AS}")"
  assert_operator_owns "deployment/${AS}" f:spec f:replicas
  assert_eq "$(get "poddisruptionbudget/${AS}" '{.metadata.uid}')" "${AS_PDB_UID}" "poddisruptionbudget/${AS} uid at ${AS_PEAK} replicas (kept)"
  local annotations
  annotations="$(k get pods -l "${AS_PODS}" -o 'jsonpath={.items[*].metadata.annotations}')" || fail "cannot list the app pods"
  [[ "${annotations}" != *pod-deletion-cost* ]] \
    || fail "app pods carry a pod-deletion-cost after a scale-up (the operator sets it before a scale-down only): ${annotations}"
  log "ok: no app pod has a pod-deletion-cost yet"
}

# scale_writer_check RESOURCE: RESOURCE's spec.replicas was written through its scale subresource:
# its managedFields entry that owns spec.replicas is a scale one. API servers that record no
# managedFields for writes through a custom resource's scale subresource (kubernetes/kubernetes
# issue 131892, open in 2025; v1.32 is one) leave spec.replicas owned by no entry at all: then
# which endpoint wrote it cannot be read, and the check made is that no manager owns it through
# the main resource (such a write would be recorded there: the operator's, a user's).
scale_writer_check() {
  local json verdict
  json="$(k get "$1" -o json --show-managed-fields)" || fail "cannot get $1"
  verdict="$(python3 -c '
import json, sys
owners = [e for e in json.loads(sys.stdin.read())["metadata"].get("managedFields") or []
          if "f:replicas" in ((e.get("fieldsV1") or {}).get("f:spec") or {})]
scale = [e["manager"] for e in owners if e.get("subresource") == "scale"]
other = ["%s/%s/%s" % (e["manager"], e["operation"], e.get("subresource", "")) for e in owners if e.get("subresource") != "scale"]
print("scale " + ",".join(scale) if scale else "other " + ",".join(other) if other else "untracked")
' <<<"${json}")" || fail "cannot read the managedFields of $1"
  case "${verdict}" in
    scale*) log "ok: $1: spec.replicas written through the scale subresource (by ${verdict#scale })" ;;
    untracked)
      log "skipped: $1: spec.replicas written through the scale subresource: this API server ($(kubectl version -o json 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])' 2>/dev/null)) records no managedFields entry for writes through a custom resource's scale subresource (kubernetes/kubernetes#131892), so the writer cannot be read from them"
      log "ok: $1: no manager owns spec.replicas through the main resource (no entry owns it: the operator did not write it)"
      ;;
    *) fail "$1: spec.replicas owned through the main resource by ${verdict#other }, want the scale subresource (the HPA) only; managedFields: $(writers "$1")" ;;
  esac
}

# autoscaling_status_under_load RESOURCE: its status.autoscaling has currentReplicas above
# AS_MIN and a CPU figure.
autoscaling_status_under_load() {
  k get "$1" -o json 2>/dev/null | python3 -c '
import json, sys
a = (json.load(sys.stdin).get("status") or {}).get("autoscaling") or {}
sys.exit(0 if a.get("currentReplicas", 0) > int(sys.argv[1]) and (a.get("currentCPUUtilizationPercentage") or 0) > 0 else 1)
' "${AS_MIN}"
}

# app_pods_by_age: "name ip" of each ready app pod of AS, oldest first.
app_pods_by_age() {
  k get pods -l "${AS_PODS}" -o json | python3 -c '
import json, sys
pods = [p for p in json.load(sys.stdin)["items"] if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]
for p in sorted(pods, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"])):
    print(p["metadata"]["name"], p["status"].get("podIP", ""))'
}

# proxy_totals: {"ip:port": active} summed over both proxy replicas' /-/status (port-forwards
# admin-A and admin-B), sorted; fails when one does not answer.
proxy_totals() {
  local a b
  a="$(http_get "${PF_URL[admin-A]}/-/status")"
  b="$(http_get "${PF_URL[admin-B]}/-/status")"
  python3 -c '
import json, sys
total = {}
for answer in sys.argv[1:]:
    o = json.loads(answer)
    if o["status"] != 200:
        sys.exit(1)
    for row in json.loads(o["body"])["backends"]:
        total[row["id"]] = total.get(row["id"], 0) + row["active"]
print(json.dumps(dict(sorted(total.items()))))
' "${a}" "${b}"
}

# proxies_hold PLAN: proxy_totals is PLAN ({"ip:port": n}), backends not in it at 0.
proxies_hold() {
  local totals
  totals="$(proxy_totals)" || return 1
  python3 -c '
import json, sys
want, total = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.exit(0 if all(total.get(k, 0) == v for k, v in want.items()) and all(v == 0 for k, v in total.items() if k not in want) else 1)
' "$1" "${totals}"
}

# autoscaling_plan: AS_PLAN ({"pod": sessions}) and AS_PLAN_BY_IP ({"ip:3000": sessions}) for
# the AS_PEAK ready app pods, AS_SESSIONS[i] on the i-th oldest.
autoscaling_plan() {
  local -a names=() ips=()
  local name ip i
  while read -r name ip; do
    names+=("${name}")
    ips+=("${ip}")
  done < <(app_pods_by_age)
  ((${#names[@]} == AS_PEAK)) || fail "want ${AS_PEAK} ready app pods, found ${#names[@]}: ${names[*]}"
  AS_PLAN="{"
  AS_PLAN_BY_IP="{"
  for i in "${!names[@]}"; do
    AS_PLAN+="\"${names[i]}\":${AS_SESSIONS[i]:-1},"
    AS_PLAN_BY_IP+="\"${ips[i]}:3000\":${AS_SESSIONS[i]:-1},"
  done
  AS_PLAN="${AS_PLAN%,}}"
  AS_PLAN_BY_IP="${AS_PLAN_BY_IP%,}}"
}

# autoscaling_watch: timestamped watches (watch.py) of the app pods (name, pod-deletion-cost,
# deletionTimestamp, creationTimestamp), the MeteorApp's and the Deployment's spec.replicas.
autoscaling_watch() {
  : >"${AS_OUT}/pods.log"
  python3 "${E2E_DIR}/autoscaling/watch.py" "${AS_OUT}/pods.log" -n "${NS}" get pods -l "${AS_PODS}" --watch \
    -o 'jsonpath={.metadata.name}{"|"}{.metadata.annotations.controller\.kubernetes\.io/pod-deletion-cost}{"|"}{.metadata.deletionTimestamp}{"|"}{.metadata.creationTimestamp}{"\n"}' \
    2>"${AS_OUT}/watch-pods.err" &
  AS_WATCH_PIDS=("$!")
  python3 "${E2E_DIR}/autoscaling/watch.py" "${AS_OUT}/app-replicas.log" -n "${NS}" get "meteorapp/${AS}" --watch \
    -o 'jsonpath={.spec.replicas}{"\n"}' 2>"${AS_OUT}/watch-app.err" &
  AS_WATCH_PIDS+=("$!")
  python3 "${E2E_DIR}/autoscaling/watch.py" "${AS_OUT}/deploy-replicas.log" -n "${NS}" get "deployment/${AS}" --watch \
    -o 'jsonpath={.spec.replicas}{"\n"}' 2>"${AS_OUT}/watch-deploy.err" &
  AS_WATCH_PIDS+=("$!")
}

# autoscaling_sessions: sessions.py holds AS_PLAN through the proxy port-forwards A and B, until
# AS_OUT/stop exists; returns once all are open (bounded).
autoscaling_sessions() {
  rm -f "${AS_OUT}/stop"
  : >"${AS_OUT}/sessions.jsonl"
  python3 "${E2E_DIR}/autoscaling/sessions.py" "{\"proxies\":{\"A\":\"${PF_URL[A]}\",\"B\":\"${PF_URL[B]}\"},
    \"plan\":${AS_PLAN},\"stopFile\":\"${AS_OUT}/stop\",\"maxSeconds\":$((E2E_TIMEOUT + 900)),\"pingSeconds\":15,\"reconnect\":true}" \
    >"${AS_OUT}/sessions.jsonl" 2>"${AS_OUT}/sessions.err" &
  AS_SESSIONS_PID=$!
  local deadline=$((SECONDS + 120))
  until grep -q '"event": "ready"' "${AS_OUT}/sessions.jsonl"; do
    if grep -q '"event": "error"' "${AS_OUT}/sessions.jsonl" || ! kill -0 "${AS_SESSIONS_PID}" 2>/dev/null; then
      fail "the sessions did not open: $(grep '"event": "error"' "${AS_OUT}/sessions.jsonl") $(tail -3 "${AS_OUT}/sessions.err")"
    fi
    ((SECONDS < deadline)) || fail "the sessions did not all open within 120s ($(grep -c '"event": "open"' "${AS_OUT}/sessions.jsonl") open)"
    sleep 1
  done
  log "ok: sessions open through both proxy replicas, each on the pod its cookie names: ${AS_PLAN} (oldest pod first)"
}

# autoscaling_sessions_stop: sessions.py closes its sessions and exits (bounded).
autoscaling_sessions_stop() {
  touch "${AS_OUT}/stop"
  local deadline=$((SECONDS + 30))
  while kill -0 "${AS_SESSIONS_PID}" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "sessions.py did not stop within 30s of being asked"
    sleep 0.5
  done
  wait "${AS_SESSIONS_PID}" || fail "sessions.py failed: $(grep '"event": "error"' "${AS_OUT}/sessions.jsonl") $(tail -3 "${AS_OUT}/sessions.err")"
  AS_SESSIONS_PID=""
}

# autoscaling_report MODE STOPPED: report.py's table and verdict (MODE costs or unknown; STOPPED
# the epoch seconds the load stopped); fails the scenario when the verdict is no.
autoscaling_report() {
  local rc=0
  python3 "${E2E_DIR}/autoscaling/report.py" "{\"pods\":\"${AS_OUT}/pods.log\",\"appReplicas\":\"${AS_OUT}/app-replicas.log\",
    \"deployReplicas\":\"${AS_OUT}/deploy-replicas.log\",\"sessions\":\"${AS_OUT}/sessions.jsonl\",\"plan\":${AS_PLAN},
    \"loadStopped\":$2,\"mode\":\"$1\"}" >"${AS_OUT}/report.txt" 2>&1 || rc=$?
  sed 's/^/    /' "${AS_OUT}/report.txt"
  ((rc == 0)) || fail "the scale-down did not remove the pods with the lowest pod-deletion-cost (table above; ${AS_OUT#"${ROOT}/"})"
}

# autoscaling_scale_down: step 4. Sessions held unevenly (under load, so nothing scales down
# meanwhile), the load stops, the HPA scales down to AS_MIN; report.py judges the removed pods.
autoscaling_scale_down() {
  autoscaling_plan
  autoscaling_watch
  autoscaling_sessions

  k delete pod "${AS_LOAD_POD}" --wait=false >/dev/null || fail "cannot delete pod ${AS_LOAD_POD}"
  local stopped started=${SECONDS}
  stopped="$(python3 -c 'import time; print("%.3f" % time.time())')"
  log "load stopped"
  # With no load left, the proxies' counts are the sessions alone.
  local deadline=$((SECONDS + 30))
  until proxies_hold "${AS_PLAN_BY_IP}"; do
    ((SECONDS < deadline)) \
      || fail "the proxies count $(proxy_totals || echo '(no answer)') active connections per app pod, want the sessions held: ${AS_PLAN_BY_IP}"
    sleep 1
  done
  log "ok: both proxies together count the planned sessions per app pod: ${AS_PLAN_BY_IP}"

  local bound=$((AS_DOWN_WINDOW + 90 + (AS_PEAK - AS_MIN) * (AS_DOWN_PERIOD + 30)))
  wait_until "${bound}" "the HPA scaled ${AS} down to ${AS_MIN} (meteorapp and deployment spec.replicas ${AS_MIN})" \
    field_is "deployment/${AS}" '{.spec.replicas}' "${AS_MIN}"
  assert_eq "$(get "meteorapp/${AS}" '{.spec.replicas}')" "${AS_MIN}" "meteorapp/${AS} spec.replicas after the scale-down"
  wait_until "${E2E_TIMEOUT}" "deployment/${AS} settled at ${AS_MIN} pods" deployment_settled "deployment/${AS}" "${AS_PODS}"
  log "scaled ${AS_PEAK} -> ${AS_MIN} within $((SECONDS - started))s of the load stopping"
  sleep 3 # the watches catch up
  autoscaling_sessions_stop
  local pid name
  for pid in "${AS_WATCH_PIDS[@]}"; do
    kill "${pid}" 2>/dev/null || true
    wait "${pid}" 2>/dev/null || true
  done
  AS_WATCH_PIDS=()
  for name in A B; do
    port_forward_alive "${name}" || fail "the port-forward to proxy replica ${name} died during the scale-down: $(tail -3 "${E2E_OUT}/port-forward-${name}.log")"
  done

  # Costs, or the documented fallback when the operator cannot reach the proxies' admin ports
  # (a local operator outside the cluster network): scale down anyway, Warning SessionsUnknown.
  local mode=costs
  if has_warning_event "${AS}" SessionsUnknown; then
    mode=unknown
    log "event SessionsUnknown: $(k get events --field-selector "involvedObject.name=${AS},reason=SessionsUnknown" -o 'jsonpath={.items[0].message}' 2>/dev/null)"
  fi
  autoscaling_report "${mode}" "${stopped}"
  if [[ "${mode}" == unknown ]]; then
    [[ "${E2E_OPERATOR}" == local ]] \
      || fail "the in-cluster operator could not read the proxies' /-/status (Warning SessionsUnknown): it must reach the proxy pods' admin port 9090"
    log "ok: a local operator cannot reach the proxy pods: it scaled down anyway and said so (Warning SessionsUnknown); costs not checked"
  else
    log "ok: the HPA's scale-down removed the pods with the lowest pod-deletion-cost (their open sessions); no SessionsUnknown event"
  fi
  local removed
  removed="$(grep -c '| yes (' "${AS_OUT}/report.txt" || true)"
  assert_eq "${removed}" "$((AS_PEAK - AS_MIN))" "app pods removed by the scale-down ${AS_PEAK} -> ${AS_MIN}"
  wait_condition 60 "meteorapp/${AS}" Autoscaled True
  assert_exists "poddisruptionbudget/${AS}"
  assert_eq "$(get "poddisruptionbudget/${AS}" '{.metadata.uid}')" "${AS_PDB_UID}" "poddisruptionbudget/${AS} uid after the scale-down (kept)"
}

# autoscaling_off: step 5. minReplicas 3 first (so the last value is not the CRD's default of 2),
# then spec.autoscaling removed: the HPA is deleted, spec.replicas and the pods stay.
autoscaling_off() {
  local res="meteorapp/${AS}" uids
  patch_app_as '{"spec":{"autoscaling":{"minReplicas":3}}}'
  wait_field 60 "horizontalpodautoscaler/${AS}" '{.spec.minReplicas}' 3
  wait_until 90 "the HPA raised ${res} to its new minimum (spec.replicas 3, deployment 3)" \
    field_is "deployment/${AS}" '{.spec.replicas}' 3
  assert_eq "$(get "${res}" '{.spec.replicas}')" 3 "${res} spec.replicas at minReplicas 3"
  wait_until "${E2E_TIMEOUT}" "deployment/${AS} settled at 3 pods" deployment_settled "deployment/${AS}" "${AS_PODS}"
  uids="$(k get pods -l "${AS_PODS}" -o 'jsonpath={.items[*].metadata.uid}')"

  k patch "${res}" --type=json -p '[{"op":"remove","path":"/spec/autoscaling"}]' >/dev/null \
    || fail "cannot remove spec.autoscaling from ${res}"
  wait_until 60 "horizontalpodautoscaler/${AS} deleted" absent "horizontalpodautoscaler/${AS}"
  wait_until 60 "${res} status: no Autoscaled condition, no status.autoscaling" \
    field_is "${res}" '{.status.conditions[?(@.type=="Autoscaled")].type}{.status.autoscaling}' ""
  wait_ready "${res}"
  local start=${SECONDS}
  while ((SECONDS - start < 20)); do
    [[ "$(get "${res}" '{.spec.replicas}')/$(get "deployment/${AS}" '{.spec.replicas}')" == 3/3 ]] \
      || fail "${res} spec.replicas / deployment spec.replicas $(get "${res}" '{.spec.replicas}')/$(get "deployment/${AS}" '{.spec.replicas}') after autoscaling was removed, want 3/3 (the last value stays)"
    sleep 3
  done
  log "ok: ${res} spec.replicas and deployment/${AS} stay at 3 for 20s without the HPA"
  assert_eq "$(k get pods -l "${AS_PODS}" -o 'jsonpath={.items[*].metadata.uid}')" "${uids}" "app pods (uids) after autoscaling was removed (untouched)"
  assert_exists "poddisruptionbudget/${AS}"
}

patch_app_as() { k patch "meteorapp/${AS}" --type=merge -p "$1" >/dev/null || fail "patch meteorapp/${AS} $1 failed"; }
