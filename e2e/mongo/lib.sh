#!/usr/bin/env bash
# Shared helpers of the managed-MongoDB e2e scenarios.
#
# Needs: kubectl pointed (KUBECONFIG) at a cluster where meteor-operator runs with the
# MeteorApp CRD installed, a default StorageClass, and the official mongo image pullable.
# These scenarios exercise the real driver path (crate::mongo::driver); they cannot run on the
# development machines, which have no cluster and no mongod.
set -euo pipefail

NS="${E2E_NAMESPACE:-e2e-mongo}"
export OPERATOR_NS="${OPERATOR_NAMESPACE:-meteor-system}"
APP_IMAGE="${E2E_APP_IMAGE:-ghcr.io/example/todos:1.4.2}"
TIMEOUT="${E2E_TIMEOUT:-600}"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

ensure_namespace() {
  kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl create namespace "$NS" >/dev/null
}

# apply_app NAME MEMBERS [EXTRA_MANAGED_YAML]
apply_app() {
  local name=$1 members=$2 extra=${3:-}
  kubectl apply -n "$NS" -f - <<YAML
apiVersion: meteorfleet.dev/v1alpha1
kind: MeteorApp
metadata:
  name: $name
spec:
  image: $APP_IMAGE
  rootUrl: https://$name.example.com
  replicas: 1
  mongo:
    managed:
      members: $members
      storage: { size: 1Gi }
$extra
YAML
}

# jsonpath of the MeteorApp
app_get() { kubectl get meteorapp "$1" -n "$NS" -o "jsonpath=$2" 2>/dev/null || true; }

# wait_until DESCRIPTION COMMAND...: retries COMMAND until it succeeds or TIMEOUT passes.
wait_until() {
  local what=$1; shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@"; do
    if ((SECONDS > deadline)); then fail "timed out waiting for $what"; fi
    sleep 5
  done
  log "ok: $what"
}

mongo_ready() {
  [[ "$(app_get "$1" '{.status.conditions[?(@.type=="MongoReady")].status}')" == "True" ]]
}

# members_ready NAME N: status.mongo reports N members, all ready, and MongoReady.
members_ready() {
  mongo_ready "$1" &&
    [[ "$(app_get "$1" '{.status.mongo.members}')" == "$2" ]] &&
    [[ "$(app_get "$1" '{.status.mongo.readyMembers}')" == "$2" ]]
}

secret_value() { kubectl get secret "$1" -n "$NS" -o "jsonpath={.data.$2}" | base64 -d; }

# mongosh_root NAME POD_ORDINAL SCRIPT: runs SCRIPT as root inside a member pod.
mongosh_root() {
  local name=$1 ordinal=$2 script=$3
  local user pass
  user=$(secret_value "$name-mongo-root" username)
  pass=$(secret_value "$name-mongo-root" password)
  kubectl exec -n "$NS" "$name-mongo-$ordinal" -c mongod -- \
    mongosh --quiet --norc -u "$user" -p "$pass" --authenticationDatabase admin \
    --eval "$script"
}

# The primary's ordinal, from any reachable member.
primary_ordinal() {
  local name=$1 i
  for i in 0 1 2 3 4 5 6; do
    kubectl get pod -n "$NS" "$name-mongo-$i" >/dev/null 2>&1 || continue
    mongosh_root "$name" "$i" 'const p = db.hello().primary; print(p ? p.split(".")[0].split("-").pop() : "")' 2>/dev/null && return 0
  done
  return 1
}

# assert_replset NAME N: the config has members 0..N-1, all voting, stable DNS hosts, one primary.
assert_replset() {
  local name=$1 n=$2 p
  p=$(primary_ordinal "$name") || fail "no member answers"
  [[ -n "$p" ]] || fail "no primary"
  mongosh_root "$name" "$p" "
    const c = rs.conf();
    const ids = c.members.map(m => m._id).sort().join(',');
    const want = [...Array($n).keys()].join(',');
    if (ids !== want) { print('members ' + ids + ' want ' + want); quit(1); }
    for (const m of c.members) {
      if (m.votes !== 1 || m.priority <= 0) { print('member ' + m._id + ' not voting'); quit(1); }
      if (!m.host.startsWith('$name-mongo-' + m._id + '.$name-mongo.$NS.svc')) { print('host ' + m.host); quit(1); }
    }
    const s = rs.status();
    if (s.members.filter(m => m.stateStr === 'PRIMARY').length !== 1) { print('primaries'); quit(1); }
    if (s.members.some(m => !['PRIMARY','SECONDARY'].includes(m.stateStr))) { print(JSON.stringify(s.members.map(m => m.stateStr))); quit(1); }
  " || fail "replica set of $name is not $n healthy voting members"
  log "ok: $name is a healthy $n-member replica set (primary $p)"
}

# assert_users NAME: app and oplog users exist with the documented roles.
assert_users() {
  local name=$1 db=${2:-$1} p
  p=$(primary_ordinal "$name")
  mongosh_root "$name" "$p" "
    const a = db.getSiblingDB('admin');
    const app = a.getUser('app'), oplog = a.getUser('oplog');
    if (!app || !app.roles.some(r => r.role === 'readWrite' && r.db === '$db')) quit(1);
    if (!oplog || !oplog.roles.some(r => r.role === 'read' && r.db === 'local')) quit(1);
  " || fail "users of $name are missing or have wrong roles"
  log "ok: users app (readWrite on $db) and oplog (read on local)"
}

# assert_urls_work NAME: MONGO_URL and MONGO_OPLOG_URL from the URLs Secret authenticate.
assert_urls_work() {
  local name=$1 url oplog
  url=$(secret_value "$name-mongo-urls" MONGO_URL)
  oplog=$(secret_value "$name-mongo-urls" MONGO_OPLOG_URL)
  kubectl exec -n "$NS" "$name-mongo-0" -c mongod -- mongosh --quiet --norc "$url" \
    --eval 'db.e2e.insertOne({ at: new Date() }); quit(db.e2e.countDocuments() > 0 ? 0 : 1)' \
    || fail "MONGO_URL does not work"
  kubectl exec -n "$NS" "$name-mongo-0" -c mongod -- mongosh --quiet --norc "$oplog" \
    --eval 'quit(db.oplog.rs.find().limit(1).hasNext() ? 0 : 1)' \
    || fail "MONGO_OPLOG_URL cannot read the oplog"
  log "ok: MONGO_URL writes, MONGO_OPLOG_URL reads the oplog"
}

# assert_no_literal_passwords NAME: the app Deployment reads Mongo URLs from Secret refs only.
assert_no_literal_passwords() {
  local name=$1 pw
  pw=$(secret_value "$name-mongo-app" password)
  if kubectl get deployment "$name" -n "$NS" -o json | grep -q "$pw"; then
    fail "the app password appears in the Deployment"
  fi
  [[ "$(kubectl get deployment "$name" -n "$NS" -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="MONGO_URL")].valueFrom.secretKeyRef.name}')" == "$name-mongo-urls" ]] \
    || fail "MONGO_URL is not a Secret reference"
  log "ok: no literal password in the app Deployment"
}

cleanup_app() {
  kubectl delete meteorapp "$1" -n "$NS" --ignore-not-found --wait=true >/dev/null
  kubectl delete pvc,secret -n "$NS" -l "app.kubernetes.io/instance=$1" --ignore-not-found >/dev/null
}
