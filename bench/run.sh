#!/usr/bin/env bash
# One command: installs what the benchmark needs, builds the proxy in release mode, runs
# bench/bench.py (everything on 127.0.0.1, bounded durations) and prints the table.
# Usage: bash bench/run.sh            (full run, ~6 minutes on 2 cores)
#        BENCH_QUICK=1 bash bench/run.sh   (shorter phases)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v wrk >/dev/null || need_apt+=(wrk)
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
cargo build --release --quiet -p meteor-operator --bin meteor-operator
export PROXY_BIN="$CARGO_TARGET_DIR/release/meteor-operator"

haproxy -v | sed -n 1p
nginx -v 2>&1
ulimit -n "$(ulimit -Hn)"
python3 bench/bench.py "$@"
