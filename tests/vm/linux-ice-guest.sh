#!/bin/sh
# linux-ice-guest.sh - runs inside the VM of tests/vm/linux-ice.sh: Linux's own ice driver
# against the E810 model, step by step. Each step prints one line
#     CHECK <name> PASS|FAIL <detail>
# and a step that fails ends the run (the later steps need it). When the host must act (send
# traffic from its side of the model's wire), the guest prints "HOST-DO <what>" and waits for
# "HOST-DONE <result>" on the console.
#
# The host's side of the wire is 10.77.0.1/24 (a TAP in a network namespace), the guest is
# 10.77.0.2. Kernel messages at warning level or above are echoed as "KWARN <line>".
export PATH=/bin:/usr/bin:/usr/sbin:/sbin
HOST=10.77.0.1
ME=10.77.0.2

pass() { echo "CHECK $1 PASS ${2:-}"; }
# fail STEP DETAIL: a step the later ones need failed; the run ends here.
fail() {
    soft_fail "$@"
    exit 1
}
# soft_fail STEP DETAIL: a step failed; the later ones do not need it, so the run goes on and
# ends with rc 1.
FAILED=0
soft_fail() {
    echo "CHECK $1 FAIL ${2:-}"
    FAILED=1
    kernel_warnings
    diagnostics
}
# What a failed step leaves to read: the interface's and the driver's non-zero counters, TCP's.
diagnostics() {
    dmesg | grep -E ' ice[ :]' | tail -15 | sed 's/^/DIAG /'
    [ -n "${DEV:-}" ] || return 0
    for c in rx_packets rx_dropped rx_errors tx_packets tx_dropped tx_errors; do
        echo "DIAG $DEV $c $(cat /sys/class/net/$DEV/statistics/$c)"
    done
    ethtool -S "$DEV" | grep -vE ': 0$' | sed 's/^/DIAG /'
    grep -E '^(Tcp|Ip):' /proc/net/snmp | sed 's/^/DIAG /'
    grep -E '^TcpExt:' /proc/net/netstat | sed 's/^/DIAG /'
}
# bounded SECONDS STEP COMMAND...: runs COMMAND; a COMMAND that fails fails STEP, and one
# still running after SECONDS (stuck in the driver, waiting on the card, where no signal
# reaches it) fails STEP with its kernel stack, so the run ends with the reason, not a timeout.
bounded() {
    local secs=$1 step=$2 pid tries
    shift 2
    "$@" &
    pid=$!
    tries=$((secs * 5))
    while [ -d /proc/$pid ] && [ "$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)" != Z ] \
        && [ $tries -gt 0 ]; do
        sleep 0.2
        tries=$((tries - 1))
    done
    if [ $tries = 0 ]; then
        sed 's/^/DIAG stack /' /proc/$pid/stack
        echo w >/proc/sysrq-trigger 2>/dev/null # every blocked task's stack, into dmesg
        dmesg | tail -60 | sed 's/^/DIAG blocked /'
        DEV="" fail "$step" "'$*' still running after $secs s (its kernel stack above)"
    fi
    wait $pid || fail "$step" "'$*' failed"
}
# Kernel messages of level 0-4 (emerg..warning) not yet shown.
KW_SEEN=0
kernel_warnings() {
    dmesg -r | grep -E '^<[0-4]>' | sed -n "$((KW_SEEN + 1)),\$p" | sed 's/^/KWARN /'
    KW_SEEN=$(dmesg -r | grep -cE '^<[0-4]>')
}
# The console, kept on fd 3: a caller may send host_do's answer elsewhere, never its request.
exec 3>&1
host_do() {
    echo "HOST-DO $*" >&3
    read -r reply
    echo "$reply"
}
# wait_for SECONDS COMMAND...: run COMMAND every 0.2 s until it succeeds.
wait_for() {
    local tries=$(($1 * 5))
    shift
    while [ $tries -gt 0 ]; do
        "$@" && return 0
        sleep 0.2
        tries=$((tries - 1))
    done
    return 1
}
ice_netdev() {
    local nd
    for nd in /sys/class/net/*; do
        [ "$(basename "$(readlink "$nd/device/driver" 2>/dev/null)")" = ice ] && { basename "$nd"; return 0; }
    done
    return 1
}
carrier() { [ "$(cat /sys/class/net/$DEV/carrier 2>/dev/null)" = 1 ]; }
# rx_per_queue: "q0 q1 ..." packet counts of the RX queues (ethtool -S rx_queue_N_packets).
rx_per_queue() {
    ethtool -S "$DEV" | sed -n 's/^ *rx_queue_\([0-9]*\)_packets: *\([0-9]*\)/\2/p' | tr '\n' ' '
}

# rss_and_fdir: 4 queues with flows spread by RSS, then a Flow Director rule to queue 1.
rss_and_fdir() {
    local before after busy i a b sent q1
    if ! ethtool -L "$DEV" combined 4 || ! wait_for 20 carrier; then
        soft_fail rss "ethtool -L combined 4 refused, or no carrier after it"
        return
    fi
    iperf3 -s -D -p 5201 >/dev/null 2>&1
    before=$(rx_per_queue)
    # 32 TCP flows, not 8: the Toeplitz hash is linear in the input bits, so flows that
    # differ only in a few source-port bits all land on one queue when those bits happen to
    # add nothing to the hash bits the LUT uses under the boot's random key (8 flows did so
    # about once in tens of runs; more flows vary more bits).
    host_do flows 32 >/dev/null
    after=$(rx_per_queue)
    busy=0
    i=1
    for b in $before; do
        a=$(echo "$after" | cut -d' ' -f$i)
        [ $((a - b)) -gt 100 ] && busy=$((busy + 1))
        i=$((i + 1))
    done
    [ $busy -ge 2 ] && pass rss "flows spread over $busy of 4 RX queues: before [$before] after [$after]" \
        || soft_fail rss "flows on $busy queue(s): before [$before] after [$after]"

    if ! ethtool -N "$DEV" flow-type udp4 dst-port 5301 action 1 >/dev/null; then
        soft_fail fdir "ethtool -N refused"
        return
    fi
    before=$(rx_per_queue)
    sent=$(host_do udp 5301 1000 | sed -n 's/HOST-DONE sent \([0-9]*\)/\1/p')
    after=$(rx_per_queue)
    q1=$(($(echo "$after" | cut -d' ' -f2) - $(echo "$before" | cut -d' ' -f2)))
    [ "$q1" -eq "${sent:-1}" ] && pass fdir "$q1 frames on queue 1 of ${sent:-?} sent to udp 5301" \
        || soft_fail fdir "queue 1 got $q1 of ${sent:-?}: before [$before] after [$after]"
}

# Warnings from before the driver loads (boot noise of the virtual machine) are not the model's.
KW_SEEN=$(dmesg -r | grep -cE '^<[0-4]>')
KW_BOOT=$KW_SEEN
probe_failed() { dmesg | grep -q 'probe with driver ice failed'; }
ice_netdev_or_failed() { ice_netdev >/dev/null || probe_failed; }

for m in $(cat /lib/modules/ice/load-order); do
    insmod /lib/modules/ice/$m.ko || fail modules "insmod $m"
done
if wait_for 60 ice_netdev_or_failed && ice_netdev >/dev/null; then
    DEV=$(ice_netdev)
    pass probe "$DEV $(dmesg | grep -m1 -oE 'ice [0-9a-f:.]+: (The DDP package was successfully loaded|Package format version|DDP package.*|.*Safe Mode.*)' )"
else
    dmesg | grep -E ' ice[ :]' | tail -20 | sed 's/^/KLOG /'
    fail probe "no network interface bound to ice"
fi
kernel_warnings
if [ -f /lib/firmware/intel/ice/ddp/ice.pkg ]; then
    loaded=$(dmesg | grep -m1 -o 'The DDP package was successfully loaded.*')
    [ -n "$loaded" ] && pass ddp "$loaded" \
        || soft_fail ddp "the package was not loaded: $(dmesg | grep -m1 -oE 'ice [0-9a-f:.]+: .*(DDP|package).*')"
fi

ip link set lo up
# No tail-loss probes from the guest's TCP either (see linux-ice.sh).
echo 0 >/proc/sys/net/ipv4/tcp_early_retrans
ip addr add $ME/24 dev "$DEV"
ip link set "$DEV" up
wait_for 20 carrier && pass carrier "$DEV up, $(ethtool "$DEV" | grep -E 'Speed' | tr -d '\t')" \
    || fail carrier "no carrier on $DEV after 20 s"

out=$(ping -c 20 -i 0.2 -W 2 $HOST 2>&1)
loss=$(echo "$out" | sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p')
[ "$loss" = 0 ] && pass ping "20 of 20" || fail ping "loss ${loss:-?}%: $(echo "$out" | tail -2 | tr '\n' ' ')"

ethtool -K "$DEV" tso on tx on rx on >/dev/null 2>&1
offloads=$(ethtool -k "$DEV" | grep -E '^(tcp-segmentation-offload|tx-checksumming|rx-checksumming):' | tr -d '\n')
for dir in tx rx; do
    r=""
    [ $dir = rx ] && r=-R
    # Paced at 50 Mbit/s: an emulated (TCG) guest beside other work can stall long enough for
    # an unpaced sender's timer to fire and resend what was not lost (the receiver then
    # reports it as a duplicate, DSACK). What is checked is that the model loses nothing.
    # The host's server takes one test at a time and may still be closing the previous one
    # (a slow emulated guest closes late), or be starting again after one that ended badly:
    # "busy" and "refused" are retried, anything else is the result.
    for _ in 1 2 3 4 5; do
        out=$(iperf3 -c $HOST -t 3 -b 50M $r 2>&1)
        echo "$out" | grep -qE 'server is busy|Connection refused' || break
        sleep 2
    done
    line=$(echo "$out" | grep -E ' sender$' | tail -1)
    retr=$(echo "$line" | awk '{print $(NF-1)}')
    rate=$(echo "$line" | grep -oE '[0-9.]+ [MG]bits/sec')
    if [ -n "$line" ] && [ "$retr" = 0 ]; then
        pass "iperf3-$dir" "$rate, 0 retransmits ($offloads)"
    else
        soft_fail "iperf3-$dir" "retransmits ${retr:-?}, $(echo "$out" | tail -3 | tr '\n' ' ')"
    fi
done

bounded 60 mtu9000 ip link set "$DEV" mtu 9000
host_do mtu 9000 >/dev/null
out=$(ping -c 5 -s 8972 -W 2 $HOST 2>&1)
loss=$(echo "$out" | sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p')
[ "$loss" = 0 ] && pass mtu9000 "9000-byte frames both ways" || soft_fail mtu9000 "loss ${loss:-?}%"
ip link set "$DEV" mtu 1500
host_do mtu 1500 >/dev/null

# Without a DDP package Linux runs Safe Mode: one queue pair, no RSS, no Flow Director.
if [ -f /lib/firmware/intel/ice/ddp/ice.pkg ]; then
    rss_and_fdir
else
    echo "CHECK rss SKIP Safe Mode: one queue pair"
    echo "CHECK fdir SKIP Safe Mode: no Flow Director"
fi

rmmod ice || fail reprobe "rmmod ice"
insmod /lib/modules/ice/ice.ko || fail reprobe "insmod ice again"
wait_for 60 ice_netdev && pass reprobe "$(ice_netdev) back" || fail reprobe "no ice interface after re-probe"
kernel_warnings
# With the package the driver has nothing to warn about; in Safe Mode it warns by design
# (no package, 2 MSI-X vectors). Only the driver's own messages count ("ice 0000:00:01.0:
# ..."): the emulated machine's (clocksource, hrtimer, a soft lockup of a vCPU that TCG on a
# busy host did not run) are not the driver's.
if [ -f /lib/firmware/intel/ice/ddp/ice.pkg ]; then
    n=$(dmesg -r | grep -E '^<[0-4]>' | sed -n "$((KW_BOOT + 1)),\$p" | grep -cE ' ice [0-9a-f]{4}:' || true)
    [ "$n" = 0 ] && pass ice-warnings "none from ice" || soft_fail ice-warnings "$n from ice (KWARN above)"
fi
[ $FAILED = 0 ] && echo "CHECK done PASS"
exit $FAILED
