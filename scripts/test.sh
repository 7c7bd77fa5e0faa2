#!/usr/bin/env bash
# Every check and test of the workspace: formatting, the house rules (scripts/house-check.py),
# clippy (warnings are errors), every public item documented (cargo doc), and all unit,
# integration and acceptance tests. Run as root: the TAP backend tests need /dev/net/tun.
# On a Debian machine it installs the commands the tests use if they are missing
# (scripts/prereqs.sh); elsewhere it says what is missing and stops.
# Logs are quiet (RUST_LOG=warn) unless RUST_LOG is set.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/prereqs.sh

export RUST_LOG="${RUST_LOG:-warn}"

# Hugepages make DMA memory hugepage-backed (the path a real NIC uses); without them the code
# falls back to normal pages, so this is best effort. The previous reservation is restored when
# the script ends, however it ends.
hp=/proc/sys/vm/nr_hugepages
if [ -w "$hp" ] && [ "$(cat "$hp")" -lt 512 ]; then
    hp_before=$(cat "$hp")
    trap 'echo "$hp_before" > "$hp" 2>/dev/null || true; echo "hugepages: back to $hp_before reserved"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    echo 512 > "$hp" || true
fi
echo "hugepages: $(cat "$hp" 2>/dev/null || echo n/a) reserved"

cargo fmt --all --check
# The house rules of issue #13: no source file over 600 lines, no function over 120, no use
# cycle between files.
python3 scripts/house-check.py
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
cargo test --workspace
