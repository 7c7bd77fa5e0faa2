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
fail() {
    echo "CHECK $1 FAIL ${2:-}"
    kernel_warnings
    exit 1
}
# Kernel messages of level 0-4 (emerg..warning) not yet shown.
KW_SEEN=0
kernel_warnings() {
    dmesg -r | grep -E '^<[0-4]>' | sed -n "$((KW_SEEN + 1)),\$p" | sed 's/^/KWARN /'
    KW_SEEN=$(dmesg -r | grep -cE '^<[0-4]>')
}
host_do() {
    echo "HOST-DO $*"
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

# Warnings from before the driver loads (boot noise of the virtual machine) are not the model's.
KW_SEEN=$(dmesg -r | grep -cE '^<[0-4]>')
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

ip link set lo up
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
    out=$(iperf3 -c $HOST -t 3 $r 2>&1)
    line=$(echo "$out" | grep -E ' sender$' | tail -1)
    retr=$(echo "$line" | awk '{print $(NF-1)}')
    rate=$(echo "$line" | grep -oE '[0-9.]+ [MG]bits/sec')
    if [ -n "$line" ] && [ "$retr" = 0 ]; then
        pass "iperf3-$dir" "$rate, 0 retransmits ($offloads)"
    else
        fail "iperf3-$dir" "retransmits ${retr:-?}, $(echo "$out" | tail -3 | tr '\n' ' ')"
    fi
done

ip link set "$DEV" mtu 9000 || fail mtu9000 "ip link set mtu 9000 refused"
host_do mtu 9000 >/dev/null
out=$(ping -c 5 -s 8972 -W 2 $HOST 2>&1)
loss=$(echo "$out" | sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p')
[ "$loss" = 0 ] && pass mtu9000 "9000-byte frames both ways" || fail mtu9000 "loss ${loss:-?}%"
ip link set "$DEV" mtu 1500
host_do mtu 1500 >/dev/null

ethtool -L "$DEV" combined 4 || fail rss "ethtool -L combined 4 refused"
wait_for 20 carrier || fail rss "no carrier after ethtool -L"
iperf3 -s -D -p 5201 >/dev/null 2>&1
before=$(rx_per_queue)
host_do flows 8 >/dev/null
after=$(rx_per_queue)
busy=0
i=1
for b in $before; do
    a=$(echo "$after" | cut -d' ' -f$i)
    [ $((a - b)) -gt 100 ] && busy=$((busy + 1))
    i=$((i + 1))
done
[ $busy -ge 2 ] && pass rss "flows spread over $busy of 4 RX queues: before [$before] after [$after]" \
    || fail rss "flows on $busy queue(s): before [$before] after [$after]"

ethtool -N "$DEV" flow-type udp4 dst-port 5301 action 1 >/dev/null || fail fdir "ethtool -N refused"
before=$(rx_per_queue)
sent=$(host_do udp 5301 1000 | sed -n 's/HOST-DONE sent \([0-9]*\)/\1/p')
after=$(rx_per_queue)
q1=$(($(echo "$after" | cut -d' ' -f2) - $(echo "$before" | cut -d' ' -f2)))
[ "$q1" -ge "${sent:-1}" ] && pass fdir "$q1 frames on queue 1 of ${sent:-?} sent to udp 5301" \
    || fail fdir "queue 1 got $q1 of ${sent:-?}: before [$before] after [$after]"

rmmod ice || fail reprobe "rmmod ice"
insmod /lib/modules/ice/ice.ko || fail reprobe "insmod ice again"
wait_for 60 ice_netdev && pass reprobe "$(ice_netdev) back" || fail reprobe "no ice interface after re-probe"
kernel_warnings
echo "CHECK done PASS"
