#!/usr/bin/env bash
# The e2e suite (e2e/run.sh, written for kind) on a real Kubernetes control plane on this machine:
# ../shared/cluster/up.sh (etcd, kube-apiserver, kube-controller-manager on loopback), its
# fake_kubelet.py with pods that really run in network namespaces (10.244.0.0/24 on bridge
# fkbr0) and fake_metrics.py as the metrics API. See e2e/README.md, "On the loopback control plane".
# As root (network namespaces), from anywhere:
#   bash hack/e2e-local.sh                               # every scenario, the operator as a local process
#   bash hack/e2e-local.sh basic routing                 # some (install always runs first)
#   E2E_OPERATOR=incluster bash hack/e2e-local.sh install basic failover   # the chart, as the README installs it
#   E2E_OPERATOR=incluster E2E_INSTALL=manifest bash hack/e2e-local.sh install basic
# Settings: those of e2e/run.sh (e2e/lib.sh), and
#   K8S_BIN                 folder with kube-apiserver and kube-controller-manager (default /opt/k8s/bin)
#   E2E_LOCAL_TIMEOUT       seconds the whole suite may take (default 7200); then it is stopped
#   E2E_LOCAL_CLUSTER_DIR   the control plane's state folder (default /tmp/meteor-e2e-local)
#   E2E_LOCAL_NODES         fake nodes, 250 pods each (default 3; with E2E_FLEET_PROXY=true, enough
#                           for E2E_FLEET_APPS apps of one app pod and two proxy pods each)
#   E2E_FLEET_PROXY=true    the fleet scenario's apps keep their proxy tier (issue 20's run). The
#                           proxy pods are then only marked Running and Ready, not run: a fleet's
#                           proxies do not fit the 240 addresses of fkbr0. Only `fleet` (and
#                           `install`) make sense in this mode, which the script enforces.
# Everything it starts (control plane, fake kubelet and its pods, metrics API, the suite and a
# local operator) is stopped when it exits, also on failure and Ctrl-C. Its own files stay in
# e2e/_out/loopback/ (pod logs in pods/, the control plane's logs in cluster-logs/, e2e.log).
# Exit status: e2e/run.sh's (0 when every scenario passed); 2 when a prerequisite is missing; 1
# when the build or the cluster's start fails.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

K8S_BIN="${K8S_BIN:-/opt/k8s/bin}"
HARNESS="$(cd "${ROOT}/.." && pwd)/shared/cluster"
E2E_LOCAL_TIMEOUT="${E2E_LOCAL_TIMEOUT:-7200}"
CLUSTER_DIR="${E2E_LOCAL_CLUSTER_DIR:-/tmp/meteor-e2e-local}"
STATE="${ROOT}/e2e/_out/loopback"
RELEASE_BIN="${CARGO_TARGET_DIR:-${ROOT}/target}/release/meteor-operator"
PEERS="${ROOT}/proxy/tests/peers"
# The images the pods may run ("loaded into the cluster"), and what each runs here.
export E2E_IMAGE="${E2E_IMAGE:-meteor-operator:e2e}"
export E2E_SOCKJS_IMAGE="${E2E_SOCKJS_IMAGE:-meteor-e2e-sockjs:e2e}"
WHOAMI_IMAGE="traefik/whoami:v1.10"
METRICS_IMAGE="e2e-local/fake-metrics:0"
# Pods the fake kubelet really runs (the rest are only marked Running and Ready): the proxy pods
# of every MeteorApp, the operator's own pods (chart or manifests/install.yaml), and the pods the
# suite labels for it (the apps of e2e/testdata/{app,routing,autoscaling}.yaml through
# spec.podLabels, the autoscaling load pod, the metrics API below).
RUN_SELECTORS=(
  "app.kubernetes.io/name=meteor-operator,app.kubernetes.io/instance=meteor-operator"
  "e2e.meteorfleet.dev/run-on-loopback=true"
)
E2E_FLEET_PROXY="${E2E_FLEET_PROXY:-false}"
if [[ "${E2E_FLEET_PROXY}" == true ]]; then
  # 3 pods per fleet app, the solo app's, the operator's and the metrics API's, plus headroom.
  E2E_LOCAL_NODES="${E2E_LOCAL_NODES:-$(((3 * (${E2E_FLEET_APPS:-500} + 1) + 50 + 249) / 250))}"
