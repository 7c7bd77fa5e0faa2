#!/usr/bin/env bash
# Compares vdpdk-rs against C DPDK's memif on this machine (docs/BENCH.md explains the numbers).
#
#   scripts/bench-vs-memif.sh [--pairs N] [--sizes 64,1500] [--secs S] [--samples N]
#                             [--no-latency] [--no-build] [--hugepages N] [--log-dir DIR]
#
# Throughput: for each pair and frame size, first C DPDK (two dpdk-testpmd processes joined by
# net_memif, one forwarding core each: "guest TX" = the memif client in txonly to the server in
# rxonly, "guest RX" = the server in txonly to the client in rxonly), then ours (vdpdk-bench:
# guests on guest-pmd, host-mux's poller, TX, RX, G2G) twice: on the null wire (a NIC that
# costs no CPU, consuming and producing on the poller's CPU: two actors on two CPUs, as memif
# has) and on the pair wire (its far end driven on the guest's CPU: a third actor there); and
# TX and RX once more on the null wire with zero-copy (--zero-copy: TX frames of 1024 B and
# more lent from guest memory, RX written straight into guest buffers).
# A B A B ..., N pairs (default 5), S seconds of steady state per run (default 5). Prints every
# run, the medians and the ratio ours/memif for TX, for RX and for guest -> guest (G2G:
# vdpdk-bench's second guest, switched inside host-mux, against the same pair's memif TX, and
# against "memif switched": memif in the same three-actor topology, both endpoints in one
# dpdk-testpmd on CPU 0 and another as an io-forwarding switch between them on CPU 1; "G2G
# forwarding" puts ours under that workload too, vdpdk-bench's g2g-fwd, each guest forwarding
# what it receives out of the other, against memif switched).
# Latency: one frame in flight, round trip p50/p99/p99.9, memif then ours, A B A B (--pairs
# runs each, --samples split over them), both from scripts/latency-probe: memif =
# vdpdk-memif-probe (a pure-Rust memif client, CPU 0) through a dpdk-testpmd memif server in
# macswap (forwarding core on CPU 1); ours = vdpdk-latency-probe (guest-pmd on CPU 0 ->
# host-mux's poller on CPU 1 -> host-mux's reflector backend -> back: two cross-CPU hops, as
# memif's), and again through the pair wire reflected on the guest's CPU (four hops). Prints
# the medians and ours/memif for p50 and p99.
#
# Needs root (installs Debian's dpdk-dev and librte-net-memif23 if dpdk-testpmd or the memif
# driver is missing, reserves 2 MiB hugepages, mounts a private hugetlbfs) and 2+ CPUs. The
# previous hugepage reservation is restored, the mount removed and every process it started is
# stopped when it ends, however it ends. Builds into $CARGO_TARGET_DIR if set (else target/).
# C DPDK is only used here, as the peer process for comparison: nothing in the product or its
# tests needs it, and the memif probe does not link it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

pairs=5
sizes=64,1500
secs=5
samples=200000
latency=1
build=1
hugepages=1024
log_dir=""
result=""

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        --pairs) pairs=${2:?}; shift 2 ;;
        --sizes) sizes=${2:?}; shift 2 ;;
        --secs) secs=${2:?}; shift 2 ;;
        --samples) samples=${2:?}; shift 2 ;;
        --no-latency) latency=0; shift ;;
        --no-build) build=0; shift ;;
        --hugepages) hugepages=${2:?}; shift 2 ;;
        --log-dir) log_dir=${2:?}; shift 2 ;;
        -h|--help) usage ;;
        *) echo "bench-vs-memif: unknown argument $1" >&2; usage ;;
    esac
done
isnum() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }
isnum "$pairs" && isnum "$secs" && isnum "$samples" && isnum "$hugepages" \
    || { echo "bench-vs-memif: --pairs, --secs, --samples and --hugepages take a positive integer" >&2; exit 2; }
IFS=, read -r -a size_list <<<"$sizes"
for s in "${size_list[@]}"; do
    if ! [[ "$s" =~ ^[0-9]+$ ]] || [ "$s" -lt 64 ] || [ "$s" -gt 1514 ]; then
        echo "bench-vs-memif: frame size $s outside 64..1514" >&2
        exit 2
    fi
