#!/usr/bin/env bash
# Retain (default): deleting the MeteorApp leaves PVCs and credential Secrets; recreating it
# reuses them (the existing root user is used, no new credentials, data intact).
source "$(dirname "$0")/lib.sh"
ensure_namespace
NAME=retain
cleanup_app "$NAME"
apply_app "$NAME" 1
wait_until "$NAME ready" members_ready "$NAME" 1
mongosh_root "$NAME" 0 "db.getSiblingDB('$NAME').keep.insertOne({ v: 7 })" >/dev/null
root_pw=$(secret_value "$NAME-mongo-root" password)
kubectl delete meteorapp "$NAME" -n "$NS" --wait=true
wait_until "StatefulSet gone" bash -c "! kubectl get sts $NAME-mongo -n $NS >/dev/null 2>&1"
kubectl get pvc "data-$NAME-mongo-0" -n "$NS" >/dev/null || fail "PVC deleted with Retain"
for s in keyfile root app oplog; do
  kubectl get secret "$NAME-mongo-$s" -n "$NS" >/dev/null || fail "Secret $s deleted with Retain"
done
apply_app "$NAME" 1
wait_until "$NAME ready again" members_ready "$NAME" 1
[[ "$(secret_value "$NAME-mongo-root" password)" == "$root_pw" ]] || fail "root password changed"
mongosh_root "$NAME" 0 "quit(db.getSiblingDB('$NAME').keep.findOne({ v: 7 }) ? 0 : 1)" || fail "data lost"
log "PASS retain"
cleanup_app "$NAME"
