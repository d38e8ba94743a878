#!/usr/bin/env bash
# Stage against SQLite's own JSON ingest (issue 9, goal 5: `pull --fixtures` within 1.2x of
# json_each upserting the same typed columns into the same schema, one transaction per page).
#
# usage: tests/bench/stage_vs_json_each.sh [OPPORTUNITIES] [RUNS]   (defaults 20000 and 5)
# OPPSYNC_BIN=path runs another build. Installs hyperfine from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-20000}
runs=${2:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! command -v hyperfine >/dev/null; then
    apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null
fi
if [ -z "${OPPSYNC_BIN:-}" ]; then
    cargo build --release --quiet
fi
cargo build --release --quiet --example json_each_ingest
bin=${OPPSYNC_BIN:-$PWD/target/release/oppsync}
ingest=$PWD/target/release/examples/json_each_ingest
python3 tests/bench/gen_pages.py "$work/pages" "$n"
python3 tests/bench/json_each_ingest.py "$work/pages" > "$work/manifest.json"
"$bin" --db "$work/empty.db" -q init
hyperfine --warmup 1 --runs "$runs" \
    --prepare "rm -f $work/a.db* $work/b.db*; cp $work/empty.db $work/a.db; cp $work/empty.db $work/b.db" \
    -n "oppsync pull --fixtures ($n opportunities)" "$bin --db $work/a.db -q pull --fixtures $work/pages" \
    -n "json_each ingest (same SQLite)" "$ingest $work/b.db $work/manifest.json"