done

die() {
    echo "bench-vs-memif: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "needs root: it installs packages, reserves hugepages and mounts hugetlbfs (run it with sudo)"
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (one forwarding core per side); this machine has $(nproc)"

# --- cleanup: every process we start is in $pids; the trap stops them, unmounts, restores ---
pids=()
hp=/proc/sys/vm/nr_hugepages
hp_before=""
hp_set=""
work=$(mktemp -d /tmp/bench-vs-memif.XXXXXX)
huge="$work/huge"
[ -n "$log_dir" ] || log_dir="$work/logs"
mkdir -p "$log_dir"
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -INT "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.3
        done
        kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    pids=()
    if mountpoint -q "$huge" 2>/dev/null; then
        umount "$huge" || echo "bench-vs-memif: could not unmount $huge" >&2
    fi
    rm -rf /var/run/dpdk/bvm-"$$"-* 2>/dev/null || true
    if [ -n "$hp_before" ] && [ "$(cat "$hp")" = "$hp_set" ]; then
        echo "$hp_before" >"$hp" 2>/dev/null || true
        echo "hugepages: back to $hp_before reserved"
    fi
    # Keep only the logs (when they are under $work).
    rm -rf "$huge" "$work"/*.sock "$work"/ours-* "$work"/probe-* 2>/dev/null || true
    case "$log_dir" in "$work"/*) ;; *) rm -rf "$work" ;; esac
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Removes a finished (or stopped) process from $pids.
forget() {
    local keep=() p
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]+"${keep[@]}"}")
}
# Every process is started under timeout(1), which runs it in a process group of its own whose
# id is timeout's pid: SIGINT to timeout is passed on (testpmd prints its totals and closes the
# port), SIGKILL goes to that whole group.
# stop_testpmd PID LOG WHAT: SIGINT, then SIGKILL after 5 s, for a testpmd started and disowned (so that bash does not
# print its own job report when it dies of a signal). testpmd 22.11 with net_memif sometimes
# crashes (SIGSEGV) while closing the port; the measurement is over by then (its per-second
# stats were read), so a missing "Bye..." is only noted.
stop_testpmd() {
    local p=$1 log=$2 what=$3
    kill -INT "$p" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
    forget "$p"
    grep -aq '^Bye' "$log" 2>/dev/null \
        || echo "  (note: $what did not shut down cleanly, after the measurement; see $log)" >&2
}

# --- C DPDK, for comparison only ---
memif_pmd() { ls /usr/lib/*/dpdk/pmds-*/librte_net_memif.so* 2>/dev/null | head -n1; }
if ! command -v dpdk-testpmd >/dev/null || [ -z "$(memif_pmd)" ]; then
    command -v apt-get >/dev/null || die "dpdk-testpmd or the memif driver is missing and there is no apt-get: install DPDK (testpmd and net_memif) yourself"
    echo "installing Debian's DPDK (dpdk-dev has dpdk-testpmd, librte-net-memif23 the memif driver)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q dpdk-dev librte-net-memif23 >"$log_dir/apt.log" 2>&1 \
        || { tail -n 20 "$log_dir/apt.log" >&2; die "apt-get install dpdk-dev librte-net-memif23 failed (log above)"; }
fi
command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd not found after installing dpdk-dev"
[ -n "$(memif_pmd)" ] || die "the memif driver (librte_net_memif.so) not found after installing librte-net-memif23"
dpdk_version=$(dpkg-query -W -f='${Version}' dpdk-dev 2>/dev/null || echo unknown)

# --- hugepages: DPDK's memory, and a private hugetlbfs mount for testpmd's files ---
[ -w "$hp" ] || die "cannot write $hp (not root, or a container without it): reserve $hugepages 2 MiB hugepages yourself"
hp_before=$(cat "$hp")
if [ "$hp_before" -lt "$hugepages" ]; then
    echo "$hugepages" >"$hp" 2>/dev/null || true
    hp_set=$(cat "$hp")
    [ "$hp_set" = "$hp_before" ] && hp_set=""
