#!/usr/bin/env bash
# Member scale 1 -> 3 -> 1: members join non-voting then vote; scale-down removes the member
# from the config before its pod goes; PVCs of removed members stay (whenScaled: Retain).
source "$(dirname "$0")/lib.sh"
ensure_namespace
NAME=scale
cleanup_app "$NAME"
apply_app "$NAME" 1
wait_until "$NAME 1 member" members_ready "$NAME" 1
assert_replset "$NAME" 1
mongosh_root "$NAME" 0 "db.getSiblingDB('$NAME').keep.insertOne({ v: 42 })" >/dev/null

kubectl patch meteorapp "$NAME" -n "$NS" --type merge -p '{"spec":{"mongo":{"managed":{"members":3}}}}'
# Watch that no member ever holds a vote before it is SECONDARY.
deadline=$((SECONDS + TIMEOUT))
until members_ready "$NAME" 3; do
  ((SECONDS < deadline)) || fail "scale up timed out"
  mongosh_root "$NAME" "$(primary_ordinal "$NAME")" "
    const s = Object.fromEntries(rs.status().members.map(m => [m._id, m.stateStr]));
    for (const m of rs.conf().members) if (m.votes > 0 && !['PRIMARY','SECONDARY'].includes(s[m._id])) { print('voting while ' + s[m._id]); quit(1); }
  " >/dev/null 2>&1 || [[ $? -ne 1 ]] || fail "a syncing member had a vote"
  sleep 3
done
assert_replset "$NAME" 3

kubectl patch meteorapp "$NAME" -n "$NS" --type merge -p '{"spec":{"mongo":{"managed":{"members":1}}}}'
# While pods 1 and 2 exist, the StatefulSet must not shrink below the members in the config.
deadline=$((SECONDS + TIMEOUT))
until members_ready "$NAME" 1 && [[ "$(kubectl get sts "$NAME-mongo" -n "$NS" -o jsonpath='{.spec.replicas}')" == 1 ]]; do
  ((SECONDS < deadline)) || fail "scale down timed out"
  replicas=$(kubectl get sts "$NAME-mongo" -n "$NS" -o jsonpath='{.spec.replicas}')
  in_config=$(mongosh_root "$NAME" 0 'print(Math.max(...rs.conf().members.map(m => m._id)) + 1)' 2>/dev/null || echo 0)
  if [[ "$in_config" =~ ^[0-9]+$ ]] && ((replicas < in_config)); then
    fail "StatefulSet at $replicas while $in_config members are configured"
  fi
  sleep 3
done
assert_replset "$NAME" 1
mongosh_root "$NAME" 0 "quit(db.getSiblingDB('$NAME').keep.findOne({ v: 42 }) ? 0 : 1)" || fail "data lost"
kubectl get pvc -n "$NS" "data-$NAME-mongo-2" >/dev/null || fail "PVC of removed member 2 was deleted"
log "PASS scale 1->3->1"
cleanup_app "$NAME"
