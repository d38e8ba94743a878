#!/usr/bin/env bash
# History pruning benchmark: what the end of a writing run costs when AGED old runs fall out of
# `[history] keep_days` at N opportunities (with N contacts, N/10 accounts, 2N connections,
# gen_pages.py), for one or more builds side by side. The org is staged once; each run copies
# it, adds AGED push runs a year old that nothing refers to (as an hourly `oppsync push` from
# cron leaves them), and times `oppsync init`, which does nothing else but migrate (nothing to
# do) and prune. Runs alternate between the builds; the median of each is printed last. Each
# run says how many aged runs are left: none, or from 5cd776f on the newest, which stays as the
# last successful push.
#
# usage: tests/bench/prune_history.sh [OPPORTUNITIES] [AGED] [RUNS] [BIN...]
#   defaults: 100000 opportunities, 40 aged runs, 3 runs, this checkout's release build
#   e.g. tests/bench/prune_history.sh 100000 40 3 /tmp/oppsync-before target/release/oppsync
# Not run by CI: timings are noisy.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-100000}
aged=${2:-40}
runs=${3:-3}
shift $(($# < 3 ? $# : 3))
if [ $# -eq 0 ]; then
    cargo build --release --quiet
    set -- "$PWD/target/release/oppsync"
fi
if [ ! -x /usr/bin/time ] || ! command -v sqlite3 >/dev/null; then
    apt-get update -qq && apt-get install -y -qq time sqlite3 >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 tests/bench/gen_pages.py "$work/full" "$n" > /dev/null
"$1" --db "$work/staged.db" -q pull --fixtures "$work/full" || { echo "staging with $1 failed"; exit 1; }
rm -rf "$work/full"

for run in $(seq "$runs"); do
    for bin in "$@"; do
        rm -f "$work"/run.db*
        cp "$work/staged.db" "$work/run.db"
        sqlite3 "$work/run.db" "
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $aged)
            INSERT INTO run (command, args, started_at, finished_at, outcome, exit_code)
            SELECT 'push', '[]', strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-1 year'),
                   strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-1 year'), 'done', 0 FROM n;"
        sync
        /usr/bin/time -o "$work/time" -f "%e %U %S %M" "$bin" --db "$work/run.db" -q init
        left=$(sqlite3 "$work/run.db" "SELECT count(*) FROM run WHERE started_at < strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-300 days')")
        read -r wall user sys rss < "$work/time"
        echo "$bin: ${wall} s (user ${user} s, kernel ${sys} s, peak RSS $((rss / 1024)) MB), $aged aged runs, $left left"
        echo "$wall" >> "$work/$(echo "$bin" | tr '/' '_').times"
    done
done
echo "medians over $runs runs, $aged aged runs at $n opportunities:"
for bin in "$@"; do
    median=$(sort -n "$work/$(echo "$bin" | tr '/' '_').times" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "  $bin: $median s"
done