fi
have=$(cat "$hp")
free_pages=$(awk '/^HugePages_Free/ {print $2}' /proc/meminfo)
need=320   # two testpmd processes with --socket-mem 256 each, some slack for other users
if [ "$free_pages" -lt "$need" ]; then
    die "only $free_pages free 2 MiB hugepages ($have reserved, asked $hugepages); testpmd needs about $need. Memory may be fragmented: try 'echo 1 > /proc/sys/vm/compact_memory' and run again, or --hugepages with a larger value"
fi
echo "hugepages: $have reserved, $free_pages free (was $hp_before)"
mkdir -p "$huge"
mount -t hugetlbfs -o pagesize=2M nodev "$huge" \
    || die "could not mount hugetlbfs on $huge (a container without CAP_SYS_ADMIN?)"

# --- our binaries ---
target=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$build" = 1 ]; then
    echo "building vdpdk-tools (release)"
    CARGO_TARGET_DIR="$target" cargo build --release -q -p vdpdk-tools \
        || die "cargo build --release -p vdpdk-tools failed"
    if [ "$latency" = 1 ]; then
        echo "building scripts/latency-probe (release)"
        cp Cargo.lock scripts/latency-probe/Cargo.lock
        CARGO_TARGET_DIR="$target/latency-probe" \
            cargo build --release -q --manifest-path scripts/latency-probe/Cargo.toml \
            || die "building scripts/latency-probe failed"
    fi
fi
BENCH="$target/release/vdpdk-bench"
PROBE="$target/latency-probe/release/vdpdk-latency-probe"
MEMIF_PROBE="$target/latency-probe/release/vdpdk-memif-probe"
[ -x "$BENCH" ] || die "$BENCH missing (run without --no-build)"
if [ "$latency" = 1 ]; then
    for b in "$PROBE" "$MEMIF_PROBE"; do
        [ -x "$b" ] || die "$b missing (run without --no-build)"
    done
fi

# testpmd's EAL options, the same for every run: no PCI, memory from our hugetlbfs mount.
memif_eal=(--no-pci --huge-dir "$huge" --socket-mem 256 --log-level=pmd.net.memif:info)

# wait_socket SOCK PID LOG: waits (up to 20 s) for a memif server's socket file; dies with
# the tail of its log if the server exits or does not create it.
wait_socket() {
    local sock=$1 srv=$2 log=$3 t=0
    until [ -S "$sock" ]; do
        sleep 0.2
        t=$((t + 1))
        if ! kill -0 "$srv" 2>/dev/null || [ "$t" -gt 100 ]; then
            tail -n 15 "$log" >&2
            stop_testpmd "$srv" "$log" "the memif server"
            die "memif server testpmd did not start (log above, $log)"
        fi
    done
}

# --- one memif run ---
# memif_run DIR SIZE RUN -> $result: the receiver's mean Rx-pps (Mpps) over $secs steady
# seconds. (Results go through a variable, not $(...), so every process stays in $pids of this
# shell and the EXIT trap can stop it.)
# DIR tx: the client (the "guest") in txonly, the server in rxonly; rx: the other way round.
# Forwarding lcores: the client on CPU 0, the server on CPU 1 (like vdpdk-bench's guest on 0,
# poller on 1); each process's main lcore (it only sleeps and prints stats) on the other CPU.
memif_run() {
    local dir=$1 size=$2 run=$3
    local tag="bvm-$$-$dir-$size-$run"
    local sock="$work/$tag.sock"
    local srv_mode cli_mode srv_log="$log_dir/$tag-server.log" cli_log="$log_dir/$tag-client.log"
    if [ "$dir" = tx ]; then srv_mode=rxonly cli_mode=txonly; else srv_mode=txonly cli_mode=rxonly; fi
    local app=(--auto-start --stats-period 1 --nb-cores=1 --rxq=1 --txq=1 --burst=32
               --total-num-mbufs=16384 --txpkts="$size")
    local limit=$((secs + 30))
    timeout -s INT -k 5 "$limit" dpdk-testpmd --lcores 0@0,1@1 "${memif_eal[@]}" --file-prefix "$tag-s" \
        --vdev "net_memif0,role=server,id=0,socket=$sock,socket-abstract=no" \
        -- "${app[@]}" --forward-mode="$srv_mode" </dev/null >"$srv_log" 2>&1 &
    local srv=$!
    disown "$srv"
    pids+=("$srv")
    wait_socket "$sock" "$srv" "$srv_log"
    timeout -s INT -k 5 "$limit" dpdk-testpmd --lcores 0@1,1@0 "${memif_eal[@]}" --file-prefix "$tag-c" \
        --vdev "net_memif0,role=client,id=0,socket=$sock,socket-abstract=no" \
        -- "${app[@]}" --forward-mode="$cli_mode" </dev/null >"$cli_log" 2>&1 &
    local cli=$!
    disown "$cli"
    pids+=("$cli")
    local rx_log
    if [ "$dir" = tx ]; then rx_log=$srv_log; else rx_log=$cli_log; fi
    # Per-second Rx-pps of the receiving side (zeros before the link came up left out).
    receiver_rates() { grep -a 'Rx-pps:' "$rx_log" 2>/dev/null | awk '$2 > 0 {print $2}' || true; }
    collect_rates receiver_rates "memif $dir"
    stop_testpmd "$cli" "$cli_log" "dpdk-testpmd (memif client, $dir $size B run $run)"
    stop_testpmd "$srv" "$srv_log" "dpdk-testpmd (memif server, $dir $size B run $run)"
    rm -f "$sock"
}

