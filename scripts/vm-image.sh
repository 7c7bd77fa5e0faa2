#!/usr/bin/env bash
# vm-image.sh [-o OUT.qcow2] [--size SIZE] [--bin PATH]... [--rebuild] - build a bootable guest
# disk for vDPDK: Debian trixie with its kernel, booting with `intel_iommu=on hugepages=64`
# (and console=ttyS0), vfio-pci available, root logging in on the serial console without a
# password (a test VM: do not expose it), and the vDPDK guest tools in /usr/local/bin.
#
#   bash scripts/vm-image.sh                 # ./guest.qcow2, the disk of README.md's QEMU line
#
# How (no loop device, nbd or mounted image needed, so it also works in a container):
#   1. once: debootstrap a trixie guest root into $VDPDK_VM_CACHE/guest-root and install the
#      kernel, systemd, udev, kmod, pciutils, iproute2 and syslinux in it (a few minutes);
#   2. each run: copy the tools in, build a FAT boot partition (kernel, initrd, syslinux.cfg
#      with the command line; syslinux installed with mtools) and an ext4 root partition
#      (mkfs.ext4 -d, labelled vdpdk-root), put them behind an MBR (syslinux's mbr.bin) and
#      convert to qcow2. BIOS (SeaBIOS) -> MBR -> syslinux -> the kernel, as on a real disk.
#
# Options: -o, --output FILE   image to write (default guest.qcow2)
#          --size SIZE         root partition size (default 3G; the guest sees the free space)
#          --bin PATH          a guest binary to install (repeatable); default: vdpdk-guestctl
#                              and vdpdk-testpmd from target/release (built with `cargo build
#                              --release -p vdpdk-tools` when missing)
#          --rebuild           debootstrap the guest root again
# Env:     VDPDK_VM_CACHE      cache directory (default /var/cache/vdpdk-vm)
#          VDPDK_VM_MIRROR     Debian mirror (default: the one tests/vm/setup.sh found)
#          CARGO_TARGET_DIR    where the default binaries are (default ./target)
# Needs:   root; the QEMU root of tests/vm/setup.sh (run first when missing); qemu-img and
#          mkfs.ext4 (e2fsprogs >= 1.43) on the host.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${VDPDK_VM_CACHE:-/var/cache/vdpdk-vm}
GROOT=$CACHE/guest-root
GSTAMP=$CACHE/guest-ready-v1
OUT=guest.qcow2
SIZE=3G
BINS=()
REBUILD=0
# The guest's kernel command line (syslinux.cfg). root= by label: the disk may be vda or sda.
CMDLINE="root=LABEL=vdpdk-root rw console=ttyS0,115200 intel_iommu=on hugepages=64"
GUEST_PACKAGES=(linux-image-amd64 systemd-sysv udev kmod iproute2 pciutils procps less
    syslinux syslinux-common mtools dosfstools fdisk)

log() { printf '[vm-image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }

while [ $# -gt 0 ]; do
    case $1 in
    -o | --output) OUT=${2:?}; shift 2 ;;
    --size) SIZE=${2:?}; shift 2 ;;
    --bin) BINS+=("${2:?}"); shift 2 ;;
    --rebuild) REBUILD=1; shift ;;
    -h | --help) usage 0 ;;
    *) log "unknown argument: $1"; usage ;;
    esac
done
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
for t in qemu-img mkfs.ext4; do command -v $t >/dev/null || die "$t missing (apt-get install qemu-utils e2fsprogs)"; done
T0=$(date +%s)

