#!/usr/bin/env bash
# Pull benchmark: time and peak memory of `oppsync pull --fixtures` at two data sizes, and the
# time to read the derived views back. Peak memory should not grow with the number of pages
# (a pull holds one page at a time); time should grow about linearly.
#
# usage: tests/bench/pull.sh [SMALL] [LARGE]   (opportunities; defaults 20000 and 100000)
# Installs hyperfine from Debian's packages when missing. Not run by CI: timings are noisy.
set -euo pipefail
cd "$(dirname "$0")/../.."
small=${1:-20000}
large=${2:-100000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! command -v hyperfine >/dev/null; then
    apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null
fi
cargo build --release --quiet
bin=$PWD/target/release/oppsync

for n in "$small" "$large"; do
    python3 tests/bench/gen_pages.py "$work/pages-$n" "$n"
    echo "== $n opportunities: $(ls "$work/pages-$n" | wc -l) pages, $(du -sh "$work/pages-$n" | cut -f1)"
done

hyperfine --warmup 1 --runs 5 \
    --prepare "rm -f $work/small.db* $work/large.db*" \
    -n "pull $small" "$bin --db $work/small.db -q pull --fixtures $work/pages-$small" \
    -n "pull $large" "$bin --db $work/large.db -q pull --fixtures $work/pages-$large"

for n in "$small" "$large"; do
    rm -f "$work/mem.db"*
    /usr/bin/time -f "peak RSS pulling $n opportunities: %M KiB (%e s)" \
        "$bin" --db "$work/mem.db" -q pull --fixtures "$work/pages-$n"
done

# Re-pulling the same pages (every record an update) and reading the views back.
hyperfine --warmup 1 --runs 5 \
    -n "re-pull $large" "$bin --db $work/large.db -q pull --fixtures $work/pages-$large" \
    -n "count roles $large" "sqlite3 $work/large.db 'select count(*) from opportunity_contact_role'" \
    -n "count accounts $large" "sqlite3 $work/large.db 'select count(*) from opportunity_account'"