# --- collect_rates RATES WHAT: waits until the function RATES prints $secs + 2 per-second rates
# (pps, one a line) and sets $result to the mean Mpps of them, skipping the first (a partial
# second) and one warm-up second. Uses the caller's $srv, $cli, $srv_log and $cli_log: if
# either testpmd ends, or the rates do not come in time, it shows both logs, stops both and
# dies naming WHAT. ---
collect_rates() {
    local rates=$1 what=$2
    local want=$((secs + 2)) vals="" t=0
    while :; do
        vals=$("$rates")
        [ "$(printf '%s\n' "$vals" | grep -c .)" -ge "$want" ] && break
        sleep 0.5
        t=$((t + 1))
        if ! kill -0 "$srv" 2>/dev/null || ! kill -0 "$cli" 2>/dev/null || [ "$t" -gt $((2 * secs + 40)) ]; then
            tail -n 15 "$srv_log" "$cli_log" >&2
            exec 7>&-
            stop_testpmd "$cli" "$cli_log" "the $what client"
            stop_testpmd "$srv" "$srv_log" "the $what server"
            die "$what run did not produce $want seconds of traffic (logs above)"
        fi
    done
    result=$(printf '%s\n' "$vals" | sed -n "3,${want}p" | awk '{s += $1; n++} END {printf "%.3f", s / n / 1e6}')
}