else
  RUN_SELECTORS+=("app.kubernetes.io/name=meteor,app.kubernetes.io/component=proxy")
  E2E_LOCAL_NODES="${E2E_LOCAL_NODES:-3}"
fi
export E2E_FLEET_PROXY

KUBELET_PID=""
CPU_PID=""
RUN_PID=""
ETC_PROXY_CREATED=""
NETNS_BEFORE=""
BRIDGE_CREATED=""

say() { printf '==> e2e-local: %s\n' "$*"; }
missing() {
  printf 'hack/e2e-local.sh: %s\n' "$*" >&2
  exit 2
}

# --- prerequisites -----------------------------------------------------------------------------
preflight() {
  local binary port
  for binary in kube-apiserver kube-controller-manager; do
    [[ -x "${K8S_BIN}/${binary}" ]] || missing "no ${binary} in K8S_BIN=${K8S_BIN}. Provide kube-apiserver and kube-controller-manager of Kubernetes v1.30 or later there: build them from a public Kubernetes source snapshot, outside this project (never copy them or a build script into it); ../shared/cluster/README.md says how."
  done
  ((EUID == 0)) || missing "must run as root: the fake kubelet runs pods in network namespaces (ip netns) on bridge fkbr0 (../shared/cluster/README.md)"
  command -v etcd >/dev/null 2>&1 || missing "no etcd on PATH: apt-get install etcd-server (../shared/cluster/README.md)"
  python3 -c 'import kubernetes, yaml' 2>/dev/null \
    || missing "python3 cannot import the kubernetes and yaml modules: pip install kubernetes pyyaml (../shared/cluster/README.md)"
  for binary in ip openssl node npm cargo; do
    command -v "${binary}" >/dev/null 2>&1 || missing "no ${binary} on PATH (needed by the loopback control plane and the suite)"
  done
  [[ -f "${HARNESS}/up.sh" && -f "${HARNESS}/fake_kubelet.py" && -f "${HARNESS}/fake_metrics.py" ]] \
    || missing "the cluster harness is not in ${HARNESS} (up.sh, down.sh, fake_kubelet.py, fake_metrics.py)"
  # up.sh uses fixed ports; fake_kubelet.py owns bridge fkbr0: one control plane at a time.
  for port in 2379 2380 6443 10257; do
    if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
      missing "port ${port} is in use on 127.0.0.1: another control plane runs (stop it with its down.sh: CLUSTER_DIR=... ../shared/cluster/down.sh)"
    fi
  done
  if [[ -e "${CLUSTER_DIR}" && ! -f "${CLUSTER_DIR}/admin.kubeconfig" ]]; then
    missing "E2E_LOCAL_CLUSTER_DIR=${CLUSTER_DIR} exists and is not a control plane's state folder (no admin.kubeconfig): name another"
  fi
  if ip link show fkbr0 >/dev/null 2>&1; then
    missing "bridge fkbr0 exists: another fake_kubelet.py runs, or one was killed (if none runs: ip link del fkbr0)"
  fi
}

# --- clean-up (EXIT, also after INT and TERM) --------------------------------------------------
# stop_pid PID SECONDS: SIGTERM, then SIGKILL after SECONDS.
stop_pid() {
  local pid="$1" seconds="$2" i
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null || return 0
  kill -TERM "${pid}" 2>/dev/null || true
  for ((i = 0; i < seconds * 5; i++)); do
    kill -0 "${pid}" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -KILL "${pid}" 2>/dev/null || true
}

# stop_suite: e2e/run.sh runs in a process group of its own (with a local operator, kubectl,
# clients): SIGTERM to the group, SIGKILL to what is left after 10 s.
stop_suite() {
  [[ -n "${RUN_PID}" ]] || return 0
  local i
  kill -TERM -- "-${RUN_PID}" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 -- "-${RUN_PID}" 2>/dev/null || return 0
    sleep 0.2
  done
  say "e2e/run.sh's processes still run 10 s after SIGTERM: SIGKILL"
  kill -KILL -- "-${RUN_PID}" 2>/dev/null || true
}

