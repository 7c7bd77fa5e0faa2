#!/usr/bin/env bash
# setup.sh - prepare (once) what the VM tests need, cached under $VDPDK_VM_CACHE
# (default /var/cache/vdpdk-vm):
#   root/      Debian trixie (debootstrap minbase) with QEMU >= 10.1 from trixie-backports and
#              busybox-static. QEMU runs from this root (tests/vm/qemu.sh) so the host keeps its
#              own libc and apt sources.
#   vmlinuz    the trixie kernel
#   modules/   the vfio modules a guest needs, decompressed, and load-order (dependencies first)
# A second run only checks the stamp (about a second).
#
# Usage: setup.sh [--check]     --check: exit 0 if the cache is complete, 1 if not
# Env:   VDPDK_VM_CACHE  cache directory
#        VDPDK_VM_MIRROR Debian mirror (default: the first .../debian URI of the host's apt sources)
# Needs: root, a Debian host with apt reaching a Debian mirror.
set -euo pipefail

CACHE=${VDPDK_VM_CACHE:-/var/cache/vdpdk-vm}
ROOT=$CACHE/root
STAMP=$CACHE/ready-v1
# Modules for vfio-pci behind the guest's (virtual) IOMMU; their dependencies are added too.
WANT_MODULES=(vfio vfio_iommu_type1 vfio_pci_core vfio_pci)

log() { printf '[vm-setup %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ "${1:-}" = --check ]; then
    [ -e "$STAMP" ] && exit 0 || exit 1
fi
[ -e "$STAMP" ] && { log "cache $CACHE is ready"; exit 0; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
T0=$(date +%s)
mkdir -p "$CACHE/logs"

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

if [ ! -s "$CACHE/vmlinuz" ] || [ ! -s "$CACHE/modules/load-order" ]; then
    kpkg=$(in_root apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
    [ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 in the root"
    log "downloading $kpkg"
    rm -rf "$ROOT/tmp/kernel" "$CACHE/modules" && mkdir -p "$ROOT/tmp/kernel" "$CACHE/modules"
    in_root sh -c "cd /tmp/kernel && apt-get download '$kpkg'" >"$CACHE/logs/kernel.log" 2>&1 \
        || die "downloading $kpkg failed, see $CACHE/logs/kernel.log"
    x="$ROOT/tmp/kernel/x" && mkdir -p "$x"
    dpkg-deb -x "$ROOT"/tmp/kernel/*.deb "$x"
    mods=$(ls -d "$x"/usr/lib/modules/* "$x"/lib/modules/* 2>/dev/null | head -n1 || true)
    [ -n "$mods" ] || die "no modules directory in $kpkg"
    kver=$(basename "$mods")
    for opt in CONFIG_INTEL_IOMMU=y CONFIG_VFIO_IOMMU_TYPE1=; do
        grep -q "^$opt" "$x/boot/config-$kver" || die "kernel $kver lacks $opt"
    done
    cp "$x/boot/vmlinuz-$kver" "$CACHE/vmlinuz"
    # The package has no modules.dep (depmod writes it at install): read each module's
    # .modinfo "depends=" and add dependencies first.
    declare -A path_of=() seen=()
    while read -r f; do
        n=$(basename "$f"); n=${n%%.ko*}; path_of[${n//-/_}]=$f
    done < <(find "$mods/kernel" -name '*.ko*')
    order=()
    add() {
        local m=${1//-/_} f deps d
        [ -n "${seen[$m]:-}" ] && return
        seen[$m]=1
        f=${path_of[$m]:-}
        if [ -z "$f" ]; then
            tr '-' '_' <"$mods/modules.builtin" | grep -q "/$m\.ko" && return # built in
            die "module $m not found in $kver"
        fi
        case $f in
            *.xz) xz -dc "$f" ;;
            *.zst) zstd -dcq "$f" ;;
            *.gz) gzip -dc "$f" ;;
            *) cat "$f" ;;
        esac >"$CACHE/modules/$m.ko"
        deps=$(tr '\0' '\n' <"$CACHE/modules/$m.ko" | grep -a '^depends=' | head -n1 | cut -d= -f2 | tr ',' ' ' || true)
        for d in $deps; do add "$d"; done
        order+=("$m")
    }
    for m in "${WANT_MODULES[@]}"; do add "$m"; done
    printf '%s\n' "${order[@]}" >"$CACHE/modules/load-order"
    echo "$kver" >"$CACHE/kernel-version"
    rm -rf "$ROOT/tmp/kernel"
    log "kernel $kver; modules: ${order[*]}"
fi

in_root qemu-system-x86_64 --version >/dev/null \
    || die "QEMU in the root does not run"
touch "$STAMP"
log "ready in $(( $(date +%s) - T0 )) s: $(in_root qemu-system-x86_64 --version | head -n1), kernel $(cat "$CACHE/kernel-version")"