# --- one switched memif run: guest -> switch -> guest with C DPDK only ---
# memif_switch_run SIZE RUN -> $result: frames switched per second (Mpps), the mean over $secs
# steady seconds. The topology of ours G2G, three actors on two CPUs: one dpdk-testpmd (the
# switch, forwarding lcore on CPU 1, where ours has host-mux's poller) with two memif server
# ports in io forwarding (port 0 <-> port 1); another (both endpoints, forwarding lcore on CPU
# 0, where ours has both guests) with the two matching client ports, also in io forwarding,
# primed with `start tx_first 16`: 16 bursts of SIZE-byte frames on each port, half of a
# 1024-slot ring, so frames circle client -> switch -> client both ways without overflowing a
# ring (one burst in flight is latency-bound, 10.6 Mpps; 32 bursts overflow and drop, 12.5; 16
# and 24 ran 15.4-16.3). Per frame each CPU then does one memif receive and one memif send, as
# ours does a guest send and a guest receive on CPU 0 and a switching copy on CPU 1. The
# number is the switch's Rx-pps of both ports summed.
memif_switch_run() {
    local size=$1 run=$2
    local tag="bvm-$$-sw-$size-$run"
    local sa="$work/$tag-a.sock" sb="$work/$tag-b.sock"
    local srv_log="$log_dir/$tag-switch.log" cli_log="$log_dir/$tag-endpoints.log"
    local cmds="$work/$tag.cmds" fifo="$work/$tag.fifo"
    local app=(--nb-cores=1 --rxq=1 --txq=1 --burst=32 --total-num-mbufs=16384
               --txpkts="$size" --forward-mode=io)
    local limit=$((secs + 30))
    timeout -s INT -k 5 "$limit" dpdk-testpmd --lcores 0@0,1@1 "${memif_eal[@]}" --file-prefix "$tag-s" \
        --vdev "net_memif0,role=server,id=0,socket=$sa,socket-abstract=no" \
        --vdev "net_memif1,role=server,id=1,socket=$sb,socket-abstract=no" \
        -- "${app[@]}" --auto-start --stats-period 1 </dev/null >"$srv_log" 2>&1 &
    local srv=$!
    disown "$srv"
    pids+=("$srv")
    wait_socket "$sa" "$srv" "$srv_log"
    wait_socket "$sb" "$srv" "$srv_log"
    # Interactive, to prime with more than one burst (--tx-first sends one); its stdin is a
    # FIFO this shell holds open (fd 7), so it never reads an end of file and quits early.
    echo "start tx_first 16" >"$cmds"
    rm -f "$fifo"
    mkfifo "$fifo"
    exec 7<>"$fifo"
    timeout -s INT -k 5 "$limit" dpdk-testpmd --lcores 0@1,1@0 "${memif_eal[@]}" --file-prefix "$tag-c" \
        --vdev "net_memif0,role=client,id=0,socket=$sa,socket-abstract=no" \
        --vdev "net_memif1,role=client,id=1,socket=$sb,socket-abstract=no" \
        -- "${app[@]}" -i --cmdline-file="$cmds" <&7 >"$cli_log" 2>&1 &
    local cli=$!
    disown "$cli"
    pids+=("$cli")
    # The switch prints Rx-pps for port 0 then port 1 every second: each pair summed (zeros
    # before the links came up left out).
    switch_rates() {
        grep -a 'Rx-pps:' "$srv_log" 2>/dev/null | awk '{print $2}' | paste - - \
            | awk 'NF == 2 && $1 + $2 > 0 {print $1 + $2}' || true
    }
    collect_rates switch_rates "switched memif"
    exec 7>&-
    stop_testpmd "$cli" "$cli_log" "dpdk-testpmd (memif endpoints, switched $size B run $run)"
    stop_testpmd "$srv" "$srv_log" "dpdk-testpmd (memif switch, switched $size B run $run)"
    rm -f "$sa" "$sb" "$cmds" "$fifo"
}

# run_to_end LIMIT LOG CMD...: one of our programs, bounded by LIMIT seconds, output to LOG;
# its pid stays in $pids while it runs (the EXIT trap stops it), and a failure ends the script
# with the tail of LOG.
run_to_end() {
    local limit=$1 log=$2
    shift 2
    timeout -s INT -k 5 "$limit" "$@" >"$log" 2>&1 &
    local p=$!
    pids+=("$p")
    local rc=0
    wait "$p" || rc=$?
    forget "$p"
    [ "$rc" = 0 ] || { tail -n 15 "$log" >&2; die "$(basename "$1") failed (exit $rc, log above)"; }
}

# --- one vdpdk-bench run: $result = "TX RX G2G G2G-forwarding" Mpps at SIZE on WIRE (null or
# pair) ---
ours_run() {
    local size=$1 run=$2 wire=$3
    local out="$log_dir/ours-$wire-$size-$run.log"
    run_to_end $((6 * secs + 30)) "$out" "$BENCH" --repeats 1 --secs "$secs" --sizes "$size" \
        --guest-cpu 0 --mux-cpu 1 --dir "$work/ours-$run" --json --wire "$wire" \
        --directions tx,rx,g2g,g2g-fwd
    local tx rx g2g fwd
    tx=$(sed -n 's/.*"direction":"tx".*"median_mpps":\([0-9.]*\).*/\1/p' "$out")
    rx=$(sed -n 's/.*"direction":"rx".*"median_mpps":\([0-9.]*\).*/\1/p' "$out")
    g2g=$(sed -n 's/.*"direction":"g2g".*"median_mpps":\([0-9.]*\).*/\1/p' "$out")
    fwd=$(sed -n 's/.*"direction":"g2g-fwd".*"median_mpps":\([0-9.]*\).*/\1/p' "$out")
    if [ -z "$tx" ] || [ -z "$rx" ] || [ -z "$g2g" ] || [ -z "$fwd" ]; then
        cat "$out" >&2
        die "could not read vdpdk-bench's result"
    fi
    result="$tx $rx $g2g $fwd"
}

