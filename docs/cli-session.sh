#!/usr/bin/env bash
# Regenerates the session in docs/cli.md: run against a fresh redis-server, e.g.
#   REDIS_URL=redis://127.0.0.1:6399 TRIBUTARY=target/debug/tributary bash docs/cli-session.sh
# and paste its output between the ```text fences of "A session".
set -u
T=${TRIBUTARY:-tributary}
run() { echo "\$ tributary $*"; eval "$T $*" 2>&1; echo; }
run publish orders --json "'{\"id\":1,\"item\":\"apple\"}'" --key customer-7 --header source=shop
run publish orders --json "'{\"id\":2,\"item\":\"pear\"}'"
run group create orders audit
run topics
run consume orders --group biling --consumer billing-1 --count 2
run consume orders --group billing --create-group --consumer billing-1 --count 2
run groups orders
run tail orders --from 0 --count 1
run --output json pending orders billing
run publish reminders --json "'{\"text\":\"call Ada\"}'" --in 1h
run scheduled list reminders
run trim orders --maxlen 0 --safe
run trim orders --maxlen 1 --yes
run retention set orders --maxlen 100000 --safe
run retention get orders
run groups nosuchtopic
run --url redis://127.0.0.1:1 topics
