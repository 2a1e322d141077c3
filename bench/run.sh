#!/usr/bin/env bash
# One command: installs what the benchmark needs, builds the proxy in release mode, runs
# bench/bench.py (everything on 127.0.0.1, bounded durations) and prints the table.
# Usage: bash bench/run.sh                 (every phase, about 11 minutes on 2 cores)
#        bash bench/run.sh get msg ...     (some phases: get msg ws churn)
#        BENCH_QUICK=1 bash bench/run.sh   (shorter phases, one round)
#        BENCH_SEED=N bash bench/run.sh    (the same random order of proxies as a past run)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v perf >/dev/null || need_apt+=(linux-perf)
command -v node >/dev/null || need_apt+=(nodejs npm)
if ((${#need_apt[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# A Debian-installed nginx/haproxy may have started system services; they are not used.
systemctl stop nginx haproxy >/dev/null 2>&1 || true
command -v oha >/dev/null || cargo install oha --locked
[ -d proxy/tests/peers/node_modules/ws ] || (cd proxy/tests/peers && npm ci --no-audit --no-fund)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# The proxy alone: `meteor-proxy FLAGS` runs the same library call with the same flags and
# release profile as the shipped `meteor-operator proxy FLAGS`, without building the operator.
cargo build --release --quiet -p meteor-proxy --bin meteor-proxy
export PROXY_BIN="${PROXY_BIN:-$CARGO_TARGET_DIR/release/meteor-proxy}"

haproxy -v | sed -n 1p
nginx -v 2>&1
ulimit -n "$(ulimit -Hn)"
python3 bench/bench.py "$@"