# --- one zero-copy run (host-mux's zero_copy_tx and zero_copy_rx, null wire): $result = "TX RX"
# Mpps at SIZE ---
ours_zc_run() {
    local size=$1 run=$2
    local out="$log_dir/ours-zc-$size-$run.log"
    run_to_end $((2 * secs + 30)) "$out" "$BENCH" --repeats 1 --secs "$secs" --sizes "$size" \
        --guest-cpu 0 --mux-cpu 1 --dir "$work/ours-$run" --json --wire null --zero-copy \
        --directions tx,rx
    local tx rx
    tx=$(sed -n 's/.*"direction":"tx".*"median_mpps":\([0-9.]*\).*/\1/p' "$out")
    rx=$(sed -n 's/.*"direction":"rx".*"median_mpps":\([0-9.]*\).*/\1/p' "$out")
    if [ -z "$tx" ] || [ -z "$rx" ]; then
        cat "$out" >&2
        die "could not read vdpdk-bench's zero-copy result"
    fi
    result="$tx $rx"
}

# --- latency: one frame in flight, round trip ---
lat_size=${size_list[0]}
lat_samples=$((samples / pairs))
[ "$lat_samples" -ge 1000 ] || lat_samples=1000
lat_limit=$((60 + lat_samples / 1000))

# lat_result LOG -> $result: "p50 p99 p99.9 max" (us) of the probe's "round trip" line, the
# same in both probes' output.
lat_result() {
    result=$(awk '/^round trip/ {r = $(NF - 3) " " $(NF - 2) " " $(NF - 1) " " $NF} END {print r}' "$1")
    [ -n "$result" ] || { cat "$1" >&2; die "no round trip line in $1"; }
}

# memif_lat_run RUN: dpdk-testpmd as the memif server in macswap, its forwarding lcore on CPU 1
# (where ours has host-mux's poller), vdpdk-memif-probe as the client on CPU 0 (where ours has
# the guest).
memif_lat_run() {
    local run=$1
    local tag="bvm-$$-lat-$run"
    local sock="$work/$tag.sock" srv_log="$log_dir/$tag-server.log" out="$log_dir/latency-memif-$run.log"
    # testpmd needs a stats period to keep running with stdin at /dev/null (without one it
    # waits for Enter and reads EOF at once); a long one keeps its main lcore, on the probe's
    # CPU, asleep but for one wake-up a second.
    timeout -s INT -k 5 $((lat_limit + 30)) dpdk-testpmd --lcores 0@0,1@1 "${memif_eal[@]}" \
        --file-prefix "$tag" --vdev "net_memif0,role=server,id=0,socket=$sock,socket-abstract=no" \
        -- --auto-start --stats-period 3600 --nb-cores=1 --rxq=1 --txq=1 --burst=32 \
        --total-num-mbufs=16384 --forward-mode=macswap </dev/null >"$srv_log" 2>&1 &
    local srv=$!
    disown "$srv"
    pids+=("$srv")
    wait_socket "$sock" "$srv" "$srv_log"
    timeout -s INT -k 5 "$lat_limit" "$MEMIF_PROBE" "$sock" "$lat_samples" "$lat_size" 0 0 >"$out" 2>&1 &
    local p=$!
    pids+=("$p")
    local rc=0
    wait "$p" || rc=$?
    forget "$p"
    stop_testpmd "$srv" "$srv_log" "dpdk-testpmd (memif server, latency run $run)"
    rm -f "$sock"
    [ "$rc" = 0 ] || { tail -n 15 "$out" "$srv_log" >&2; die "vdpdk-memif-probe failed (exit $rc, logs above)"; }
    lat_result "$out"
}

