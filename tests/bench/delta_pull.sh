#!/usr/bin/env bash
# A delta pull on a loaded org (issue 9, goal 3): the local work of a sync cycle after a small
# change, builds alternating on copies of one database. The first BIN pulls N generated
# opportunities and pushes them to the Marketo simulator (its limits raised), so that the copy
# holds what Marketo acknowledged, as after a real first sync; each run then copies that
# database and pulls the pages of a CHANGE share of the org changed (gen_pages.py --change:
# opportunities with a new amount and stage, as many contacts with a new job title). Prints each
# run's wall time, CPU time in oppsync and in the kernel, peak RSS, the time spent writing the
# staged records and that of the refresh of the export rows (`pull -v`; 0 for a build that does
# not print it), and its page reads and writes (`pread64` and `pwrite64` calls,
# counted by `perf stat`: they do not vary with the machine's load), then the medians.
#
# usage: tests/bench/delta_pull.sh [OPPORTUNITIES] [RUNS] [BIN...]
#   defaults: 100000 opportunities, 3 runs, this checkout's release build; CHANGE=0.01
#   e.g. tests/bench/delta_pull.sh 1000000 3 /tmp/oppsync-before target/release/oppsync
# The first BIN loads the org, so give the oldest first: a newer build migrates the copy when it
# opens it, an older one refuses a newer schema. Not run by CI: timings are noisy.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-100000}
runs=${2:-3}
shift $(($# < 2 ? $# : 2))
source tests/bench/lib.sh
if [ $# -eq 0 ]; then
    set -- "$(oppsync_bin)"
fi
if [ ! -x /usr/bin/time ] || ! command -v sqlite3 >/dev/null || ! command -v perf >/dev/null; then
    apt-get update -qq && apt-get install -y -qq time sqlite3 linux-perf >/dev/null
fi
change=${CHANGE:-0.01}
python3 tests/bench/gen_pages.py "$work/full" "$n" > /dev/null
python3 tests/bench/gen_pages.py "$work/delta" "$n" --change "$change" > /dev/null
printf '[marketo]\nrate_limit_calls = 1000\nrate_limit_window_secs = 1\n' > "$work/oppsync.toml"

start_marketo_sim "$1" --rate-limit-calls 1000000 --daily-quota 100000000
"$1" --db "$work/loaded.db" -q pull --fixtures "$work/full"
"$1" --db "$work/loaded.db" --config "$work/oppsync.toml" -q push
stop_marketo_sim
sqlite3 "$work/loaded.db" "PRAGMA wal_checkpoint(TRUNCATE)" > /dev/null

for run in $(seq "$runs"); do
    for bin in "$@"; do
        rm -f "$work"/run.db*
        cp "$work/loaded.db" "$work/run.db"
        sync
        perf stat -x ',' -o "$work/io" -e 'syscalls:sys_enter_pread64,syscalls:sys_enter_pwrite64' -- \
            /usr/bin/time -o "$work/time" -f "%e %U %S %M" \
            "$bin" --db "$work/run.db" -v pull --fixtures "$work/delta" > "$work/log" 2>&1 ||
            { echo "$bin failed:"; tail -5 "$work/log"; exit 1; }
        read -r wall user kernel rss < <(tail -1 "$work/time")
        staging=$(grep -o 'wrote the staged records in [0-9]* ms' "$work/log" | grep -o '[0-9]*' || echo 0)
        refresh=$(grep -o 'companies in [0-9]* ms' "$work/log" | grep -o '[0-9]*' || echo 0)
        reads=$(grep pread64 "$work/io" | cut -d, -f1)
        writes=$(grep pwrite64 "$work/io" | cut -d, -f1)
        echo "$bin $wall $user $kernel $rss $staging $refresh $reads $writes"
    done
done | tee "$work/runs" | awk '{printf "%s: %.2f s (user %.2f s, kernel %.2f s, %d KiB), staging %d ms, refresh %d ms, %d page reads, %d writes\n", $1, $2, $3, $4, $5, $6, $7, $8, $9}'
echo "== medians of $runs runs, a $change change at $n opportunities"
python3 - "$work/runs" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    bin, *figures = line.split()
    runs.setdefault(bin, []).append([float(f) for f in figures])
for bin, rows in runs.items():
    m = [statistics.median(r[i] for r in rows) for i in range(8)]
    print(f"{bin}: {m[0]:.2f} s (user {m[1]:.2f} s, kernel {m[2]:.2f} s, {m[3]:.0f} KiB), "
          f"staging {m[4]:.0f} ms, refresh {m[5]:.0f} ms, {m[6]:.0f} page reads, {m[7]:.0f} writes")
PY
