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
work=$(mktemp -d)
sim_pid=
trap '[ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null; rm -rf "$work"' EXIT

if [ -z "${OPPSYNC_BIN:-}" ]; then
    cargo build --release --quiet
fi
bin=${OPPSYNC_BIN:-$PWD/target/release/oppsync}
python3 tests/bench/gen_pages.py "$work/pages" "$n"
"$bin" --db "$work/pulled.db" -q pull --fixtures "$work/pages"
printf '[marketo]\nrate_limit_calls = 1000\nrate_limit_window_secs = 1\n' > "$work/oppsync.toml"

/usr/bin/time -f "plan, $n opportunities: %e s, peak RSS %M KiB" \
    "$bin" --db "$work/pulled.db" --config "$work/oppsync.toml" plan > /dev/null

for run in $(seq "$runs"); do
    cp "$work/pulled.db" "$work/push.db"
    "$bin" sim marketo --port 0 --rate-limit-calls 100000 --daily-quota 10000000 > "$work/sim.out" &
    sim_pid=$!
    for _ in $(seq 50); do grep -q listening "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
    url=$(head -1 "$work/sim.out" | awk '{print $NF}')
    export MARKETO_BASE_URL=$url MARKETO_CLIENT_ID=oppsync-sim MARKETO_CLIENT_SECRET=oppsync-sim-secret
    /usr/bin/time -f "run $run: first push: %e s, peak RSS %M KiB" \
        "$bin" --db "$work/push.db" --config "$work/oppsync.toml" -q push || true
    /usr/bin/time -f "run $run: second push (nothing to send): %e s, peak RSS %M KiB" \
        "$bin" --db "$work/push.db" --config "$work/oppsync.toml" -q push || true
    echo "run $run: $(sqlite3 "$work/push.db" "select count(*) from api_call where path like '/rest%'") REST calls"
    kill "$sim_pid"; wait "$sim_pid" 2>/dev/null || true; sim_pid=
done
