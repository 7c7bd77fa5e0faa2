#!/usr/bin/env bash
# mkinitramfs.sh OUT.cpio.gz --bin PATH [--bin PATH...] --script PATH
# Builds the test initramfs: busybox (static, from the cached root), the vfio modules, every
# --bin in /bin, the --script as /test.sh, and an /init that loads vfio, binds each vDPDK device
# (1af4:7abc) to vfio-pci, runs /test.sh on the console, prints "VM-RESULT: rc=N" and powers
# off. Progress and failures are printed as "VM: ..." lines.
set -euo pipefail
CACHE=${VDPDK_VM_CACHE:-/var/cache/vdpdk-vm}
usage() { echo "usage: mkinitramfs.sh OUT.cpio.gz --bin PATH [--bin PATH...] --script PATH" >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1; shift
bins=(); script=
while [ $# -gt 0 ]; do
    case $1 in
        --bin) [ $# -ge 2 ] && [ -f "$2" ] || { echo "mkinitramfs.sh: --bin needs an existing file" >&2; exit 2; }
               bins+=("$2"); shift 2 ;;
        --script) [ $# -ge 2 ] && [ -f "$2" ] || { echo "mkinitramfs.sh: --script needs an existing file" >&2; exit 2; }
                  script=$2; shift 2 ;;
        *) usage ;;
    esac
done
[ -n "$script" ] || usage
bash "$(dirname "$0")/setup.sh" --check || { echo "mkinitramfs.sh: run tests/vm/setup.sh first" >&2; exit 1; }

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{bin,dev,proc,sys,lib/modules}
cp "$CACHE/root/usr/bin/busybox" "$work/bin/busybox"
cp "$CACHE"/modules/*.ko "$CACHE/modules/load-order" "$work/lib/modules/"
for b in "${bins[@]}"; do install -m 755 "$b" "$work/bin/"; done
install -m 755 "$script" "$work/test.sh"
cat >"$work/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "VM: $*"; }
say "up after $(cut -d' ' -f1 /proc/uptime) s, kernel $(uname -r)"
for m in $(cat /lib/modules/load-order); do
    insmod /lib/modules/$m.ko || say "FAILED to load module $m"
done
[ "$(cat /proc/sys/vm/nr_hugepages)" -gt 0 ] || echo 64 > /proc/sys/vm/nr_hugepages
for d in /sys/bus/pci/devices/*; do
    [ "$(cat $d/vendor):$(cat $d/device)" = "0x1af4:0x7abc" ] || continue
    bdf=${d##*/}
    echo vfio-pci > $d/driver_override
    echo $bdf > /sys/bus/pci/drivers_probe
    if [ -e $d/iommu_group ]; then
        say "device $bdf bound to $(basename $(readlink $d/driver) 2>/dev/null), group /dev/vfio/$(basename $(readlink $d/iommu_group))"
    else
        say "device $bdf has no IOMMU group (boot with intel_iommu=on and a vIOMMU)"
    fi
done
sh /test.sh
rc=$?
echo "VM-RESULT: rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
INIT
chmod 755 "$work/init"
(cd "$work" && find . | "$CACHE/root/usr/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -1 >"$out"
echo "initramfs $out: $(du -h "$out" | cut -f1)" >&2
