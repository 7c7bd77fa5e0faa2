#!/usr/bin/env bash
# A/B of two builds of vdpdk-bench, interleaved: how docs/BENCH.md's change tables are made.
#
#   scripts/bench-ab.sh [--pairs N] [--log FILE] A B [-- vdpdk-bench args...]
#
# A and B are git revisions (built in temporary worktrees, into target/bench-ab/<commit>; a
# revision is its commit, so uncommitted changes need their binary, target/release/vdpdk-bench)
# or paths to vdpdk-bench binaries already built. Runs A B A B ..., N pairs (default 7), each run
# one `vdpdk-bench --repeats 1 --secs 1 --json` with the given args (default: --wire null
# --sizes 64), and prints for every direction and size the runs, both medians and the median
# of the per-pair ratios B/A. This machine's speed drifts between phases by more than most
# changes move it, so only ratios of interleaved pairs mean anything; 7-9 pairs tell 3-5%
# apart, a single pair nothing. Run it on an otherwise idle machine (no builds or tests).
#
# Reserve hugepages first to match BENCH.md (echo 1024 > /proc/sys/vm/nr_hugepages).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

pairs=7
log=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --pairs) pairs=$2; shift 2 ;;
        --log) log=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; break ;;
        -*) echo "bench-ab: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [[ $# -lt 2 ]]; then
    echo "bench-ab: need two revisions or binaries, A and B (see --help)" >&2
    exit 2
fi
if ! [[ $pairs =~ ^[1-9][0-9]*$ ]]; then
    echo "bench-ab: --pairs wants a positive number, not '$pairs'" >&2
    exit 2
fi
a=$1; b=$2; shift 2
[[ ${1:-} == -- ]] && shift
args=("$@")
[[ ${#args[@]} -eq 0 ]] && args=(--wire null --sizes 64)

work=$(mktemp -d /tmp/bench-ab.XXXXXX)
cleanup() {
    for wt in "$work"/wt-*; do
        if [[ -d $wt ]]; then
            git -C "$ROOT" worktree remove --force "$wt" >/dev/null 2>&1 || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Prints the path of a vdpdk-bench binary for revision or path $1.
binary_for() {
    if [[ -x $1 && -f $1 ]]; then
        echo "$1"
        return
    fi
    local commit
    if ! commit=$(git -C "$ROOT" rev-parse --verify --quiet "$1^{commit}"); then
        echo "bench-ab: '$1' is neither an executable nor a git revision" >&2
        return 1
    fi
    local target="$ROOT/target/bench-ab/$commit"
    if [[ ! -x $target/release/vdpdk-bench ]]; then
        local wt="$work/wt-${commit:0:12}"
        git -C "$ROOT" worktree add --detach --quiet "$wt" "$commit"
        echo "bench-ab: building $1 (${commit:0:12}) into $target" >&2
        (cd "$wt" && CARGO_TARGET_DIR=$target cargo build --release --quiet -p vdpdk-tools \
            --bin vdpdk-bench) >&2
    fi
    echo "$target/release/vdpdk-bench"
}

bin_a=$(binary_for "$a")
bin_b=$(binary_for "$b")
out=${log:-$work/runs.txt}
: > "$out"
echo "bench-ab: $pairs pairs, A = $a, B = $b, vdpdk-bench ${args[*]}" >&2
for i in $(seq "$pairs"); do
    for side in A B; do
        bin=$bin_a; [[ $side == B ]] && bin=$bin_b
        # One line per result: "side {json}".
        if ! timeout 300 "$bin" --repeats 1 --secs 1 --dir "$work/sock-$side" "${args[@]}" \
            --json 2>/dev/null | sed -n "s/^{/$side {/p" >> "$out"; then
            echo "bench-ab: pair $i, $side failed (vdpdk-bench ${args[*]})" >&2
            exit 1
        fi
    done
    echo "bench-ab: pair $i of $pairs done" >&2
done

python3 - "$out" <<'EOF'
import statistics as st, sys
import json
runs = {}
for line in open(sys.argv[1]):
    side, rec = line.split(" ", 1)
    r = json.loads(rec)
    # Scaling mode (--guests) adds the guest count to what a result is of.
    what = ("%s guests, " % r["guests"] if "guests" in r else "") + r["direction"]
    runs.setdefault((what, r["size"]), {}).setdefault(side, []).append(r["median_mpps"])
rows = []
for (what, size), sides in sorted(runs.items()):
    ra, rb = sides.get("A", []), sides.get("B", [])
    if not ra or not rb:
        continue
    ratio = st.median(y / x for x, y in zip(ra, rb))
    rows.append((what, size, " ".join("%.2f" % v for v in ra), " ".join("%.2f" % v for v in rb),
                 st.median(ra), st.median(rb), ratio))
wa = max([len("A runs (Mpps)")] + [len(r[2]) for r in rows])
wb = max([len("B runs (Mpps)")] + [len(r[3]) for r in rows])
print("%-26s %5s  %-*s  %-*s %6s %6s %8s" % ("what", "bytes", wa, "A runs (Mpps)", wb,
                                             "B runs (Mpps)", "A med", "B med", "B/A pair"))
for what, size, ra, rb, ma, mb, ratio in rows:
    print("%-26s %5d  %-*s  %-*s %6.2f %6.2f %8.3f" % (what, size, wa, ra, wb, rb, ma, mb, ratio))
print("(B/A pair: the median of the per-pair ratios; medians of %d interleaved pairs)" %
      min(len(s.get("A", [])) for s in runs.values()))
EOF