# ours_lat_run RUN WIRE: vdpdk-latency-probe, guest on CPU 0, host-mux's poller on CPU 1,
# WIRE reflector (host-mux's backend reflects) or pair (reflected on the guest's CPU).
ours_lat_run() {
    local run=$1 wire=$2
    local out="$log_dir/latency-ours-$wire-$run.log"
    run_to_end "$lat_limit" "$out" "$PROBE" "$lat_samples" "$lat_size" 0 1 "$work/probe-$run" "$wire"
    lat_result "$out"
}

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# med "v1 v2 ...": the median of a space-separated list.
med() { tr ' ' '\n' <<<"$1" | grep . | median; }
# ratio A B: A/B with 2 decimals, n/a if B is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }

echo
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "C DPDK: Debian dpdk-dev $dpdk_version, dpdk-testpmd + net_memif (copy mode), burst 32, 1 forwarding core per side"
echo "ours:   vdpdk-bench ($(git rev-parse --short HEAD 2>/dev/null || echo '?')), 2 guests, host-mux on the null wire, then on the pair wire, batch 32, guests' thread CPU 0, poller CPU 1"
echo "$pairs pairs per size, memif then ours, $secs s of steady state per run; logs in $log_dir"
echo
declare -A m_tx m_rx m_sw o_tx o_rx o_g2g o_fwd p_tx p_rx p_g2g p_fwd z_tx z_rx
for size in "${size_list[@]}"; do
    for run in $(seq "$pairs"); do
        memif_run tx "$size" "$run"; a=$result
        memif_run rx "$size" "$run"; b=$result
        memif_switch_run "$size" "$run"; sw=$result
        ours_run "$size" "$run" null; read -r c d e fw <<<"$result"
        ours_run "$size" "$run" pair; read -r f g h pfw <<<"$result"
        ours_zc_run "$size" "$run"; read -r z zr <<<"$result"
        m_tx[$size]+="$a "; m_rx[$size]+="$b "; m_sw[$size]+="$sw "
        o_tx[$size]+="$c "; o_rx[$size]+="$d "; o_g2g[$size]+="$e "; o_fwd[$size]+="$fw "
        p_tx[$size]+="$f "; p_rx[$size]+="$g "; p_g2g[$size]+="$h "; p_fwd[$size]+="$pfw "
        z_tx[$size]+="$z "; z_rx[$size]+="$zr "
        printf 'pair %d, %4d B:  memif TX %7.3f  RX %7.3f  switched %7.3f  |  ours null wire TX %7.3f  RX %7.3f  G2G %7.3f  fwd %7.3f  zero-copy TX %7.3f  RX %7.3f  |  pair wire TX %7.3f  RX %7.3f  G2G %7.3f  fwd %7.3f Mpps\n' \
            "$run" "$size" "$a" "$b" "$sw" "$c" "$d" "$e" "$fw" "$z" "$zr" "$f" "$g" "$h" "$pfw"
    done
done

echo
printf '%-6s %-14s %14s %14s %12s\n' bytes dir "memif Mpps" "ours Mpps" "ours/memif"
for size in "${size_list[@]}"; do
    for dir in TX RX G2G "G2G switched" "G2G forwarding" "TX zero-copy" "RX zero-copy" "TX pair wire" "RX pair wire"; do
        case $dir in
            TX) m=${m_tx[$size]} o=${o_tx[$size]} ;;
            "TX zero-copy") m=${m_tx[$size]} o=${z_tx[$size]} ;;
            "RX zero-copy") m=${m_rx[$size]} o=${z_rx[$size]} ;;
            RX) m=${m_rx[$size]} o=${o_rx[$size]} ;;
            G2G) m=${m_tx[$size]} o="${o_g2g[$size]}${p_g2g[$size]}" ;;
            "G2G switched") m=${m_sw[$size]} o="${o_g2g[$size]}${p_g2g[$size]}" ;;
            "G2G forwarding") m=${m_sw[$size]} o="${o_fwd[$size]}${p_fwd[$size]}" ;;
            "TX pair wire") m=${m_tx[$size]} o=${p_tx[$size]} ;;
            "RX pair wire") m=${m_rx[$size]} o=${p_rx[$size]} ;;
        esac
        mm=$(med "$m")
        om=$(med "$o")
        printf '%-6s %-14s %14.3f %14.3f %12s\n' "$size" "$dir" "$mm" "$om" "$(ratio "$om" "$mm")"
    done
