#!/usr/bin/env bash
# Operator restarts mid-bootstrap: kill the operator repeatedly while it initiates the set,
# creates users and adds members. The next operator must finish the same single replica set
# (one replicaSetId across members, users created once, no manual step).
source "$(dirname "$0")/lib.sh"
ensure_namespace
NAME=opkill
cleanup_app "$NAME"
apply_app "$NAME" 3
deadline=$((SECONDS + TIMEOUT))
kills=0
# Kill at each new reason the bootstrap passes through, and every 15 s until it is ready.
last=""
until members_ready "$NAME" 3; do
  ((SECONDS < deadline)) || fail "bootstrap with operator restarts timed out"
  reason=$(app_get "$NAME" '{.status.conditions[?(@.type=="MongoReady")].reason}')
  if [[ "$reason" != "$last" || $((SECONDS % 15)) -lt 3 ]]; then
    log "reason=$reason: killing the operator"
    kubectl delete pod -n "$OPERATOR_NS" -l app.kubernetes.io/name=meteor-operator --wait=false >/dev/null
    kills=$((kills + 1))
    last=$reason
  fi
  sleep 3
done
log "operator killed $kills times"
assert_replset "$NAME" 3
assert_users "$NAME"
ids=$(for i in 0 1 2; do mongosh_root "$NAME" "$i" 'print(rs.conf().settings.replicaSetId.toString())'; done | sort -u | wc -l)
[[ "$ids" == 1 ]] || fail "members belong to $ids different replica sets"
# A pod restarted mid-bootstrap as well: delete member 0 during a second bootstrap.
NAME2=podkill
cleanup_app "$NAME2"
apply_app "$NAME2" 3
wait_until "$NAME2 initializing" bash -c "[[ \"\$(kubectl get meteorapp $NAME2 -n $NS -o jsonpath='{.status.conditions[?(@.type==\"MongoReady\")].reason}')\" =~ Initializing|NoPrimary|Ready ]]"
kubectl delete pod "$NAME2-mongo-0" -n "$NS" --wait=false >/dev/null
wait_until "$NAME2 ready after a pod restart mid-bootstrap" members_ready "$NAME2" 3
assert_replset "$NAME2" 3
assert_users "$NAME2"
log "PASS operator restart mid-bootstrap"
cleanup_app "$NAME"
cleanup_app "$NAME2"
