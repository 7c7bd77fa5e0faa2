#!/usr/bin/env bash
# Every check and test of the workspace: formatting, clippy (warnings are errors), and all unit,
# integration and acceptance tests. Run as root: the TAP backend tests need /dev/net/tun.
set -euo pipefail
cd "$(dirname "$0")/.."

# Hugepages make DMA memory hugepage-backed (the path a real NIC uses); without them the code
# falls back to normal pages, so this is best effort.
if [ -w /proc/sys/vm/nr_hugepages ] && [ "$(cat /proc/sys/vm/nr_hugepages)" -lt 512 ]; then
    echo 512 > /proc/sys/vm/nr_hugepages || true
fi
echo "hugepages: $(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo n/a) reserved"

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
