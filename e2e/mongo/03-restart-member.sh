#!/usr/bin/env bash
# Restart a member (the primary, then a secondary): the set elects, the member rejoins under
# the same DNS name with a new pod IP, no data is lost, MongoReady returns to True.
source "$(dirname "$0")/lib.sh"
ensure_namespace
NAME=restart
cleanup_app "$NAME"
apply_app "$NAME" 3
wait_until "$NAME ready" members_ready "$NAME" 3
mongosh_root "$NAME" "$(primary_ordinal "$NAME")" "db.getSiblingDB('$NAME').keep.insertOne({ v: 1 }, { writeConcern: { w: 'majority' } })" >/dev/null
for role in primary secondary; do
  p=$(primary_ordinal "$NAME")
  if [[ $role == primary ]]; then victim=$p; else victim=$(( (p + 1) % 3 )); fi
  old_ip=$(kubectl get pod "$NAME-mongo-$victim" -n "$NS" -o jsonpath='{.status.podIP}')
  log "deleting $role pod $NAME-mongo-$victim ($old_ip)"
  kubectl delete pod "$NAME-mongo-$victim" -n "$NS" --wait=false >/dev/null
  sleep 10
  wait_until "$NAME back to 3 ready members" members_ready "$NAME" 3
  assert_replset "$NAME" 3
done
mongosh_root "$NAME" "$(primary_ordinal "$NAME")" "quit(db.getSiblingDB('$NAME').keep.findOne({ v: 1 }) ? 0 : 1)" || fail "data lost"
log "PASS restart a member"
cleanup_app "$NAME"
