#!/usr/bin/env bash
# Sync cycle benchmark (issue 9): what each step of a cycle costs at N opportunities (with N
# contacts, N/10 accounts, 2N connections and N/1000 owning users), from the first load to an
# idle cycle and small deltas, against the Marketo simulator with its limits raised (and
# oppsync's limiter with them) so that the figures measure oppsync. Each line is wall time and peak RSS
# (/usr/bin/time), and for pushes the REST calls made.
#
#   pull (first)        stage every page, then evaluate the export rows in full
#   plan                read-only plan after the first pull
#   push (first)        send everything
#   push (idle)         nothing changed: must make no REST call
#   status, explain     read-only commands on the loaded org
#   pull/push 1%        a delta pull where 1% of opportunities and contacts changed, then push
#   pull/push 0.01%     the same with 0.01%
#
# usage: tests/bench/cycle.sh [OPPORTUNITIES]   (default 100000)
# OPPSYNC_BIN=path runs another build (a baseline side by side) instead of building this one.
# VERIFY=1 also times `oppsync verify` at the end. SCATTERED_IDS=1 gives the org ids in no
# order (read by gen_pages.py), as a real org's are; NO_EMAIL_EVERY=K leaves every K-th contact
# without an email, so that its lead and roles cannot be sent, as in a real org.
# Not run by CI: timings are noisy.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-100000}
source tests/bench/lib.sh

if [ ! -x /usr/bin/time ] || ! command -v sqlite3 >/dev/null; then
    apt-get update -qq && apt-get install -y -qq time sqlite3 >/dev/null
fi
bin=$(oppsync_bin)
python3 tests/bench/gen_pages.py "$work/full" "$n"
python3 tests/bench/gen_pages.py "$work/delta-1" "$n" --change 0.01
python3 tests/bench/gen_pages.py "$work/delta-0.01" "$n" --change 0.0001
printf '[marketo]\nrate_limit_calls = 1000\nrate_limit_window_secs = 1\n' > "$work/oppsync.toml"

start_marketo_sim "$bin" --rate-limit-calls 1000000 --daily-quota 100000000

db=$work/cycle.db
calls() {
    sqlite3 "$db" "select count(*) from api_call where path like '/rest%' and run_id = (select max(run_id) from run)"
}
step() {
    local label=$1
    shift
    local status=0
    /usr/bin/time -o "$work/time" -f "%e %M" "$bin" --db "$db" --config "$work/oppsync.toml" "$@" > "$work/step.log" 2>&1 || status=$?
    # time writes "Command exited with non-zero status N" before the figures when it fails.
    read -r seconds rss < <(tail -1 "$work/time")
    printf '%-22s %8.2f s %8d KiB' "$label" "$seconds" "$rss"
    case $label in push*) printf ' %6d REST calls' "$(calls)" ;; esac
    # Exit 3 is "finished, with a new problem" (a record refused or not sent): a figure too.
    if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
        printf '  FAILED (exit %d): %s' "$status" "$(tail -1 "$work/step.log")"
    fi
    printf '\n'
}

echo "== $n opportunities ($bin)"
step "pull (first)" -q pull --fixtures "$work/full"
step "plan" plan
step "push (first)" -q push
step "push (idle)" -q push
step "status" status
# The first opportunity generated: its id depends on SCATTERED_IDS.
first_opportunity=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["value"][0]["opportunityid"])' "$work/full/opportunities-00000.json")
step "explain" explain "$first_opportunity"
step "pull 1%" -q pull --fixtures "$work/delta-1"
step "push 1%" -q push
step "pull 0.01%" -q pull --fixtures "$work/delta-0.01"
step "push 0.01%" -q push
if [ -n "${VERIFY:-}" ]; then
    step "verify" verify
fi
