#!/usr/bin/env bash
# Push under latency (issue 9, goal 6): a first push of N synthetic opportunities to the Marketo
# simulator at Marketo's default limits (100 calls per 20 s, 10 in flight) with 500 ms of latency
# per call plus up to 200 ms of jitter, with `max_in_flight` 1 (one request at a time) and 4 (the
# default). Prints the REST calls per second sustained while sending (the push's time less that
# of `push --dry-run`, which plans the same push and sends nothing; Marketo allows 5 calls/s),
# and the 606 and 615 answers the simulator gave (a lone oppsync should meet none).
#
# usage: tests/bench/push_latency.sh [OPPORTUNITIES]   (default 5000: about 60 calls a push)
# IN_FLIGHT="4" picks the max_in_flight values to try (default "1 4"). OPPSYNC_BIN=path runs
# another build instead of building this one. Not run by CI: it takes minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-5000}
source tests/bench/lib.sh

bin=$(oppsync_bin)
python3 tests/bench/gen_pages.py "$work/pages" "$n"
"$bin" --db "$work/pulled.db" -q pull --fixtures "$work/pages"

for in_flight in ${IN_FLIGHT:-1 4}; do
    cp "$work/pulled.db" "$work/push.db"
    printf '[marketo]\nmax_in_flight = %s\n' "$in_flight" > "$work/oppsync.toml"
    start_marketo_sim "$bin" --latency-ms 500 --latency-jitter-ms 200 --seed 9
    plan_start=$(date +%s.%N)
    "$bin" --db "$work/push.db" --config "$work/oppsync.toml" push --dry-run > /dev/null
    plan_end=$(date +%s.%N)
    start=$(date +%s.%N)
    "$bin" --db "$work/push.db" --config "$work/oppsync.toml" -q push || true
    end=$(date +%s.%N)
    calls=$(sqlite3 "$work/push.db" "select count(*) from api_call where path like '/rest%'")
    read -r r606 r615 peak < <(curl -s "$url/sim/state" | python3 -c \
        'import json, sys; s = json.load(sys.stdin); print(s["refused_606"], s["refused_615"], s["in_flight_peak"])')
    python3 -c "import sys; calls, whole = int(sys.argv[1]), float(sys.argv[3]) - float(sys.argv[2]); \
plan = float(sys.argv[5]) - float(sys.argv[4]); secs = whole - plan; \
print(f'max_in_flight $in_flight: {calls} REST calls; push {whole:.1f} s, of which planning {plan:.1f} s; sending {secs:.1f} s = {calls / secs:.2f} calls/s ({100 * calls / secs / 5:.0f}% of 5/s); 606: $r606, 615: $r615, peak in flight: $peak')" \
        "$calls" "$start" "$end" "$plan_start" "$plan_end"
    stop_marketo_sim
done
