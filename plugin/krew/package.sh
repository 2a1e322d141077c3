#!/usr/bin/env bash
# Builds the kubectl-meteor release archive krew installs, for this machine's OS and
# architecture, into target/krew/, and prints its sha256 and the command that installs it with krew.
# Usage (from the repository root): bash plugin/krew/package.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
os=$(uname -s | tr '[:upper:]' '[:lower:]')
case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "package.sh: unsupported architecture $(uname -m)" >&2; exit 2 ;;
esac

cargo build --release --locked -p kubectl-meteor
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp target/release/kubectl-meteor LICENSE "$stage/"
mkdir -p target/krew
archive="target/krew/kubectl-meteor-$os-$arch.tar.gz"
tar -C "$stage" -czf "$archive" kubectl-meteor LICENSE
sum=$(sha256sum "$archive" | cut -d' ' -f1)

echo "archive: $archive"
echo "sha256:  $sum"
echo "install: kubectl krew install --manifest=plugin/krew/meteor.yaml --archive=$archive"
