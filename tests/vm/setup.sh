#!/usr/bin/env bash
# setup.sh - prepare (once) what the VM tests need, cached under $VDPDK_VM_CACHE
# (default /var/cache/vdpdk-vm):
#   root/      Debian trixie (debootstrap minbase) with QEMU >= 10.1 from trixie-backports and
#              busybox-static. QEMU runs from this root (tests/vm/qemu.sh) so the host keeps its
#              own libc and apt sources.
#   vmlinuz    the trixie kernel
#   modules/   the vfio modules a guest needs, decompressed, and load-order (dependencies first)
#   ice/       with --ice, what a guest running Linux's own E810 driver needs (the Linux-ice
#              tests of the E810 model, tests/vm/linux-ice.sh): ice/modules/ (ice and its
#              dependencies, load-order), ice/firmware/intel/ice/ddp/ice.pkg (the DDP package,
#              Debian's firmware-intel-misc from non-free-firmware) and ice/guest/ (ethtool and
#              iperf3 with the shared libraries and loader they need)
# A second run only checks the stamps (about a second).
#
# Usage: setup.sh [--check] [--ice]
#        --check: exit 0 if the cache (with --ice: and its ice/ part) is complete, 1 if not
# Env:   VDPDK_VM_CACHE  cache directory
#        VDPDK_VM_MIRROR Debian mirror (default: the first .../debian URI of the host's apt sources)
# Needs: root, a Debian host with apt reaching a Debian mirror.
set -euo pipefail

CACHE=${VDPDK_VM_CACHE:-/var/cache/vdpdk-vm}
ROOT=$CACHE/root
STAMP=$CACHE/ready-v1
ICE_STAMP=$CACHE/ice/ready-v2
# Modules for vfio-pci behind the guest's (virtual) IOMMU; their dependencies are added too.
WANT_MODULES=(vfio vfio_iommu_type1 vfio_pci_core vfio_pci)

log() { printf '[vm-setup %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

check=0 ice=0
for a in "$@"; do
    case $a in
        --check) check=1 ;;
        --ice) ice=1 ;;
        *) echo "usage: setup.sh [--check] [--ice]" >&2; exit 2 ;;
    esac
done
ready() { [ -e "$STAMP" ] && { [ $ice = 0 ] || [ -e "$ICE_STAMP" ]; }; }
if [ $check = 1 ]; then
    ready && exit 0 || exit 1