cleanup() {
  local rc=$? netns
  trap - EXIT INT TERM
  set +e
  stop_suite
  stop_pid "${CPU_PID}" 5
  # The fake kubelet kills its pods and removes their network namespaces and the bridge on exit.
  stop_pid "${KUBELET_PID}" 10
  for netns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^fk[0-9]+$'); do
    [[ " ${NETNS_BEFORE} " == *" ${netns} "* ]] && continue
    ip netns pids "${netns}" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
    ip netns del "${netns}" 2>/dev/null
  done
  if [[ -n "${BRIDGE_CREATED}" ]] && ip link show fkbr0 >/dev/null 2>&1; then ip link del fkbr0 2>/dev/null; fi
  if [[ -d "${CLUSTER_DIR}/logs" ]]; then
    rm -rf "${STATE}/cluster-logs"
    cp -r "${CLUSTER_DIR}/logs" "${STATE}/cluster-logs" 2>/dev/null
  fi
  if [[ -f "${CLUSTER_DIR}/apiserver.pid" || -f "${CLUSTER_DIR}/etcd.pid" ]]; then
    CLUSTER_DIR="${CLUSTER_DIR}" bash "${HARNESS}/down.sh" >/dev/null 2>&1
    say "control plane stopped (../shared/cluster/down.sh)"
  fi
  # fake_kubelet.py writes Secret volumes at their mount paths on this host too.
  [[ -z "${ETC_PROXY_CREATED}" ]] || rm -rf /etc/meteor-proxy
  if [[ -s "${STATE}/pods/crashes.log" ]]; then
    say "containers that exited on their own (restarted as by a kubelet):"
    sed 's/^/    /' "${STATE}/pods/crashes.log"
  fi
  if [[ -f "${STATE}/e2e.log" ]] && grep -q '^e2e: ' "${STATE}/e2e.log"; then
    echo
    grep -E '^  (PASS|FAIL|SKIP) |^e2e: ' "${STATE}/e2e.log"
  fi
  exit "${rc}"
}

# --- the pieces --------------------------------------------------------------------------------
build() {
  say "building the release binary (cargo build --release --bin meteor-operator)"
  (cd "${ROOT}" && cargo build --release --bin meteor-operator) \
    || die "cargo build --release --bin meteor-operator failed (above)"
  [[ -x "${RELEASE_BIN}" ]] || die "${RELEASE_BIN} not found after cargo build"
  # The SockJS app (e2e/routing/backend.js) and the whoami stand-in run with these packages.
  if [[ ! -f "${PEERS}/node_modules/sockjs/package.json" ]]; then
    say "installing the Node peers (npm ci in proxy/tests/peers)"
    npm ci --prefix "${PEERS}" --no-audit --no-fund >"${STATE}/npm-ci.log" 2>&1 \
      || missing "npm ci in proxy/tests/peers failed: $(tail -5 "${STATE}/npm-ci.log")"
  fi
}

# write_runtime_config: what hack/e2e-local-runtime.py runs for each image, and where.
write_runtime_config() {
  local kubeconfig="$1"
  # The pods reach the API server at 10.244.0.1 (fake_kubelet.py forwards it there).
  sed 's#server: "https://127.0.0.1:\([0-9]*\)"#server: "https://10.244.0.1:\1"#' "${kubeconfig}" >"${STATE}/pod-admin.kubeconfig"
  grep -q 'https://10.244.0.1:' "${STATE}/pod-admin.kubeconfig" || die "cannot make the pods' kubeconfig from ${kubeconfig}"
  python3 - "${STATE}" "$(command -v kubectl)" "${RELEASE_BIN}" "${ROOT}" "${HARNESS}" \
    "${E2E_IMAGE}" "${E2E_SOCKJS_IMAGE}" "${WHOAMI_IMAGE}" "${METRICS_IMAGE}" <<'PY'
import json, os, sys
state, kubectl, release, root, harness, operator, sockjs, whoami, metrics = sys.argv[1:10]
backend = os.path.join(root, "e2e/routing/backend.js")
node_env = {"NODE_ENV": "production", "NODE_PATH": os.path.join(root, "proxy/tests/peers/node_modules")}
images = {
    # ENTRYPOINT ["/meteor-operator"], CMD ["run"] (Dockerfile): the release binary.
    operator: {"entrypoint": [release], "cmd": ["run"], "paths": {"/meteor-operator": release}},
    # CMD ["node", "/app/backend.js"] with the packages of proxy/tests/peers (e2e/routing/Dockerfile).
    sockjs: {"entrypoint": [], "cmd": ["node", "/app/backend.js"], "paths": {"/app/backend.js": backend},
             "env": node_env, "workdir": os.path.dirname(backend)},
    # A stand-in for traefik/whoami: an HTTP server on $PORT answering / (the app's probes).
    whoami: {"entrypoint": ["node", backend], "cmd": [], "env": node_env, "workdir": os.path.dirname(backend)},
    # ../shared/cluster/fake_metrics.py, the metrics API.
    metrics: {"entrypoint": ["python3", os.path.join(harness, "fake_metrics.py")], "cmd": []},
}
config = {"kubectl": kubectl, "kubeconfig": os.path.join(state, "pod-admin.kubeconfig"),
          "logs": os.path.join(state, "pods"), "pids": os.path.join(state, "pids"), "images": images}
with open(os.path.join(state, "runtime.json"), "w") as f:
    json.dump(config, f, indent=1)
PY
}

