#!/usr/bin/env bash
# libFuzzer (cargo-fuzz) runs of host-mux's guest-facing input handling (fuzz/README.md).
#
#   scripts/fuzz.sh --smoke [TARGET...]
#       each target for a bounded run (20,000 execs, at most 60 s): CI. Fails on any finding.
#   scripts/fuzz.sh --campaign N [--max-time S] [--jobs J] [TARGET...]
#       each target for N execs (-runs=N), or S seconds if that comes first, and a summary:
#       execs, execs/s, findings, coverage. --jobs J runs J worker processes at once
#       (libFuzzer's -fork=J; N counts the execs of all of them), stopping at the first crash,
#       timeout, OOM or leak as one worker does.
#
# Targets default to all four: flow_codec descriptor_validation control_plane
# vfio_user_messages. Needs the nightly toolchain (cargo-fuzz builds with -Zsanitizer=address);
# installs cargo-fuzz if it is missing. One target at a time, one worker unless --jobs.
# Corpora grow in fuzz/corpus/<target> (seeded from fuzz/seeds/<target>), findings land in
# fuzz/artifacts/<target>, logs in $FUZZ_LOG_DIR (default fuzz/logs).
# Builds use debug assertions (`cargo fuzz -a`), so integer overflows are findings too.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

ALL_TARGETS=(flow_codec descriptor_validation control_plane vfio_user_messages)

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

mode=""
runs=0
max_time=0
jobs=1
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) mode=smoke; runs=20000; max_time=60 ;;
        --campaign)
            mode=campaign
            runs="${2:?--campaign needs a number of execs}"
            shift
            ;;
        --max-time) max_time="${2:?--max-time needs seconds}"; shift ;;
        --jobs) jobs="${2:?--jobs needs a number}"; shift ;;
        -h | --help) usage ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *) targets+=("$1") ;;
    esac
    shift
done
[ -n "$mode" ] || usage
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "--jobs takes a positive number, not $jobs" >&2; exit 2; }
[ "${#targets[@]}" -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    [ -f "fuzz_targets/$t.rs" ] || { echo "no fuzz target $t (fuzz/fuzz_targets/)" >&2; exit 2; }
done

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: the nightly Rust toolchain is required (cargo-fuzz builds with" >&2
    echo "  -Zsanitizer=address): rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

log_dir="${FUZZ_LOG_DIR:-$PWD/logs}"
mkdir -p "$log_dir"

cargo +nightly fuzz build -a

# Inputs larger than a target needs only slow it down: one vfio-user session of up to 64 KiB;
# the structured targets take libFuzzer's default.
max_len() {
    case "$1" in
        vfio_user_messages) echo 65536 ;;
        *) echo 4096 ;;
    esac
}

stat() { # stat NAME LOG: a -print_final_stats=1 value
    sed -n "s/^stat::$1: *//p" "$2" | tail -1
}

failed=()
summary=()
for t in "${targets[@]}"; do
    corpus="corpus/$t"
    mkdir -p "$corpus" "artifacts/$t"
    dirs=("$corpus")
    [ -d "seeds/$t" ] && dirs+=("seeds/$t")
    log="$log_dir/$t.log"
    args=(-runs="$runs" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10
        -max_len="$(max_len "$t")")
    [ "$max_time" -gt 0 ] && args+=(-max_total_time="$max_time")
    # Fork mode ignores timeouts and OOMs unless told otherwise; a campaign must not.
    [ "$jobs" -gt 1 ] && args+=(-fork="$jobs" -ignore_timeouts=0 -ignore_ooms=0 -ignore_crashes=0)
    before=$(find "artifacts/$t" -type f | sort)
    echo "== $t: ${args[*]} (log: $log)"
    start=$(date +%s)
    set +e
    cargo +nightly fuzz run -a "$t" "${dirs[@]}" -- "${args[@]}" >"$log" 2>&1
    rc=$?
    set -e
    secs=$(($(date +%s) - start))
    # libFuzzer's own time (the wall time above includes building); execs/s is 0 below 1 s.
    fuzz_secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    new=$(comm -13 <(echo "$before") <(find "artifacts/$t" -type f | sort) | sed '/^$/d')
    found=$(echo -n "$new" | grep -c . || true)
    execs=$(stat number_of_executed_units "$log")
    rate=$(stat average_exec_per_sec "$log")
    if [ "$jobs" -gt 1 ]; then
        # The fork-mode parent prints no final stats: its last status line counts every worker.
        execs=$(grep -E '^#[0-9]+: cov:' "$log" | tail -1 | sed -n 's/^#\([0-9]*\):.*/\1/p')
        fuzz_secs=$(grep -E '^#[0-9]+: cov:' "$log" | tail -1 | sed -n 's/.* time: \([0-9]*\)s.*/\1/p')
        rate=$([ "${fuzz_secs:-0}" -gt 0 ] && echo $((execs / fuzz_secs)) || echo "?")
    fi
    # The last status line: "#N DONE cov: C ft: F corp: ..."
    cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\).*/cov \1, features \2, corpus \3/p')
    # (The parent stops at the first one and exits non-zero; its counts say so too.)
    if [ "$jobs" -gt 1 ] && grep -E '^#[0-9]+: cov:' "$log" | grep -vq 'oom/timeout/crash: 0/0/0'; then
        rc=1
    fi
    line="$t: ${execs:-?} execs in ${fuzz_secs:-?}s (${secs}s with the build), ${rate:-?} execs/s, ${found} finding(s), ${cov:-coverage ?}"
    if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
        line="$line -- FAILED (exit $rc), see $log"
        for a in $new; do
            line="$line; input fuzz/$a"
        done
        failed+=("$t")
        grep -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)|SUMMARY' "$log" | head -5 || true
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary ($mode)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: findings in ${failed[*]}" >&2
    exit 1
fi
