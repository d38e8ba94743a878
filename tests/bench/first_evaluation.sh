#!/usr/bin/env bash
# First full evaluation benchmark (issue 9, goal 4): how long the first evaluation of the export
# rows takes at N opportunities (with N contacts, N/10 accounts, 2N connections and N/1000
# owning users, gen_pages.py), for one or more builds side by side. The org is staged once; each
# run copies that staged database (no export rows yet) and pulls one unchanged page into it,
# which evaluates every export row, and reads the time from `pull -v` ("export rows evaluated in
# full in ... ms": the views, the index builds, the counts and the commits with their WAL
# checkpoints). Runs alternate between the builds, so that the machine's drift falls on all of
# them; the median of each is printed last.
#
# usage: tests/bench/first_evaluation.sh [OPPORTUNITIES] [RUNS] [BIN...]
#   defaults: 100000 opportunities, 3 runs, this checkout's release build
#   e.g. tests/bench/first_evaluation.sh 1000000 3 /tmp/oppsync-before target/release/oppsync
# With SCATTERED_IDS=1 (read by gen_pages.py), the org's ids are in no order, as a real
# org's are; by default they are sequential, which flatters every lookup by id.
# The first BIN stages the org, so give the oldest first: a newer build migrates the staged
# copy when it opens it (for 0007, an index on the empty export_row), an older one refuses it.
# Not run by CI: timings are noisy. Each run also prints the CPU time in oppsync itself and in
# the kernel for it: most of the kernel's is SQLite's page writes, into new page-cache memory,
# whose cost varies within a day on these VMs (tests/bench/fresh_pages.py measures it). With
# COUNT_IO=1, each run also counts its page reads and writes (`perf stat` on the pread64 and
# pwrite64 tracepoints), which do not vary with the machine's load, so that builds compare on
# a noisy day too. With PHASES=1, each run also prints a table of its phases (the rule views,
# each export view, the index builds, the counts): the CPU time in oppsync and in the kernel,
# the bytes written and read, and the new memory the machine handed out, in each
# (tests/bench/evaluation_phases.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-100000}
runs=${2:-3}
shift $(($# < 2 ? $# : 2))
if [ $# -eq 0 ]; then
    cargo build --release --quiet
    set -- "$PWD/target/release/oppsync"
fi
if [ ! -x /usr/bin/time ] || ! command -v sqlite3 >/dev/null; then
    apt-get update -qq && apt-get install -y -qq time sqlite3 >/dev/null
fi
count_io=${COUNT_IO:-0}
phases=${PHASES:-0}
if [ "$count_io" != 0 ] && ! command -v perf >/dev/null; then
    apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 tests/bench/gen_pages.py "$work/full" "$n"
mkdir "$work/one"
cp "$(ls "$work"/full/accounts-*.json | head -1)" "$work/one/"
"$1" --db "$work/staged.db" -q pull --fixtures "$work/full" || { echo "staging with $1 failed"; exit 1; }
# The staged records without export rows, as a first pull leaves them before evaluating.
sqlite3 "$work/staged.db" "
    DELETE FROM export_row; DELETE FROM derived_opportunity; DELETE FROM export_total;
    DELETE FROM export_removed; DELETE FROM export_dirty;
    UPDATE export_state SET built = 0, definition = NULL;
    VACUUM INTO '$work/snapshot.db';"
rm -f "$work"/staged.db*
sqlite3 "$work/snapshot.db" "PRAGMA journal_mode=WAL" > /dev/null

for run in $(seq "$runs"); do
    for bin in "$@"; do
        rm -f "$work"/run.db*
        cp "$work/snapshot.db" "$work/run.db"
        chmod 600 "$work/run.db"
        sync
        counting=()
        if [ "$count_io" != 0 ]; then
            counting=(perf stat -x ',' -o "$work/io" -e 'syscalls:sys_enter_pread64,syscalls:sys_enter_pwrite64' --)
        fi
        timing=(/usr/bin/time -o "$work/time" -f "%M %U %S")
        out="$work/log"
        if [ "$phases" != 0 ]; then
            # It writes the log itself, and the time file as /usr/bin/time would.
            timing=(python3 tests/bench/evaluation_phases.py --log "$work/log" --db "$work/run.db"
                --table "$work/phases" --time "$work/time" --)
            out="$work/sampler.log"
        fi
        "${counting[@]}" "${timing[@]}" \
            "$bin" --db "$work/run.db" -v pull --fixtures "$work/one" \
            > "$out" 2>&1 || { echo "$bin failed:"; tail -5 "$work/log"; [ "$out" = "$work/log" ] || cat "$out"; exit 1; }
        ms=$(sed -n 's/.*export rows evaluated in full in \([0-9]*\) ms.*/\1/p' "$work/log")
        [ -n "$ms" ] || { echo "$bin did not evaluate in full:"; tail -5 "$work/log"; exit 1; }
        read -r rss user sys < "$work/time"
        io=""
        if [ "$count_io" != 0 ]; then
            io=$(awk -F, '/pread64/ {r = $1} /pwrite64/ {w = $1} END {printf ", %d reads, %d writes", r, w}' "$work/io")
        fi
        printf '%s run %d: %6.1f s (CPU: %s s oppsync, %s s kernel), peak RSS %d KiB%s\n' \
            "$bin" "$run" "$(awk "BEGIN {print $ms / 1000}")" "$user" "$sys" "$rss" "$io"
        if [ "$phases" != 0 ]; then
            cat "$work/phases"
        fi
        echo "$ms" >> "$work/ms-$(echo "$bin" | md5sum | cut -c1-8)"
    done
done
echo "== median of $runs runs at $n opportunities"
for bin in "$@"; do
    sort -n "$work/ms-$(echo "$bin" | md5sum | cut -c1-8)" |
        awk -v bin="$bin" '{a[NR] = $1} END {printf "%s: %.1f s\n", bin, a[int((NR + 1) / 2)] / 1000}'
done
