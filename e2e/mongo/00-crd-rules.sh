#!/usr/bin/env bash
# The CRD's CEL rules on a real apiserver (server-side dry run): bad members, versions,
# storage, databases and reactivity are rejected with field-named messages, good ones pass.
source "$(dirname "$0")/lib.sh"
ensure_namespace

# try EXPECTED_SUBSTRING MANAGED_YAML [SPEC_EXTRA]: "" means it must be accepted.
try() {
  local expected=$1 managed=$2 extra=${3:-} out
  out=$(kubectl apply --dry-run=server -n "$NS" -f - 2>&1 <<YAML || true
apiVersion: meteorfleet.dev/v1alpha1
kind: MeteorApp
metadata:
  name: rules
spec:
  image: $APP_IMAGE
  rootUrl: https://rules.example.com
$extra
  mongo:
    managed: $managed
YAML
)
  if [[ -z "$expected" ]]; then
    [[ "$out" == *"created (server dry run)"* || "$out" == *"configured (server dry run)"* ]] \
      || fail "rejected $managed $extra: $out"
  else
    [[ "$out" == *"$expected"* ]] || fail "expected '$expected' for $managed $extra, got: $out"
  fi
}

try "" "{}"
try "" "{ members: 1, version: '6.0', storage: { size: 1Gi } }"
try "spec.mongo.managed.members" "{ members: 0 }"
try "spec.mongo.managed.members" "{ members: 9 }"
try "spec.mongo.managed.version" "{ version: '4.4' }"
try "spec.mongo.managed.storage.size" "{ storage: { size: 0Gi } }"
try "spec.mongo.managed.database" "{ database: admin }"
try "changeStreams needs MongoDB 6.0" "{ version: '5.0' }" "  reactivity: [changeStreams]"
try "" "{ version: '5.0' }" "  reactivity: [oplog, polling]"
try "spec.reactivity" "{}" "  reactivity: [oplog, oplog]"
log "PASS CRD rules"
