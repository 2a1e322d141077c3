#!/usr/bin/env bash
# One command: installs what the benchmark needs, builds the proxy in release mode, runs
# bench/bench.py (everything on 127.0.0.1, bounded durations) and prints the table.
# Usage: bash bench/run.sh                 (every phase, about 11 minutes on 2 cores)
#        bash bench/run.sh get msg ...     (some phases: get msg ws churn hostile)
#        bash bench/run.sh hostile         (hostile clients, ours beside HAProxy: slowloris,
#                                   slow readers, oversized heads, a one-address flood, and
#                                   memory per connection in each state; about 6 minutes)
#        BENCH_QUICK=1 bash bench/run.sh   (shorter phases, one round)
#        BENCH_SEED=N bash bench/run.sh    (the same random order of proxies as a past run)
#        bash bench/run.sh autoscaling [up down]   (the scale-up / scale-down scenario alone,
#                                   bench/autoscaling.py: our proxy only, about 2 minutes;
#                                   BENCH_N=1000 open WebSockets)
#        bash bench/run.sh callgrind   (instructions per small GET, ours and HAProxy under
#                                   valgrind: bench/callgrind.py, about a minute)
#        BENCH_BASELINE_BIN=PATH bash bench/run.sh callgrind   (the same, and this build
#                                   against another meteor-proxy binary, e.g. the commit before
#                                   a hot-path change: fails above 3 % more instructions)
set -euo pipefail
cd "$(dirname "$0")/.."
autoscaling="" callgrind=""
[ "${1:-}" = autoscaling ] && autoscaling=1 && shift
[ "${1:-}" = callgrind ] && callgrind=1 && shift

need_apt=()
if [ -z "$autoscaling" ]; then
  command -v haproxy >/dev/null || need_apt+=(haproxy)
  command -v nginx >/dev/null || need_apt+=(nginx-light)
  command -v wrk >/dev/null || need_apt+=(wrk)
  command -v perf >/dev/null || need_apt+=(linux-perf)
fi
[ -z "$callgrind" ] || command -v valgrind >/dev/null || need_apt+=(valgrind)
command -v node >/dev/null || need_apt+=(nodejs npm)
command -v ss >/dev/null || need_apt+=(iproute2)
if ((${#need_apt[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# A Debian-installed nginx/haproxy may have started system services; they are not used.
[ -n "$autoscaling" ] || systemctl stop nginx haproxy >/dev/null 2>&1 || true
[ -n "$autoscaling" ] || command -v oha >/dev/null || cargo install oha --locked
[ -d proxy/tests/peers/node_modules/ws ] || (cd proxy/tests/peers && npm ci --no-audit --no-fund)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# The proxy alone: `meteor-proxy FLAGS` runs the same library call with the same flags and
# release profile as the shipped `meteor-operator proxy FLAGS`, without building the operator.
cargo build --release --quiet -p meteor-proxy --bin meteor-proxy
export PROXY_BIN="${PROXY_BIN:-$CARGO_TARGET_DIR/release/meteor-proxy}"

ulimit -n "$(ulimit -Hn)"
if [ -n "$autoscaling" ]; then
  exec python3 bench/autoscaling.py "$@"
fi
if [ -n "$callgrind" ]; then
  exec python3 bench/callgrind.py "$@"
fi
haproxy -v | sed -n 1p
nginx -v 2>&1
python3 bench/bench.py "$@"
