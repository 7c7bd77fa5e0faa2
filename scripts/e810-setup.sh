#!/usr/bin/env bash
# Prepares an Intel E810 PF for host-mux: IOMMU check, DDP package check, bind to vfio-pci,
# hugepages, and a host-mux config. Undo with --restore (gives the port back to the kernel
# ice driver).
#
# usage: scripts/e810-setup.sh 0000:3b:00.0 [--hugepages N] [--config FILE]
#        scripts/e810-setup.sh 0000:3b:00.0 --restore
set -euo pipefail

die() { echo "e810-setup: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
[ $# -ge 1 ] || die "usage: $0 BDF [--hugepages N] [--config FILE] | BDF --restore"
BDF=$1; shift
HUGEPAGES=1024
CONFIG=./e810.toml
RESTORE=
while [ $# -gt 0 ]; do
    case $1 in
    --hugepages) HUGEPAGES=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --restore) RESTORE=1; shift ;;
    *) die "unknown argument $1" ;;
    esac
done
[[ $BDF =~ ^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$ ]] || die "'$BDF' is not a PCI address like 0000:3b:00.0"
DEV=/sys/bus/pci/devices/$BDF
[ -d "$DEV" ] || die "no PCI device $BDF"
VENDOR=$(cat "$DEV/vendor"); DEVICE=$(cat "$DEV/device")
case "$VENDOR:$DEVICE" in
    0x8086:0x1591|0x8086:0x1592|0x8086:0x1593|0x8086:0x1599|0x8086:0x159a|0x8086:0x159b) ;;
    *) die "$BDF is $VENDOR:$DEVICE, not an E810 PF (8086:1591-1593, 1599-159b)" ;;
esac

current_driver() { basename "$(readlink -f "$DEV/driver" 2>/dev/null)" 2>/dev/null || true; }

if [ -n "$RESTORE" ]; then
    [ "$(current_driver)" = vfio-pci ] && echo "$BDF" > "$DEV/driver/unbind"
    echo > "$DEV/driver_override"
    modprobe ice
    echo "$BDF" > /sys/bus/pci/drivers_probe
    echo "e810-setup: $BDF is back with driver '$(current_driver)'"
    exit 0
fi

# 1. IOMMU: vfio needs one (kernel command line: intel_iommu=on iommu=pt, or amd_iommu=on).
[ -e "$DEV/iommu_group" ] || die "no IOMMU group for $BDF: enable the IOMMU (intel_iommu=on iommu=pt) and VT-d in the firmware"
GROUP=$(basename "$(readlink -f "$DEV/iommu_group")")

# 2. DDP package: without it the port runs in safe mode (one queue pair, no Flow Director).
PKG=/lib/firmware/intel/ice/ddp/ice.pkg
if [ ! -e "$PKG" ]; then
    echo "e810-setup: warning: no DDP package at $PKG; host-mux will run the E810 in safe mode." >&2
    echo "            Install Intel's ice DDP package (the distribution's linux-firmware / firmware-misc-nonfree, or Intel's download) so that $PKG exists." >&2
fi

# 3. Bind the function to vfio-pci.
modprobe vfio-pci
if [ "$(current_driver)" != vfio-pci ]; then
    [ -e "$DEV/driver" ] && echo "$BDF" > "$DEV/driver/unbind"
    echo vfio-pci > "$DEV/driver_override"
    echo "$BDF" > /sys/bus/pci/drivers_probe
fi
[ "$(current_driver)" = vfio-pci ] || die "binding $BDF to vfio-pci failed"
# Every device of the IOMMU group must be unbound or on vfio-pci, or the group is not viable.
for d in /sys/kernel/iommu_groups/"$GROUP"/devices/*; do
    drv=$(basename "$(readlink -f "$d/driver" 2>/dev/null)" 2>/dev/null || true)
    case "$drv" in ""|vfio-pci|pcieport) ;; *) die "IOMMU group $GROUP also holds $(basename "$d") (driver $drv); bind it to vfio-pci too" ;; esac
done
[ -e "/dev/vfio/$GROUP" ] || die "/dev/vfio/$GROUP missing"

# 4. Hugepages for packet buffers (2 MiB pages).
echo "$HUGEPAGES" > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
GOT=$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)
[ "$GOT" -ge "$HUGEPAGES" ] || echo "e810-setup: warning: only $GOT of $HUGEPAGES hugepages reserved" >&2

# 5. A host-mux config for this port (edit the [[vm]] entries).
if [ ! -e "$CONFIG" ]; then
    cat > "$CONFIG" <<TOML
[backend]
kind = "ice"
pci = "$BDF"

[mux]
stats_socket = "/run/vdpdk/stats.sock"

[[cluster]]
cpus = [2, 3]

[[vm]]
name = "vm1"
socket = "/run/vdpdk/vm1.sock"
mac = "02:00:00:00:00:01"
rx_queues = 4
TOML
fi
echo "e810-setup: $BDF on vfio-pci (IOMMU group $GROUP), $GOT hugepages; config in $CONFIG"
echo "run:   ulimit -l unlimited; host-mux --config $CONFIG"
echo "undo:  $0 $BDF --restore"
