#!/usr/bin/env bash
# `oppsync recheck` under latency: N synthetic opportunities pushed to the Marketo simulator,
# then every acknowledged lead and opportunity looked up in it again, at Marketo's default
# limits (100 calls per 20 s, 10 in flight) with 500 ms of latency per call plus up to 200 ms
# of jitter. Prints, for each build given, the recheck's time, its REST calls per second
# (Marketo allows 5), and the 606 and 615 answers the simulator gave. Builds run alternating on
# copies of one pushed database, against one simulator that holds what was pushed.
#
# usage: tests/bench/recheck_latency.sh [OPPORTUNITIES] [RUNS] [BIN...]
#   (default 5000 opportunities, about 50 query calls; 2 runs; this build)
# Not run by CI: it takes minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-5000}
runs=${2:-2}
shift $(( $# < 2 ? $# : 2 ))
source tests/bench/lib.sh

if ! command -v sqlite3 >/dev/null || ! command -v curl >/dev/null; then
    apt-get update -qq && apt-get install -y -qq sqlite3 curl >/dev/null
fi
if [ $# -eq 0 ]; then
    cargo build --release --quiet
    set -- "$PWD/target/release/oppsync"
fi
bin=$1
python3 tests/bench/gen_pages.py "$work/pages" "$n"
"$bin" --db "$work/pushed.db" -q pull --fixtures "$work/pages"

start_marketo_sim "$bin" --latency-ms 500 --latency-jitter-ms 200 --seed 9
"$bin" --db "$work/pushed.db" -q push || true
refused() {
    curl -s "$url/sim/state" | python3 -c \
        'import json, sys; s = json.load(sys.stdin); print(s["refused_606"], s["refused_615"])'
}

for run in $(seq "$runs"); do
    for b in "$@"; do
        cp "$work/pushed.db" "$work/recheck.db"
        # The calls before (the push, the last run) leave the simulator's 20 s window first:
        # each run starts from a copy of the pushed database, whose api_call holds none of the
        # last run's calls, and builds before 5216a36 count none of the logged ones either.
        sleep 21
        read -r before606 before615 < <(refused)
        start=$(date +%s.%N)
        "$b" --db "$work/recheck.db" -q recheck
        end=$(date +%s.%N)
        read -r after606 after615 < <(refused)
        calls=$(sqlite3 "$work/recheck.db" \
            "select count(*) from api_call where path like '/rest/v1/%' and run_id = (select max(run_id) from run)")
        python3 -c "import sys; calls, secs = int(sys.argv[1]), float(sys.argv[3]) - float(sys.argv[2]); \
print(f'run $run, $(basename "$b"): {calls} query calls in {secs:.1f} s = {calls / secs:.2f} calls/s ({100 * calls / secs / 5:.0f}% of 5/s); 606: $((after606 - before606)), 615: $((after615 - before615))')" \
            "$calls" "$start" "$end"
    done
done
