#!/usr/bin/env bash
# vm-qemu.sh [QEMU ARGS...] - run QEMU >= 10.1 (with vfio-user-pci) on a host whose own QEMU is
# older, e.g. Debian bookworm (7.2). It is the qemu-system-x86_64 of the Debian trixie root the
# VM tests cache (tests/vm/setup.sh, run here first if the cache is not ready: needs root and a
# Debian mirror, about a minute once), started with that root's own loader and libraries, so the
# host keeps its libc and apt sources and every host path (sockets, images) works as usual.
# The arguments go to QEMU unchanged; the QEMU process replaces this script.
#
#   scripts/vm-qemu.sh --version
#   scripts/vm-qemu.sh -accel kvm -cpu host -smp 2 -m 2G ... (the QEMU line of README.md)
#
# Env: VDPDK_VM_CACHE  cache directory (default /var/cache/vdpdk-vm)
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${VDPDK_VM_CACHE:-/var/cache/vdpdk-vm}
ROOT=$CACHE/root

if ! bash "$HERE/tests/vm/setup.sh" --check; then
    echo "vm-qemu.sh: preparing the QEMU root in $CACHE (tests/vm/setup.sh)" >&2
    bash "$HERE/tests/vm/setup.sh" >&2
fi
lib=$ROOT/usr/lib/x86_64-linux-gnu
[ -x "$ROOT/usr/bin/qemu-system-x86_64" ] && [ -x "$lib/ld-linux-x86-64.so.2" ] \
    || { echo "vm-qemu.sh: no QEMU in $ROOT (run tests/vm/setup.sh)" >&2; exit 1; }
export QEMU_MODULE_DIR=$lib/qemu
# -L: firmware (SeaBIOS, option ROMs) from the root, whose paths are compiled in as /usr/share.
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$ROOT/usr/bin/qemu-system-x86_64" \
    -L "$ROOT/usr/share/seabios" -L "$ROOT/usr/share/qemu" "$@"