fi
ready && { log "cache $CACHE is ready"; exit 0; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
T0=$(date +%s)
mkdir -p "$CACHE/logs"
# One setup at a time: tests run in parallel, and each may find the cache missing (two at
# once raced for the host's apt lock and would have built one root over the other). The
# later one waits here, then finds the cache ready.
exec 9>"$CACHE/.setup.lock"
if ! flock -n 9; then
    log "another setup is preparing $CACHE: waiting for it"
    flock 9
fi
ready && { log "cache $CACHE is ready (prepared meanwhile)"; exit 0; }

mirror() {
    if [ -n "${VDPDK_VM_MIRROR:-}" ]; then echo "$VDPDK_VM_MIRROR"; return; fi
    # URIs: lines of deb822 sources and deb lines of one-line sources; comments are skipped.
    { grep -hE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | sed 's/^[^:]*://' | tr ' ' '\n'
      grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | sed -E 's/\[[^]]*\]//' | awk '{print $2}'
    } | grep -E '^https?://[^ ]+/debian/?$' | head -n1 || true
}
MIRROR=$(mirror)
[ -n "$MIRROR" ] || die "no Debian mirror found in the host's apt sources (set VDPDK_VM_MIRROR)"
log "mirror: $MIRROR"

# in_root CMD...: run inside $ROOT with /proc and /dev, in a private mount namespace.
in_root() {
    unshare --mount --propagation private -- /bin/sh -ec '
        R=$1; shift
        mount -t proc proc "$R/proc"
        mount --rbind /dev "$R/dev"
        exec chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
            LC_ALL=C DEBIAN_FRONTEND=noninteractive "$@"' sh "$ROOT" "$@"
}

if [ ! -x "$ROOT/usr/bin/qemu-system-x86_64" ]; then
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap (from the host's own release)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    [ -e /usr/share/debootstrap/scripts/trixie ] || die "this debootstrap does not know trixie"
    log "debootstrap --variant=minbase trixie $ROOT (a few minutes)"
    rm -rf "$ROOT"
    debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >"$CACHE/logs/debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $CACHE/logs/debootstrap.log"
    cat >"$ROOT/etc/apt/sources.list.d/trixie-backports.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    log "installing qemu-system-x86 (trixie-backports) and busybox-static in the root"
    in_root apt-get update -qq >"$CACHE/logs/apt-update.log" 2>&1 \
        || die "apt-get update in the root failed, see $CACHE/logs/apt-update.log"
    in_root apt-get install -y -q --no-install-recommends -t trixie-backports \
        qemu-system-x86 busybox-static >"$CACHE/logs/apt-install.log" 2>&1 \
        || die "installing QEMU in the root failed, see $CACHE/logs/apt-install.log"
    in_root apt-get clean
fi
"$ROOT/usr/bin/busybox" true || die "busybox-static missing in the root"

# unpack_kernel: the trixie kernel package unpacked under $ROOT/tmp/kernel/x; sets KVER and MODS.
unpack_kernel() {
    local kpkg x
    x="$ROOT/tmp/kernel/x"
    if [ ! -d "$x" ]; then
        kpkg=$(in_root apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
        [ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 in the root"
        log "downloading $kpkg"
        rm -rf "$ROOT/tmp/kernel" && mkdir -p "$ROOT/tmp/kernel"
        in_root sh -c "cd /tmp/kernel && apt-get download '$kpkg'" >"$CACHE/logs/kernel.log" 2>&1 \
            || die "downloading $kpkg failed, see $CACHE/logs/kernel.log"
        mkdir -p "$x.part"
        dpkg-deb -x "$ROOT"/tmp/kernel/*.deb "$x.part"
        mv "$x.part" "$x"
    fi
    MODS=$(ls -d "$x"/usr/lib/modules/* "$x"/lib/modules/* 2>/dev/null | head -n1 || true)
    [ -n "$MODS" ] || die "no modules directory in the kernel package"
    KVER=$(basename "$MODS")
    KBOOT="$x/boot"
}

# extract_modules OUT MODULE...: each module and its dependencies, decompressed into OUT, with
# OUT/load-order listing them dependencies first. The package has no modules.dep (depmod writes
# it at install): each module's .modinfo "depends=" is read instead.
extract_modules() {
    local out=$1 f n
    shift
    rm -rf "$out" && mkdir -p "$out"
    declare -A path_of=() seen=()
    while read -r f; do
        n=$(basename "$f"); n=${n%%.ko*}; path_of[${n//-/_}]=$f
    done < <(find "$MODS/kernel" -name '*.ko*')
    order=()
    add() {
        local m=${1//-/_} f deps d
        [ -n "${seen[$m]:-}" ] && return
        seen[$m]=1
        f=${path_of[$m]:-}
        if [ -z "$f" ]; then
            tr '-' '_' <"$MODS/modules.builtin" | grep -q "/$m\.ko" && return # built in
            die "module $m not found in $KVER"
        fi
        case $f in
            *.xz) xz -dc "$f" ;;
            *.zst) zstd -dcq "$f" ;;
            *.gz) gzip -dc "$f" ;;
            *) cat "$f" ;;
        esac >"$out/$m.ko"
        deps=$(tr '\0' '\n' <"$out/$m.ko" | grep -a '^depends=' | head -n1 | cut -d= -f2 | tr ',' ' ' || true)
        for d in $deps; do add "$d"; done
        order+=("$m")
    }
    for m in "$@"; do add "$m"; done
    printf '%s\n' "${order[@]}" >"$out/load-order"
    log "modules in $out: ${order[*]}"
}

if [ ! -s "$CACHE/vmlinuz" ] || [ ! -s "$CACHE/modules/load-order" ]; then
    unpack_kernel
    for opt in CONFIG_INTEL_IOMMU=y CONFIG_VFIO_IOMMU_TYPE1=; do
        grep -q "^$opt" "$KBOOT/config-$KVER" || die "kernel $KVER lacks $opt"
    done
    cp "$KBOOT/vmlinuz-$KVER" "$CACHE/vmlinuz"
    extract_modules "$CACHE/modules" "${WANT_MODULES[@]}"
    echo "$KVER" >"$CACHE/kernel-version"
fi

# guest_program PATH OUT: a dynamically linked program of the root, with every shared library
# it loads (ldd inside the root) and the loader, under OUT/ as the same paths.
guest_program() {
    local lib
    mkdir -p "$2$(dirname "$1")"
    cp "$ROOT$1" "$2$1"
    for lib in $(in_root ldd "$1" | grep -oE '/[^ ]+\.so[^ ]*'); do
        mkdir -p "$2$(dirname "$lib")"
        cp -L "$ROOT$lib" "$2$lib"
    done
}

if [ $ice = 1 ] && [ ! -e "$ICE_STAMP" ]; then
    log "preparing ice/ (Linux's E810 driver, its DDP package, ethtool and iperf3 for the guest)"
    unpack_kernel
    extract_modules "$CACHE/ice/modules" ice
    cat >"$ROOT/etc/apt/sources.list.d/trixie-firmware.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: trixie
Components: non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    in_root apt-get update -qq >"$CACHE/logs/apt-update-ice.log" 2>&1 \
        || die "apt-get update in the root failed, see $CACHE/logs/apt-update-ice.log"
    in_root apt-get install -y -q --no-install-recommends ethtool iperf3 \
        >"$CACHE/logs/apt-install-ice.log" 2>&1 \
        || die "installing ethtool and iperf3 in the root failed, see $CACHE/logs/apt-install-ice.log"
    rm -rf "$ROOT/tmp/fw" && mkdir -p "$ROOT/tmp/fw"
    in_root sh -c "cd /tmp/fw && apt-get download firmware-intel-misc" >"$CACHE/logs/firmware.log" 2>&1 \
        || die "downloading firmware-intel-misc failed, see $CACHE/logs/firmware.log"
    dpkg-deb -x "$ROOT"/tmp/fw/*.deb "$ROOT/tmp/fw/x"
    pkg=$(ls "$ROOT"/tmp/fw/x/{usr/,}lib/firmware/intel/ice/ddp/ice.pkg 2>/dev/null | head -n1 || true)
    [ -n "$pkg" ] || die "no intel/ice/ddp/ice.pkg in firmware-intel-misc"
    mkdir -p "$CACHE/ice/firmware/intel/ice/ddp"
    cp -L "$pkg" "$CACHE/ice/firmware/intel/ice/ddp/ice.pkg"
    rm -rf "$ROOT/tmp/fw" "$CACHE/ice/guest"
    guest_program /usr/sbin/ethtool "$CACHE/ice/guest"
    guest_program /usr/bin/iperf3 "$CACHE/ice/guest"
    # glibc loads libgcc_s at run time (pthread_cancel, which iperf3 uses); ldd cannot see it.
    cp -L "$ROOT/usr/lib/x86_64-linux-gnu/libgcc_s.so.1" "$CACHE/ice/guest/lib/x86_64-linux-gnu/"
    touch "$ICE_STAMP"
    log "ice/ ready ($(du -sh "$CACHE/ice" | cut -f1)): modules $(tr '\n' ' ' <"$CACHE/ice/modules/load-order")"
fi
rm -rf "$ROOT/tmp/kernel"

in_root qemu-system-x86_64 --version >/dev/null \
    || die "QEMU in the root does not run"
touch "$STAMP"
log "ready in $(( $(date +%s) - T0 )) s: $(in_root qemu-system-x86_64 --version | head -n1), kernel $(cat "$CACHE/kernel-version")"