done
echo "(medians of $pairs interleaved runs each; TX = guest/client transmits, RX = guest/client receives;"
echo " TX/RX: host-mux on the null wire, two actors on two CPUs as memif's; pair wire: its far end"
echo " runs on the guest's CPU too; G2G = ours guest -> guest, switched inside host-mux, from both"
echo " runs, against memif TX (one process sends, the other receives); G2G switched: the same ours"
echo " G2G against memif in its topology (both endpoints in one testpmd on CPU 0, a testpmd io"
echo " switch on CPU 1 between them, frames circling both ways); G2G forwarding: ours with that"
echo " workload too (vdpdk-bench g2g-fwd: each guest forwards what it receives out of the other,"
echo " both ways, as testpmd io does) against memif switched; TX/RX zero-copy: host-mux's"
echo " zero_copy_tx and zero_copy_rx on the null wire: TX frames of 1024 B and more lent from guest"
echo " memory, RX frames written by the wire straight into the guest's buffers)"

if [ "$latency" = 1 ]; then
    echo
    echo "latency, $lat_size B, one frame in flight, round trip, $pairs pairs (memif then ours), $lat_samples samples per run (us):"
    lm50="" lm99="" lm999="" lmmax="" lo50="" lo99="" lo999="" lomax="" lp50="" lp99="" lp999="" lpmax=""
    for run in $(seq "$pairs"); do
        memif_lat_run "$run"; read -r a b c d <<<"$result"
        lm50+="$a "; lm99+="$b "; lm999+="$c "; lmmax+="$d "
        ours_lat_run "$run" reflector; read -r e f g h <<<"$result"
        lo50+="$e "; lo99+="$f "; lo999+="$g "; lomax+="$h "
        ours_lat_run "$run" pair; read -r i j k l <<<"$result"
        lp50+="$i "; lp99+="$j "; lp999+="$k "; lpmax+="$l "
        printf 'pair %d:  memif p50 %6.2f  p99 %7.2f  p99.9 %9.2f  |  ours p50 %6.2f  p99 %7.2f  p99.9 %9.2f  |  pair wire p50 %6.2f  p99 %7.2f\n' \
            "$run" "$a" "$b" "$c" "$e" "$f" "$g" "$i" "$j"
    done
    echo
    worst() { tr ' ' '\n' <<<"$1" | grep . | sort -g | tail -n1; }
    printf '%-22s %10s %10s %12s %12s\n' "" p50 p99 p99.9 "max (worst)"
    printf '%-22s %10.2f %10.2f %12.2f %12.2f\n' memif "$(med "$lm50")" "$(med "$lm99")" "$(med "$lm999")" "$(worst "$lmmax")"
    printf '%-22s %10.2f %10.2f %12.2f %12.2f\n' "ours (reflector)" "$(med "$lo50")" "$(med "$lo99")" "$(med "$lo999")" "$(worst "$lomax")"
    printf '%-22s %10.2f %10.2f %12.2f %12.2f\n' "ours (pair wire)" "$(med "$lp50")" "$(med "$lp99")" "$(med "$lp999")" "$(worst "$lpmax")"
    printf '%-22s %10s %10s\n' "ours/memif" "$(ratio "$(med "$lo50")" "$(med "$lm50")")" \
        "$(ratio "$(med "$lo99")" "$(med "$lm99")")"
    printf '%-22s %10s %10s\n' "pair wire/memif" "$(ratio "$(med "$lp50")" "$(med "$lm50")")" \
        "$(ratio "$(med "$lp99")" "$(med "$lm99")")"
    echo "(medians of the runs' percentiles; memif: vdpdk-memif-probe (memif client, CPU 0) -> testpmd"
    echo " macswap (memif server, CPU 1) -> back, 2 cross-core hops; ours: vdpdk-latency-probe, guest"
    echo " (CPU 0) -> host-mux poller (CPU 1) -> host-mux's reflector backend -> poller -> guest, 2"
    echo " cross-core hops; pair wire: reflected in the guest's thread (CPU 0) instead, 4 hops; every"
    echo " step busy-polled; logs latency-*.log)"
fi
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
