#!/usr/bin/env bash
# Pooled temp files (issue 9, goal 4; tests/bench/README.md): four window sorts of the staged
# contacts with their raw records, in the sqlite3 CLI, alternately with SQLite's own temp files
# and with temp_file_pool.c, which serves the sorts' files from a pool of files kept open and
# overwritten. Prints wall, CPU and kernel time, peak RSS and the new memory the machine handed
# out (/proc/vmstat's pgalloc counters, machine-wide: run it on an otherwise idle machine).
#
# usage: tests/bench/temp_file_pool.sh DB [RUNS]   (a database oppsync pulled an org into;
#        first_evaluation.sh's staged 1M org was the one measured; default 2 runs)
# Needs gcc and SQLite's extension header (Debian: libsqlite3-dev), installed when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
db=$(realpath "${1:?usage: tests/bench/temp_file_pool.sh DB [RUNS]}")
runs=${2:-2}
if ! command -v gcc >/dev/null || [ ! -f /usr/include/sqlite3ext.h ] || [ ! -x /usr/bin/time ]; then
    apt-get update -qq && apt-get install -y -qq gcc libsqlite3-dev sqlite3 time >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -fPIC -shared -o "$work/pool.so" tests/bench/temp_file_pool.c -lpthread
sorts="PRAGMA threads = 2;
PRAGMA cache_size = -8192;
SELECT count(*), max(r), sum(length(raw)) FROM (SELECT row_number() OVER (ORDER BY lower(emailaddress1), contactid) AS r, raw FROM contact);
SELECT count(*), max(r), sum(length(raw)) FROM (SELECT row_number() OVER (ORDER BY lastname, contactid) AS r, raw FROM contact);
SELECT count(*), max(r), sum(length(raw)) FROM (SELECT row_number() OVER (ORDER BY firstname DESC, contactid) AS r, raw FROM contact);
SELECT count(*), max(r), sum(length(raw)) FROM (SELECT row_number() OVER (ORDER BY fullname, contactid DESC) AS r, raw FROM contact);"
pgalloc() { awk '/^pgalloc_/ { n += $2 } END { print n }' /proc/vmstat; }
for run in $(seq "$runs"); do
    for variant in own pooled; do
        load=""
        # The VFS becomes the default for connections opened after it is loaded.
        [ "$variant" = pooled ] && load=".load $work/pool.so"
        printf '%s\n.open -readonly %s\n%s\n' "$load" "$db" "$sorts" > "$work/run.sql"
        before=$(pgalloc)
        /usr/bin/time -o "$work/time" -f "%e s wall, %U s CPU, %S s kernel, %M KiB" \
            sqlite3 < "$work/run.sql" > "$work/out.$variant"
        after=$(pgalloc)
        echo "$variant temp files, run $run: $(cat "$work/time"), new memory $(( (after - before) * 4096 / 1000000 )) MB"
    done
    cmp -s "$work/out.own" "$work/out.pooled" || { echo "the two gave different results"; exit 1; }
done
