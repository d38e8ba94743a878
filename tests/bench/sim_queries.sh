#!/usr/bin/env bash
# The Marketo simulator's queries at scale (goal 7): N synthetic opportunities pushed to the
# simulator of each build given, then `oppsync recheck --roles` (every acknowledged lead,
# opportunity and role looked up, 300 leads or 150 GUIDs a query, 4 in flight) against each,
# without latency and with the limits raised, so that the simulator's own time per query is
# what the run takes. The client is this checkout's build for every simulator; the runs
# alternate between the simulators. Prints each run's time and query calls per second.
#
# usage: tests/bench/sim_queries.sh [OPPORTUNITIES] [RUNS] [SIM_BIN...]
# (`NO_EMAIL_EVERY=K`, read by gen_pages.py, leaves every K-th contact without an email)
#   (default 100000 opportunities, about 2,000 query calls; 2 runs; this build)
#   e.g. tests/bench/sim_queries.sh 100000 2 /tmp/oppsync-before target/release/oppsync
# Not run by CI: it takes minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-100000}
runs=${2:-2}
shift $(( $# < 2 ? $# : 2 ))
cargo build --release --quiet
client="$PWD/target/release/oppsync"
if [ $# -eq 0 ]; then
    set -- "$client"
fi
if ! command -v sqlite3 >/dev/null || [ ! -x /usr/bin/time ]; then
    apt-get update -qq && apt-get install -y -qq sqlite3 time >/dev/null
fi
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$work"' EXIT

python3 tests/bench/gen_pages.py "$work/pages" "$n" > /dev/null
printf '[marketo]\nrate_limit_calls = 1000\nrate_limit_window_secs = 1\nmax_in_flight = 4\n' > "$work/oppsync.toml"
"$client" --db "$work/pulled.db" --config "$work/oppsync.toml" -q pull --fixtures "$work/pages"
export MARKETO_CLIENT_ID=oppsync-sim MARKETO_CLIENT_SECRET=oppsync-sim-secret
urls=()
for i in $(seq $#); do
    sim=${!i}
    "$sim" sim marketo --port 0 --rate-limit-calls 1000000 --daily-quota 100000000 --seed 9 \
        > "$work/sim$i.out" &
    pids+=($!)
    for _ in $(seq 50); do grep -q listening "$work/sim$i.out" 2>/dev/null && break; sleep 0.1; done
    urls+=("$(head -1 "$work/sim$i.out" | awk '{print $NF}')")
    cp "$work/pulled.db" "$work/pushed$i.db"
    MARKETO_BASE_URL=${urls[$((i - 1))]} \
        "$client" --db "$work/pushed$i.db" --config "$work/oppsync.toml" -q push \
        2> "$work/push$i.err" || true
done

for run in $(seq "$runs"); do
    for i in $(seq $#); do
        sim=${!i}
        MARKETO_BASE_URL=${urls[$((i - 1))]} /usr/bin/time -o "$work/time" -f "%e" \
            "$client" --db "$work/pushed$i.db" --config "$work/oppsync.toml" -q recheck --roles
        calls=$(sqlite3 "$work/pushed$i.db" \
            "select count(*) from api_call where path like '/rest/v1/%' and run_id = (select max(run_id) from run)")
        secs=$(cat "$work/time")
        python3 -c "import sys; c, s = int(sys.argv[1]), float(sys.argv[2]); \
print(f'run $run, simulator of $sim: {c} query calls in {s:.1f} s = {c / s:.1f} calls/s')" "$calls" "$secs"
    done
done
