#!/usr/bin/env bash
# The sample of what Marketo holds (`oppsync check`, and `sync` once a day) at scale: N
# generated opportunities (gen_pages.py, with scattered ids, as Dynamics' GUIDs are, so that
# the acknowledgements' key order is no order on disk) pulled and pushed to the Marketo
# simulator (limits raised) by the first build, then `oppsync check` timed with each build,
# alternating on that one database; the median of each is printed last. The simulator holds
# everything pushed, so every sample finds all it asks about.
#
# usage: tests/bench/sample_pick.sh [OPPORTUNITIES] [RUNS] [BIN...]
#   defaults: 1000000 opportunities, 3 runs, this checkout's release build
#   e.g. tests/bench/sample_pick.sh 1000000 3 /tmp/oppsync-before target/release/oppsync
# Not run by CI: timings are noisy, and at 1M the pull and push take about 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1000000}
runs=${2:-3}
shift $(($# < 2 ? $# : 2))
if [ $# -eq 0 ]; then
    cargo build --release --quiet
    set -- "$PWD/target/release/oppsync"
fi
if [ ! -x /usr/bin/time ] || ! command -v sqlite3 >/dev/null; then
    apt-get update -qq && apt-get install -y -qq time sqlite3 >/dev/null
fi
source tests/bench/lib.sh

python3 tests/bench/gen_pages.py "$work/full" "$n" --scattered-ids > /dev/null
"$1" --db "$work/acked.db" -q pull --fixtures "$work/full"
rm -rf "$work/full"
start_marketo_sim "$1" --rate-limit-calls 1000000 --daily-quota 100000000
export MARKETO_RATE_LIMIT_CALLS=1000 MARKETO_RATE_LIMIT_WINDOW_SECS=1
"$1" --db "$work/acked.db" -q push
acked=$(sqlite3 "$work/acked.db" "SELECT group_concat(n || ' ' || object, ', ') FROM (SELECT object, count(*) AS n FROM mkto_ack GROUP BY object)")
echo "acknowledged: $acked"

for run in $(seq "$runs"); do
    for bin in "$@"; do
        /usr/bin/time -o "$work/time" -f "%e %U %S %M" "$bin" --db "$work/acked.db" check \
            > "$work/check.out" 2>&1 || true
        read -r wall user sys rss < "$work/time"
        sampled=$(grep -o 'all [0-9]* leads sampled[^:]*\|[0-9]* of [0-9]* [a-z]* sampled are not[^:]*' "$work/check.out" || true)
        echo "$bin: ${wall} s (user ${user} s, kernel ${sys} s, peak RSS $((rss / 1024)) MB): ${sampled:-no sample line}"
        echo "$wall" >> "$work/$(echo "$bin" | tr '/' '_').times"
    done
done
echo "medians over $runs runs of \`oppsync check\` at $n opportunities:"
for bin in "$@"; do
    median=$(sort -n "$work/$(echo "$bin" | tr '/' '_').times" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "  $bin: $median s"
done
