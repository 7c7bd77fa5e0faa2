#!/usr/bin/env bash
# qemu.sh [QEMU ARGS...] - run the cached root's qemu-system-x86_64 (tests/vm/setup.sh) with an
# accelerator picked for this host, plus the caller's arguments.
#
# The QEMU process replaces this script (exec), so killing the script's PID kills QEMU.
# Env: VDPDK_VM_CACHE   cache directory (default /var/cache/vdpdk-vm)
#      VDPDK_VM_ACCEL   auto (default) | kvm | tcg. auto picks tcg where /dev/kvm is the PVM
#                       backend (kvm_pvm: stock kernels die there with "KVM internal error")
#                       and kvm where kvm_intel/kvm_amd is loaded.
#      VDPDK_VM_RUNNER  ldso (default): the root's own dynamic loader and libraries, so every
#                       host path is visible; chroot: inside the root, with /tmp bind-mounted.
set -euo pipefail
CACHE=${VDPDK_VM_CACHE:-/var/cache/vdpdk-vm}
ROOT=$CACHE/root
[ -x "$ROOT/usr/bin/qemu-system-x86_64" ] || { echo "qemu.sh: run tests/vm/setup.sh first" >&2; exit 1; }

accel=${VDPDK_VM_ACCEL:-auto}
if [ "$accel" = auto ]; then
    if [ -d /sys/module/kvm_pvm ]; then accel=tcg
    elif [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then accel=kvm
    else accel=tcg; fi
fi
cpu=()
[ "$accel" = kvm ] && cpu=(-cpu host)

case ${VDPDK_VM_RUNNER:-ldso} in
ldso)
    lib=$ROOT/usr/lib/x86_64-linux-gnu
    export QEMU_MODULE_DIR=$lib/qemu
    exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$ROOT/usr/bin/qemu-system-x86_64" \
        -L "$ROOT/usr/share/seabios" -L "$ROOT/usr/share/qemu" -accel "$accel" "${cpu[@]}" "$@" ;;
chroot)
    exec unshare --mount --propagation private -- /bin/sh -ec '
        R=$1; shift
        mount -t proc proc "$R/proc"
        mount --rbind /dev "$R/dev"
        mount --bind /tmp "$R/tmp"
        exec chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
            qemu-system-x86_64 "$@"' sh "$ROOT" -accel "$accel" "${cpu[@]}" "$@" ;;
*)
    echo "qemu.sh: VDPDK_VM_RUNNER must be ldso or chroot" >&2; exit 2 ;;
esac