start_kubelet() {
  local runtime="python3 ${ROOT}/hack/e2e-local-runtime.py --state ${STATE} --pod {pod}" selector
  local -a rules=()
  for selector in "${RUN_SELECTORS[@]}"; do rules+=(--run "${selector}::${runtime}"); done
  [[ -e /etc/meteor-proxy ]] || ETC_PROXY_CREATED=1
  ip link show fkbr0 >/dev/null 2>&1 || BRIDGE_CREATED=1
  (cd "${ROOT}" && exec python3 "${HARNESS}/fake_kubelet.py" --nodes "${E2E_LOCAL_NODES}" \
    --seconds $((E2E_LOCAL_TIMEOUT + 900)) "${rules[@]}") \
    >"${STATE}/fake-kubelet.log" 2>&1 &
  KUBELET_PID=$!
  local deadline=$((SECONDS + 60))
  until [[ "$(kubectl get nodes --no-headers 2>/dev/null | grep -c ' Ready ')" -ge "${E2E_LOCAL_NODES}" ]]; do
    kill -0 "${KUBELET_PID}" 2>/dev/null || die "fake_kubelet.py exited: $(tail -5 "${STATE}/fake-kubelet.log")"
    ((SECONDS < deadline)) || die "the fake kubelet's nodes are not Ready within 60s: $(tail -5 "${STATE}/fake-kubelet.log")"
    sleep 1
  done
  say "fake kubelet: ${E2E_LOCAL_NODES} nodes Ready; it runs the pods matching: ${RUN_SELECTORS[*]}"
}

# start_metrics: fake_metrics.py as the metrics API (a pod in kube-system behind APIService
# v1beta1.metrics.k8s.io, as metrics-server is), fed with the pods' real CPU.
start_metrics() {
  printf '{"cpu": {}, "default_cpu": "0", "default_memory": "64Mi"}\n' >"${STATE}/cpu.json"
  python3 "${ROOT}/hack/e2e-local-cpu.py" --pids "${STATE}/pids" --out "${STATE}/cpu.json" \
    >"${STATE}/cpu.log" 2>&1 &
  CPU_PID=$!
  kubectl apply -f - >/dev/null <<YAML || die "cannot install the metrics API (fake_metrics.py)"
apiVersion: v1
kind: ServiceAccount
metadata: {name: fake-metrics, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "e2e-local:fake-metrics"}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "e2e-local:fake-metrics"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "e2e-local:fake-metrics"}
subjects: [{kind: ServiceAccount, name: fake-metrics, namespace: kube-system}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: fake-metrics, namespace: kube-system}
spec:
  replicas: 1
  selector: {matchLabels: {app.kubernetes.io/name: fake-metrics}}
  template:
    metadata:
      labels: {app.kubernetes.io/name: fake-metrics, e2e.meteorfleet.dev/run-on-loopback: "true"}
    spec:
      serviceAccountName: fake-metrics
      containers:
        - name: metrics
          image: ${METRICS_IMAGE}
          args: [--listen, "0.0.0.0:4443", --usage, "${STATE}/cpu.json"]
          ports: [{name: https, containerPort: 4443}]
          readinessProbe: {tcpSocket: {port: https}}
---
apiVersion: v1
kind: Service
metadata: {name: fake-metrics, namespace: kube-system}
spec:
  selector: {app.kubernetes.io/name: fake-metrics}
  ports: [{name: https, port: 443, targetPort: https}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  service: {name: fake-metrics, namespace: kube-system, port: 443}
  group: metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
YAML
  local deadline=$((SECONDS + 120))
  until [[ "$(kubectl get apiservice v1beta1.metrics.k8s.io -o 'jsonpath={.status.conditions[?(@.type=="Available")].status}' 2>/dev/null)" == True ]]; do
    ((SECONDS < deadline)) || die "APIService v1beta1.metrics.k8s.io (fake_metrics.py) not Available within 120s: $(kubectl get apiservice v1beta1.metrics.k8s.io -o 'jsonpath={.status.conditions}' 2>&1); $(tail -3 "${STATE}"/pods/kube-system.fake-metrics-* 2>/dev/null)"
    sleep 2
  done
  say "metrics API: fake_metrics.py (APIService v1beta1.metrics.k8s.io Available), CPU sampled from the pods' processes"
}

