#!/usr/bin/env bash
# Plan and push benchmark: time and peak memory of `oppsync plan` and of a first `oppsync push`
# of N synthetic opportunities (with their contacts, accounts and stakeholder roles) to the
# Marketo simulator, and of a second push that finds nothing to send. The simulator's rate
# limits are raised (and oppsync's limiter with them) so that the figures measure oppsync, not
# the 100-calls-per-20-s window a real instance imposes.
#
# usage: tests/bench/push.sh [OPPORTUNITIES] [RUNS]   (defaults 20000 and 3)
# OPPSYNC_BIN=path runs another build (for a baseline side by side) instead of building this one.
# Not run by CI: timings are noisy.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-20000}
runs=${2:-3}
source tests/bench/lib.sh

bin=$(oppsync_bin)
python3 tests/bench/gen_pages.py "$work/pages" "$n"
"$bin" --db "$work/pulled.db" -q pull --fixtures "$work/pages"
printf '[marketo]\nrate_limit_calls = 1000\nrate_limit_window_secs = 1\n' > "$work/oppsync.toml"

/usr/bin/time -f "plan, $n opportunities: %e s, peak RSS %M KiB" \
    "$bin" --db "$work/pulled.db" --config "$work/oppsync.toml" plan > /dev/null

for run in $(seq "$runs"); do
    cp "$work/pulled.db" "$work/push.db"
    start_marketo_sim "$bin" --rate-limit-calls 100000 --daily-quota 10000000
    /usr/bin/time -f "run $run: first push: %e s, peak RSS %M KiB" \
        "$bin" --db "$work/push.db" --config "$work/oppsync.toml" -q push || true
    /usr/bin/time -f "run $run: second push (nothing to send): %e s, peak RSS %M KiB" \
        "$bin" --db "$work/push.db" --config "$work/oppsync.toml" -q push || true
    echo "run $run: $(sqlite3 "$work/push.db" "select count(*) from api_call where path like '/rest%'") REST calls"
    stop_marketo_sim
done
