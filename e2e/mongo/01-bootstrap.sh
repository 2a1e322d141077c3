#!/usr/bin/env bash
# Bootstrap: a fresh 3-member set becomes a healthy replica set with users and working URLs.
source "$(dirname "$0")/lib.sh"
ensure_namespace
NAME=boot
cleanup_app "$NAME"
apply_app "$NAME" 3
wait_until "$NAME MongoReady with 3 ready members" members_ready "$NAME" 3
assert_replset "$NAME" 3
assert_users "$NAME"
assert_urls_work "$NAME"
assert_no_literal_passwords "$NAME"
# Ready on the MeteorApp requires MongoReady.
[[ "$(app_get "$NAME" '{.status.conditions[?(@.type=="MongoReady")].reason}')" == "Ready" ]] || fail "reason"
# Secrets are never rewritten: the root password is the same after a forced reconcile.
before=$(secret_value "$NAME-mongo-root" password)
kubectl annotate meteorapp "$NAME" -n "$NS" e2e/poke="$(date +%s)" --overwrite >/dev/null
sleep 20
[[ "$(secret_value "$NAME-mongo-root" password)" == "$before" ]] || fail "root password changed"
log "PASS bootstrap"
cleanup_app "$NAME"
