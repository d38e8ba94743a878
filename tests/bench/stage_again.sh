#!/usr/bin/env bash
# Staging the same pages again (issue 9, goals 3 and 5): a pull whose records all come back as
# they were, as a `pull --full` of a quiet org or the overlap a pull by modifiedon reads again
# each time. For each build in turn, RUNS times: a first pull of N generated opportunities into
# a new database (its staging alone: the wall time less the evaluation `-v` reports), then a
# pull of the same pages again (its wall time). Prints each run and the medians.
#
# usage: tests/bench/stage_again.sh [OPPORTUNITIES] [RUNS] [BIN...]
#   defaults: 100000 opportunities, 4 runs, this checkout's release build
# Not run by CI: timings are noisy; builds alternate so that the machine's drift falls on all.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-100000}
runs=${2:-4}
shift $(($# < 2 ? $# : 2))
if [ $# -eq 0 ]; then
    cargo build --release --quiet
    set -- "$PWD/target/release/oppsync"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 tests/bench/gen_pages.py "$work/pages" "$n" > /dev/null
now() { date +%s.%N; }
for run in $(seq "$runs"); do
    for bin in "$@"; do
        rm -f "$work"/a.db*
        start=$(now)
        "$bin" --db "$work/a.db" -v pull --fixtures "$work/pages" > "$work/first.out" 2>&1
        end=$(now)
        evaluated=$(grep -o 'export rows evaluated in full in [0-9]* ms' "$work/first.out" | grep -o '[0-9]*')
        start_again=$(now)
        "$bin" --db "$work/a.db" -q pull --fixtures "$work/pages" > /dev/null 2>&1
        end_again=$(now)
        python3 -c "print('$bin', 'stage', round($end - $start - ${evaluated:-0} / 1000, 2), 'again', round($end_again - $start_again, 2))"
    done
done | tee "$work/runs"
echo "== medians of $runs runs at $n opportunities (seconds)"
python3 - "$work/runs" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    bin, _, stage, _, again = line.split()
    runs.setdefault(bin, []).append((float(stage), float(again)))
for bin, rows in runs.items():
    print(f"{bin}: stage {statistics.median(r[0] for r in rows):.2f}, "
          f"again {statistics.median(r[1] for r in rows):.2f}")
PY
