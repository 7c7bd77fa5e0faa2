#!/usr/bin/env bash
# boot.sh INITRAMFS [QEMU ARGS...] - boot the cached kernel with INITRAMFS (tests/vm/mkinitramfs.sh)
# on a q35 machine with a virtual IOMMU whose RAM is a shared memfd (so a vfio-user server such
# as host-mux can reach guest memory), serial console on stdin/stdout, no reboot on exit. Extra
# arguments (typically a vfio-user-pci -device) go to QEMU.
# Env: VDPDK_VM_MEM (default 1G), VDPDK_VM_SMP (vCPUs, default 1), VDPDK_VM_APPEND (extra
#      kernel command line), and those of qemu.sh.
set -euo pipefail
CACHE=${VDPDK_VM_CACHE:-/var/cache/vdpdk-vm}
[ $# -ge 1 ] && [ -f "$1" ] || { echo "usage: boot.sh INITRAMFS [QEMU ARGS...]" >&2; exit 2; }
initramfs=$1; shift
mem=${VDPDK_VM_MEM:-1G}
# A virtual IOMMU (intel-iommu; caching-mode=on so QEMU hears of every mapping and forwards it
# to the vfio-user server) lets the guest's vfio-pci map DMA memory safely; hugepages keep each
# ring and buffer inside one mapping. hugepages= reserves them at boot.
exec bash "$(dirname "$0")/qemu.sh" -smp "${VDPDK_VM_SMP:-1}" -m "$mem" \
    -object "memory-backend-memfd,id=mem,size=$mem,share=on" -machine q35,memory-backend=mem \
    -device intel-iommu,caching-mode=on \
    -nographic -nodefaults -serial stdio -no-reboot \
    -kernel "$CACHE/vmlinuz" -initrd "$initramfs" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 intel_iommu=on hugepages=64 ${VDPDK_VM_APPEND:-}" "$@"
