#!/usr/bin/env bash
# prereqs.sh - checks what the workspace's checks and tests need, and on a Debian machine run as
# root installs what is missing (apt-get). Run by scripts/test.sh and .ci/run; running it again
# does nothing when everything is there.
#
# Needs: root (the TAP tests open /dev/net/tun and create network namespaces), cargo (a Rust
# toolchain from rustup), and the commands below (each with its Debian package).
# Exit status: 0 ready, 1 something is missing that this script could not provide (it says what
# and how to get it).
set -euo pipefail

say() { echo "prereqs: $*"; }
fail() { echo "prereqs: $*" >&2; exit 1; }

# command:Debian package(s) that provide it
need=(
    "cc:gcc libc6-dev"      # build scripts of some crates
    "ip:iproute2"           # network namespaces and TAP interfaces in the tests
    "ping:iputils-ping"     # tools tests: ping across host-mux
    "curl:curl"             # tools tests: HTTP from the smoltcp guest
    "iperf3:iperf3"         # tools tests: TCP through the TAP forwarder
    "python3:python3"       # tools tests: socket clients
    "xz:xz-utils"           # VM test: kernel modules for the test initramfs
)

missing_cmds=()
missing_pkgs=()
check() {
    missing_cmds=()
    missing_pkgs=()
    local n cmd
    for n in "${need[@]}"; do
        cmd=${n%%:*}
        if ! command -v "$cmd" >/dev/null 2>&1; then
            missing_cmds+=("$cmd")
            # shellcheck disable=SC2206 # one word per package
            missing_pkgs+=(${n#*:})
        fi
    done
}

is_root=false
[ "$(id -u)" = 0 ] && is_root=true

check
if [ ${#missing_cmds[@]} -gt 0 ]; then
    if ! $is_root; then
        fail "missing ${missing_cmds[*]}, and not running as root, so not installing them." \
            "As root: apt-get install ${missing_pkgs[*]} (Debian), then run this again as root."
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        fail "missing ${missing_cmds[*]}, and there is no apt-get to install them with." \
            "Install the equivalents of the Debian packages ${missing_pkgs[*]}, then run this again."
    fi
    say "missing ${missing_cmds[*]}: installing ${missing_pkgs[*]}"
    apt-get update -qq || fail "apt-get update failed (network? apt sources?); missing: ${missing_cmds[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_pkgs[@]}" >/dev/null \
        || fail "apt-get install ${missing_pkgs[*]} failed"
    check
    [ ${#missing_cmds[@]} -eq 0 ] || fail "still missing after installing: ${missing_cmds[*]}"
fi

# Python modules the tests import, module:Debian package. Debian's package serves Debian's
# python3; a python3 of its own (pyenv, a venv) gets the module from pip instead.
py_need=(
    "prometheus_client:python3-prometheus-client"  # host-mux metrics test: the reference parser
)
for n in "${py_need[@]}"; do
    mod=${n%%:*}
    pkg=${n#*:}
    python3 -c "import $mod" 2>/dev/null && continue
    if $is_root && command -v apt-get >/dev/null 2>&1; then
        say "python3 lacks $mod: installing $pkg"
        { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg"; }; } \
            >/dev/null 2>&1 || true
        python3 -c "import $mod" 2>/dev/null && continue
    fi
    say "python3 ($(command -v python3)) lacks $mod: python3 -m pip install $mod"
    python3 -m pip install -q "$mod" >/dev/null 2>&1 || true
    python3 -c "import $mod" 2>/dev/null \
        || fail "python3 cannot import $mod: as root apt-get install $pkg (Debian's python3)," \
            "or python3 -m pip install $mod (another python3), then run this again."
done

if ! $is_root; then
    fail "not running as root: the tests open /dev/net/tun and create network namespaces." \
        "Run it as root, e.g. sudo bash scripts/test.sh."
fi

if [ ! -e /dev/net/tun ]; then
    say "creating /dev/net/tun"
    mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 666 /dev/net/tun \
        || fail "/dev/net/tun is missing and could not be created (a container without it?)"
fi

command -v cargo >/dev/null 2>&1 \
    || fail "no cargo on PATH: install a Rust toolchain from https://rustup.rs (and open a new shell or source ~/.cargo/env)"
