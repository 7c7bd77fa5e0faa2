#!/usr/bin/env bash
# linux-ice.sh SERVER [--ddp] [--out DIR] [--timeout S]
# Linux's own E810 driver (the trixie kernel's in-tree `ice`) as the judge of our E810 model:
# boots a VM whose only NIC is the model, served by SERVER (an ice-model-server binary) over
# vfio-user and cabled to a TAP in a fresh network namespace (10.77.0.1/24), and runs
# tests/vm/linux-ice-guest.sh in it: probe, carrier, ping, iperf3 both ways with offloads,
# MTU 9000, RSS over 4 queues, a Flow Director rule, rmmod and re-probe; then a second VM
# attaches to the same server once the first has gone and runs it all again.
#   --ddp       put Debian's DDP package (ice.pkg) in the guest; without it Linux runs the
#               card in Safe Mode
#   --out DIR   keep the console, the server's log and a summary there (default: a temp dir)
#   --timeout S give up on the VM after S seconds (default 600; TCG is slow)
# Prints every "CHECK name PASS|FAIL detail" line of the guests and a summary; exit 0 when
# both reached "CHECK done PASS", 1 otherwise, 2 on bad usage. Needs root, and
# tests/vm/setup.sh --ice (run here when its cache is missing).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${VDPDK_VM_CACHE:-/var/cache/vdpdk-vm}
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 1 ] || usage
server=$1; shift
[ -x "$server" ] || { echo "linux-ice.sh: $server is not an executable" >&2; exit 2; }
ddp=0 out="" timeout=600
while [ $# -gt 0 ]; do
    case $1 in
        --ddp) ddp=1 ;;
        --out) out=${2:?--out needs a directory}; shift ;;
        --timeout) timeout=${2:?--timeout needs seconds}; shift ;;
        *) usage ;;
    esac
    shift
done
bash "$HERE/setup.sh" --check --ice || bash "$HERE/setup.sh" --ice
[ -n "$out" ] || out=$(mktemp -d /tmp/linux-ice.XXXXXX)
mkdir -p "$out"
out=$(cd "$out" && pwd)
ns=vdpdk-ice-$$
tap=vdpdkice0
sock=$out/e810.sock
server_pid="" qemu_pid="" iperf_pid=""