# The guest binaries (before the slow part, so a missing one fails early).
DEFAULT_BINS=0
if [ ${#BINS[@]} -eq 0 ]; then
    DEFAULT_BINS=1
    tdir=${CARGO_TARGET_DIR:-$HERE/target}/release
    if [ ! -x "$tdir/vdpdk-guestctl" ] || [ ! -x "$tdir/vdpdk-testpmd" ]; then
        log "building vdpdk-guestctl and vdpdk-testpmd (cargo build --release -p vdpdk-tools)"
        (cd "$HERE" && cargo build --release -p vdpdk-tools --bin vdpdk-guestctl --bin vdpdk-testpmd) \
            || die "cargo build failed"
    fi
    BINS=("$tdir/vdpdk-guestctl" "$tdir/vdpdk-testpmd")
fi
for b in "${BINS[@]}"; do [ -x "$b" ] && [ -f "$b" ] || die "not an executable file: $b"; done

# in_guest CMD...: run inside the guest root with /proc, /dev and $WORK (as /mnt) mounted, in a
# private mount namespace (nothing stays mounted when it ends).
WORK=
in_guest() {
    unshare --mount --propagation private -- /bin/sh -ec '
        R=$1; W=$2; shift 2
        mount -t proc proc "$R/proc"
        mount --rbind /dev "$R/dev"
        if [ -n "$W" ]; then mount --bind "$W" "$R/mnt"; fi
        exec chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
            LC_ALL=C DEBIAN_FRONTEND=noninteractive "$@"' sh "$GROOT" "$WORK" "$@"
}

# 1. The guest root (cached).
if [ "$REBUILD" = 1 ] || [ ! -e "$GSTAMP" ]; then
    bash "$HERE/tests/vm/setup.sh" --check || bash "$HERE/tests/vm/setup.sh"
    MIRROR=${VDPDK_VM_MIRROR:-$(awk '$1 == "deb" { print $2; exit }' "$CACHE/root/etc/apt/sources.list" 2>/dev/null || true)}
    [ -n "$MIRROR" ] || die "no Debian mirror (set VDPDK_VM_MIRROR)"
    command -v debootstrap >/dev/null || die "debootstrap missing (tests/vm/setup.sh installs it)"
    rm -rf "$GSTAMP" "$GROOT"
    mkdir -p "$CACHE/logs"
    log "debootstrap --variant=minbase trixie $GROOT from $MIRROR"
    debootstrap --variant=minbase trixie "$GROOT" "$MIRROR" >"$CACHE/logs/guest-debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $CACHE/logs/guest-debootstrap.log"
    log "installing ${GUEST_PACKAGES[*]} in the guest root"
    in_guest apt-get install -y -q --no-install-recommends "${GUEST_PACKAGES[@]}" \
        >"$CACHE/logs/guest-install.log" 2>&1 \
        || die "installing the guest packages failed, see $CACHE/logs/guest-install.log"
    in_guest apt-get clean
    echo vdpdk-guest >"$GROOT/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tvdpdk-guest\n' >"$GROOT/etc/hosts"
    printf 'LABEL=vdpdk-root / ext4 errors=remount-ro 0 1\n' >"$GROOT/etc/fstab"
    in_guest passwd -d root >/dev/null
    # Nothing in the guest waits for a network, and no timers wake apt under TCG.
    in_guest systemctl mask apt-daily.timer apt-daily-upgrade.timer systemd-networkd-wait-online.service \
        >/dev/null 2>&1 || true
    ls "$GROOT"/boot/vmlinuz-* "$GROOT"/boot/initrd.img-* >/dev/null 2>&1 \
        || die "no kernel or initrd in the guest root's /boot"
    touch "$GSTAMP"
    log "guest root ready ($(du -sh "$GROOT" | cut -f1))"
fi
kernel=$(ls "$GROOT"/boot/vmlinuz-* | sort -V | tail -n1)
kver=${kernel##*/vmlinuz-}
initrd=$GROOT/boot/initrd.img-$kver
[ -s "$initrd" ] || die "no $initrd"
grep -qsE "^CONFIG_VFIO_PCI=(y|m)" "$GROOT/boot/config-$kver" || die "guest kernel $kver has no vfio-pci"

# 2. The image.
mkdir -p "$GROOT/usr/local/bin"
for b in "${BINS[@]}"; do install -m 0755 "$b" "$GROOT/usr/local/bin/"; done
# Built on this host, they must run on the guest's libc (trixie: glibc 2.41).
if [ "$DEFAULT_BINS" = 1 ]; then
    in_guest /usr/local/bin/vdpdk-guestctl --version >/dev/null 2>&1 \
        || die "vdpdk-guestctl does not run in the guest (a host glibc newer than trixie's?); build it static: RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p vdpdk-tools --target x86_64-unknown-linux-gnu, then --bin"
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vdpdk-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Boot partition: FAT with syslinux, the kernel, the initrd and the command line.
boot_mib=$(( ( $(stat -c %s "$kernel") + $(stat -c %s "$initrd") ) / 1048576 + 32 ))
cat >"$WORK/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT vdpdk
PROMPT 0
TIMEOUT 0
LABEL vdpdk
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND $CMDLINE
EOF
cp "$kernel" "$WORK/vmlinuz"
cp "$initrd" "$WORK/initrd.img"
log "boot partition: ${boot_mib} MiB FAT, kernel $kver, syslinux"
in_guest /bin/sh -ec "
    mkfs.vfat -F 16 -n VDPDK-BOOT -C /mnt/boot.img $((boot_mib * 1024)) >/dev/null
    export MTOOLS_SKIP_CHECK=1
    mcopy -i /mnt/boot.img /mnt/vmlinuz /mnt/initrd.img /mnt/syslinux.cfg ::/
    syslinux --install /mnt/boot.img
    cp /usr/lib/syslinux/mbr/mbr.bin /mnt/mbr.bin"
rm "$WORK/vmlinuz" "$WORK/initrd.img"

log "root partition: $SIZE ext4 from $GROOT (mkfs.ext4 -d)"
truncate -s "$SIZE" "$WORK/root.img"
mkfs.ext4 -q -F -L vdpdk-root -d "$GROOT" "$WORK/root.img" \
    || die "mkfs.ext4 -d failed (needs e2fsprogs >= 1.43)"

# The disk: MBR + boot (active, FAT16 LBA) at 1 MiB + root right after it.
boot_sectors=$(( boot_mib * 2048 ))
root_sectors=$(( $(stat -c %s "$WORK/root.img") / 512 ))
disk=$WORK/disk.raw
truncate -s $(( (2048 + boot_sectors + root_sectors) * 512 )) "$disk"
in_guest sfdisk --quiet /mnt/disk.raw <<EOF
label: dos
start=2048, size=$boot_sectors, type=e, bootable
start=$(( 2048 + boot_sectors )), size=$root_sectors, type=83
EOF
dd if="$WORK/mbr.bin" of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$WORK/boot.img" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$WORK/root.img" of="$disk" bs=1M seek=$(( 1 + boot_mib )) conv=notrunc,sparse status=none
rm "$WORK/boot.img" "$WORK/root.img"
log "converting to qcow2: $OUT"
qemu-img convert -f raw -O qcow2 "$disk" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "done in $(( $(date +%s) - T0 )) s: $OUT ($(du -h "$OUT" | cut -f1) on disk), kernel $kver, command line: $CMDLINE"
log "boot it: scripts/vm-qemu.sh (README's QEMU line) with -drive file=$OUT,if=virtio; log in as root"
