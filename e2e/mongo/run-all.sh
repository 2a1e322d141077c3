#!/usr/bin/env bash
# Runs every managed-MongoDB scenario in order; stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")"
for scenario in 0*.sh; do
  echo "=== $scenario"
  bash "$scenario"
done
echo "all managed-MongoDB scenarios passed"