cleanup() {
    [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null || true
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    # The loop that restarts the iperf3 server first, so it starts no new one.
    [ -n "$iperf_pid" ] && kill "$iperf_pid" 2>/dev/null || true
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
work=$(mktemp -d)
# Killed (a test harness giving up, Ctrl-C) cleans up as an ordinary exit does.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The initramfs: busybox, the ice modules, ethtool and iperf3 (with their libraries), the DDP
# package with --ddp, and an init that runs the guest script on the console.
mkdir -p "$work"/{bin,dev,proc,sys,tmp,lib/modules/ice}
cp "$CACHE/root/usr/bin/busybox" "$work/bin/busybox"
cp "$CACHE"/ice/modules/* "$work/lib/modules/ice/"
cp -a "$CACHE"/ice/guest/. "$work/"
[ $ddp = 1 ] && mkdir -p "$work/lib/firmware" && cp -a "$CACHE/ice/firmware/." "$work/lib/firmware/"
install -m 755 "$HERE/linux-ice-guest.sh" "$work/test.sh"
cat >"$work/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
echo "VM: up, kernel $(uname -r)"
# A heartbeat on the console: when the run stops, this says whether the guest still lives.
(while sleep 15; do echo "VM: alive at $(cut -d' ' -f1 /proc/uptime) s"; done) &
sh /test.sh
echo "VM-RESULT: rc=$?"
poweroff -f
INIT
chmod 755 "$work/init"
(cd "$work" && find . | "$CACHE/root/usr/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -1 >"$work/initramfs.gz"

# The model in its own network namespace, cabled to a TAP there: the host's side of the wire.
# The TAP exists before the model opens it (the model opens it when a client attaches).
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
# No tail-loss probes from the host's TCP (the sender of iperf3 -R): the emulated guest's
# delayed ACKs outlast the probe timer, and a probe is counted as a retransmit though nothing
# was lost (the guest then reports the copy as a duplicate, D-SACK).
ip netns exec "$ns" sysctl -qw net.ipv4.tcp_early_retrans=0
ip netns exec "$ns" ip tuntap add dev "$tap" mode tap
ip netns exec "$ns" ip addr add 10.77.0.1/24 dev "$tap"
ip netns exec "$ns" ip link set "$tap" up
rm -f "$sock"
RUST_LOG=${RUST_LOG:-info} ip netns exec "$ns" "$server" --socket "$sock" --wire-tap "$tap" \
    >"$out/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "linux-ice.sh: the server did not listen, see $out/server.log" >&2; exit 1; }
# Kept listening: an iperf3 server can exit after a test that ended badly (seen under load,
# as "connection refused" for the next test). The loop lives in the namespace, so cleanup's
# kill of its processes ends it too.
ip netns exec "$ns" sh -c 'while :; do iperf3 -s -p 5201 >/dev/null 2>&1; sleep 0.2; done' &
iperf_pid=$!

# host_do WHAT...: what the guest asks of the host's side; prints the HOST-DONE answer.
host_do() {
    case $1 in
        mtu) ip netns exec "$ns" ip link set "$tap" mtu "$2" && echo "HOST-DONE ok" ;;
        flows) ip netns exec "$ns" iperf3 -c 10.77.0.2 -p 5201 -P "$2" -t 2 >/dev/null 2>&1
               echo "HOST-DONE ok" ;;
        udp) ip netns exec "$ns" python3 - "$2" "$3" <<'PY'
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n):
    s.sendto(b"x" * 64, ("10.77.0.2", port))
    if i % 50 == 49:
        time.sleep(0.01)
print(f"HOST-DONE sent {n}")
PY
             ;;
        *) echo "HOST-DONE unknown" ;;
    esac
}

# The QEMU monitor listens on $out/monitor-N.sock, to look into a guest that stopped talking
# (socat - UNIX-CONNECT:$out/monitor-1.sock; "info registers", "nmi").
# With the package, 4 vCPUs: Linux gives a netdev at most one queue pair per CPU, and the RSS
# step asks for 4.
[ $ddp = 1 ] && export VDPDK_VM_SMP=4
# boot_guest N: one VM through the whole guest script; its console goes to console-N.log.
# Returns 0 when every step passed.
boot_guest() {
    local n=$1 log="$out/console-$1.log" ok=1 line
    coproc QEMU { exec timeout -k 5 "$timeout" bash "$HERE/boot.sh" "$work/initramfs.gz" \
        -monitor "unix:$out/monitor-$n.sock,server=on,wait=off" \
        -device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$sock\"}}" 2>&1; }
    qemu_pid=$QEMU_PID
    : >"$log"
    while IFS= read -r line <&"${QEMU[0]}"; do
        line=${line%$'\r'}
        printf '%s\n' "$line" >>"$log"
        case $line in
            CHECK*|KWARN*|KLOG*|DIAG*|VM:*) echo "$line" ;;
            HOST-DO\ *) host_do ${line#HOST-DO } >&"${QEMU[1]}" ;;
            VM-RESULT:*) echo "$line" ;;
        esac
        [ "$line" = "CHECK done PASS" ] && ok=0
    done
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=""
    return $ok
}

# The same card, twice: a second VM attaching after the first has gone must find it as a
# freshly booted host would (the server resets it between clients).
result=1
if boot_guest 1; then
    echo "linux-ice.sh: the first VM passed; a second one attaches to the same card"
    boot_guest 2 && result=0
fi
{
    echo "mode: $([ $ddp = 1 ] && echo 'DDP package' || echo 'Safe Mode')"
    for n in 1 2; do
        [ -f "$out/console-$n.log" ] || continue
        echo "VM $n:"
        grep -E '^CHECK' "$out/console-$n.log" || echo "no CHECK line: the guest did not get far (see console-$n.log)"
        echo "kernel warnings: $(grep -c '^KWARN' "$out/console-$n.log" || true)"
    done
} | tee "$out/summary.txt"
if [ $result != 0 ]; then
    echo "the host's side of the wire:"
    ip netns exec "$ns" ip -s link show "$tap"
    ip netns exec "$ns" grep -E '^(Tcp|Ip):' /proc/net/snmp
    # Retransmits from loss or from delay (tail-loss probes, spurious timeouts).
    ip netns exec "$ns" nstat -az 2>/dev/null | grep -E 'Tcp(RetransSegs|ExtTCPLossProbes|ExtTCPSpuriousRTOs|ExtTCPTimeouts|ExtTCPFastRetrans|ExtTCPLostRetransmit|ExtTCPSlowStartRetrans|ExtTCPDSACK)'
fi
echo "linux-ice.sh: logs in $out"
exit $result
