#!/usr/bin/env bash
# Stage against SQLite's own JSON ingest (issue 9, goal 5: `pull --fixtures` within 1.2x of
# json_each upserting the same typed columns into the same schema, one transaction per page).
# A first pull also evaluates the export rows once staging is done; the time it reports for that
# (`-v`: "export rows evaluated in full in N ms") is subtracted, so "stage" is staging alone.
#
# usage: tests/bench/stage_vs_json_each.sh [OPPORTUNITIES] [RUNS]   (defaults 20000 and 5)
# OPPSYNC_BIN=path runs another build (one that prints the evaluation time with -v).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-20000}
runs=${2:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "${OPPSYNC_BIN:-}" ]; then
    cargo build --release --quiet
fi
cargo build --release --quiet --example json_each_ingest
bin=${OPPSYNC_BIN:-$PWD/target/release/oppsync}
ingest=$PWD/target/release/examples/json_each_ingest
python3 tests/bench/gen_pages.py "$work/pages" "$n"
python3 tests/bench/json_each_ingest.py "$work/pages" > "$work/manifest.json"
"$bin" --db "$work/empty.db" -q init
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for run in $(seq "$runs"); do
    rm -f "$work"/a.db* "$work"/b.db*
    cp "$work/empty.db" "$work/a.db"
    cp "$work/empty.db" "$work/b.db"
    start=$(date +%s.%N)
    "$bin" --db "$work/a.db" -v pull --fixtures "$work/pages" > "$work/pull.out" 2>&1
    end=$(date +%s.%N)
    evaluated=$(sed -n 's/.*export rows evaluated in full in \([0-9]*\) ms.*/\1/p' "$work/pull.out")
    echo "$end $start ${evaluated:-0}" | awk '{printf "%.3f\n", $1 - $2 - $3 / 1000}' >> "$work/stage"
    echo "$end $start" | awk '{printf "%.3f\n", $1 - $2}' >> "$work/pull"
    start=$(date +%s.%N)
    "$ingest" "$work/b.db" "$work/manifest.json"
    end=$(date +%s.%N)
    echo "$end $start" | awk '{printf "%.3f\n", $1 - $2}' >> "$work/json_each"
done
stage=$(median < "$work/stage")
json_each=$(median < "$work/json_each")
echo "$n opportunities, median of $runs runs:"
echo "  pull (stage and evaluate)  $(median < "$work/pull") s"
echo "  stage                      $stage s"
echo "  json_each ingest           $json_each s"
echo "$stage $json_each" | awk '{printf "  stage / json_each          %.2f\n", $1 / $2}'