# run_suite ARGS...: e2e/run.sh ARGS... in a process group of its own, bounded by E2E_LOCAL_TIMEOUT.
run_suite() {
  say "e2e/run.sh $* (E2E_OPERATOR=${E2E_OPERATOR}${E2E_INSTALL:+, E2E_INSTALL=${E2E_INSTALL}}, bound ${E2E_LOCAL_TIMEOUT}s)"
  setsid bash "${ROOT}/e2e/run.sh" "$@" > >(tee "${STATE}/e2e.log") 2>&1 &
  RUN_PID=$!
  local deadline=$((SECONDS + E2E_LOCAL_TIMEOUT)) rc=0
  while kill -0 "${RUN_PID}" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      say "the suite ran longer than E2E_LOCAL_TIMEOUT=${E2E_LOCAL_TIMEOUT}s: stopping it"
      stop_suite
      break
    fi
    sleep 1
  done
  wait "${RUN_PID}" || rc=$?
  RUN_PID=""
  sleep 0.5 # tee's last lines
  return "${rc}"
}

main() {
  # One control plane at a time (fixed ports, bridge fkbr0, one CLUSTER_DIR): a second run waits
  # here, before its build, rather than finding the first one's cluster half-way.
  exec 9>"${E2E_LOCAL_LOCK:-/tmp/meteor-e2e-local.lock}"
  if ! flock -n 9; then
    say "another hack/e2e-local.sh holds ${E2E_LOCAL_LOCK:-/tmp/meteor-e2e-local.lock}: waiting for it"
    flock -w "${E2E_LOCAL_TIMEOUT}" 9 || missing "another hack/e2e-local.sh still runs after ${E2E_LOCAL_TIMEOUT}s"
  fi
  preflight
  mkdir -p "${STATE}"
  rm -rf "${STATE}/pods" "${STATE}/pids" "${STATE}/cluster-logs" "${STATE}/e2e.log"
  mkdir -p "${STATE}/pods" "${STATE}/pids"
  NETNS_BEFORE="$(ip netns list 2>/dev/null | awk '{print $1}' | paste -sd' ' -)"
  if [[ "${E2E_FLEET_PROXY}" == true ]]; then
    local scenario
    for scenario in "$@"; do
      [[ "${scenario}" == install || "${scenario}" == fleet ]] \
        || missing "E2E_FLEET_PROXY=true runs only the fleet scenario (no proxy really runs): not ${scenario}"
    done
    (($# > 0)) || missing "E2E_FLEET_PROXY=true runs only the fleet scenario: bash hack/e2e-local.sh fleet"
  fi
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  build
  bash "${ROOT}/hack/install-tools.sh" >/dev/null || missing "hack/install-tools.sh failed (kubectl, helm)"
  need kubectl helm

  say "starting the control plane (../shared/cluster/up.sh, CLUSTER_DIR=${CLUSTER_DIR})"
  rm -rf "${CLUSTER_DIR}"
  local kubeconfig
  kubeconfig="$(CLUSTER_DIR="${CLUSTER_DIR}" K8S_BIN="${K8S_BIN}" bash "${HARNESS}/up.sh")" \
    || die "../shared/cluster/up.sh failed (logs: ${CLUSTER_DIR}/logs)"
  export KUBECONFIG="${kubeconfig}"
  say "kube-apiserver $("${K8S_BIN}/kube-apiserver" --version 2>/dev/null | awk '{print $2}') ready (KUBECONFIG=${KUBECONFIG})"
  write_runtime_config "${kubeconfig}"
  start_kubelet
  start_metrics

  export E2E_CLUSTER=loopback
  export E2E_OPERATOR="${E2E_OPERATOR:-local}"
  export E2E_OPERATOR_BIN="${RELEASE_BIN}"
  export E2E_POD_LOGS="${STATE}/pods"
  local rc=0
  run_suite "$@" || rc=$?
  return "${rc}"
}

main "$@"
