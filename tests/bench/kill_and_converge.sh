#!/usr/bin/env bash
# Kill and converge: a `sync --every 1s` stopped again and again at random moments, with SIGTERM
# (a stop at the next safe point, or the step of SQL running interrupted) or SIGKILL (no
# warning), against a Marketo simulator that answers 3% of calls with a transient error and
# 10-50 ms late. Each round pulls the org's first version or, every third round, its delta
# (a fifth of the opportunities and contacts changed), so the kills land in first loads,
# deltas and idle cycles alike. Then one `sync` to the end, and the checks: a second `sync`
# makes no REST call, `oppsync verify` passes, no run is left `running` (the killed ones are
# closed as interrupted), and the simulator holds exactly the sendable
# export rows, field by field (every field of each payload as the simulator stored it), with
# no lead twice. Prints one line per round and per check, and exits 1 when a check fails.
# With LIVE=1 it pulls from the Dynamics simulator instead (change tracking, every ninth request
# throttled with a 429 of 1 s), which serves the first version and, from the middle round on,
# the second; one more check then compares the export rows with those of a pull of both
# versions' pages from their folders.
#
# usage: tests/bench/kill_and_converge.sh [OPPORTUNITIES] [ROUNDS] [SEED]
#   defaults: 3000 opportunities, 16 rounds, seed 1 (the kill moments, signals and faults)
# OPPSYNC_BIN=path runs another build instead of building this one. Not run by CI: it takes a
# minute or two, and its kills land at moments that differ from run to run.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-3000}
rounds=${2:-16}
seed=${3:-1}
source tests/bench/lib.sh

bin=$(oppsync_bin)
if ! command -v sqlite3 >/dev/null || ! command -v curl >/dev/null; then
    apt-get update -qq && apt-get install -y -qq sqlite3 curl >/dev/null
fi
python3 tests/bench/gen_pages.py "$work/v1" "$n" 500 > /dev/null
python3 tests/bench/gen_pages.py "$work/v2" "$n" 500 --change 0.2 > /dev/null

start_marketo_sim "$bin" --transient-rate 0.03 --latency-ms 10 --latency-jitter-ms 40 \
    --rate-limit-calls 1000 --seed "$seed"
db=$work/oppsync.db
live=${LIVE:-0}
dynamics_pid=
if [ "$live" != 0 ]; then
    "$bin" sim dynamics --port 0 --fixtures "$work/v1" --next "$work/v2" --throttle-every 9 \
        --retry-after 1 > "$work/dynamics.out" &
    dynamics_pid=$!
    trap '[ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null; kill "$dynamics_pid" 2>/dev/null; rm -rf "$work"' EXIT
    for _ in $(seq 50); do grep -q listening "$work/dynamics.out" 2>/dev/null && break; sleep 0.1; done
    dynamics=$(head -1 "$work/dynamics.out" | awk '{print $NF}')
    export DYNAMICS_URL=$dynamics DYNAMICS_TOKEN_URL=$dynamics/oppsync-sim/oauth2/v2.0/token \
        DYNAMICS_CLIENT_ID=oppsync-sim DYNAMICS_CLIENT_SECRET=oppsync-sim-secret
fi
# What a cycle pulls: a fixture folder, or (LIVE=1) the Dynamics simulator.
source_of() {
    if [ "$live" != 0 ]; then echo; else echo "--fixtures $work/$1"; fi
}

RANDOM=$seed
killed=0
for round in $(seq "$rounds"); do
    pages=v1
    [ $((round % 3)) = 0 ] && pages=v2
    if [ "$live" != 0 ]; then
        pages=live
        if [ "$round" = $((rounds / 2 + 1)) ]; then
            curl -s -X POST "$dynamics/sim/advance" -d '{}' > /dev/null
            echo "the Dynamics simulator now serves the second version"
        fi
    fi
    signal=TERM
    [ $((RANDOM % 2)) = 0 ] && signal=KILL
    after_ms=$((300 + RANDOM % 6000))
    # shellcheck disable=SC2046 # the source's arguments, or none
    "$bin" --db "$db" sync --every 1s $(source_of "$pages") > "$work/round.out" 2>&1 &
    pid=$!
    sleep "$(printf '%d.%03d' $((after_ms / 1000)) $((after_ms % 1000)))"
    kill "-$signal" "$pid" 2>/dev/null || true
    code=0
    wait "$pid" 2>/dev/null || code=$?
    last=$(grep -E 'cycle [0-9]+: |stopped on request' "$work/round.out" | tail -1 | cut -c22- || true)
    echo "round $round: $pages, SIG$signal after $after_ms ms, exit $code: $last"
    if [ "$signal" = KILL ]; then killed=$((killed + 1)); fi
done

failed=0
check() { # NAME COMMAND...: runs COMMAND, and says whether it passed
    local name=$1
    shift
    if "$@"; then echo "ok: $name"; else echo "FAILED: $name"; failed=1; fi
}
# shellcheck disable=SC2046
"$bin" --db "$db" -q sync $(source_of v2) > "$work/final.out" 2>&1 || true
# shellcheck disable=SC2046
"$bin" --db "$db" sync $(source_of v2) > "$work/again.out" 2>&1 || true
check "a second sync makes no REST call" grep -q "no REST call made" "$work/again.out"
check "the stored export rows equal the views" "$bin" --db "$db" -q verify
# A SIGKILL mid-cycle leaves its run `running`; the next writing command closes it as
# interrupted (one killed between cycles, or before its run was recorded, leaves none).
interrupted=$(sqlite3 "$db" "SELECT count(*) FROM run WHERE outcome = 'interrupted'")
check "no run is left running, and $interrupted are interrupted, of $killed SIGKILLs" \
    test "$(sqlite3 "$db" "SELECT count(*) FROM run WHERE outcome = 'running'")" = 0 \
    -a "$interrupted" -le "$killed"
curl -s "$url/sim/state" > "$work/state.json"
cat > "$work/compare.py" <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
state = json.load(open(sys.argv[2]))
lead_email = {lead["id"]: lead["email"].strip().lower() for lead in state["leads"]}
held = {
    "sales_person": {r["externalSalesPersonId"]: r for r in state["sales_persons"]},
    "company": {r["externalCompanyId"]: r for r in state["companies"]},
    "lead": {r["email"].strip().lower(): r for r in state["leads"]},
    "opportunity": {r["externalOpportunityId"]: r for r in state["opportunities"]},
    "opportunity_role": {
        json.dumps([r["externalOpportunityId"], lead_email.get(r["leadId"]), r["role"]]): r
        for r in state["roles"]
    },
}
failed = False
for obj, records in held.items():
    rows = db.execute(
        "SELECT key, payload FROM export_row WHERE object = ? AND skip_reason IS NULL"
        " AND key IS NOT NULL AND payload IS NOT NULL", (obj,)).fetchall()
    want = {key if obj != "opportunity_role" else json.dumps(json.loads(key)): json.loads(payload)
            for key, payload in rows}
    differ = [k for k, p in want.items()
              if k not in records or any(records[k].get(f) != v for f, v in p.items())]
    extra = [k for k in records if k not in want]
    ok = not differ and not extra
    failed |= not ok
    print(f"{'ok' if ok else 'FAILED'}: {obj}: {len(records)} in the simulator, {len(want)} sendable"
          f" rows, {len(differ)} missing or different, {len(extra)} not in the rows")
emails = [lead["email"].strip().lower() for lead in state["leads"]]
twice = len(emails) - len(set(emails))
failed |= twice > 0
print(f"{'ok' if not twice else 'FAILED'}: {twice} leads twice")
sys.exit(1 if failed else 0)
PY
check "the simulator holds exactly the sendable rows" \
    python3 "$work/compare.py" "$db" "$work/state.json"
if [ "$live" != 0 ]; then
    "$bin" --db "$work/pages.db" -q pull --fixtures "$work/v1"
    "$bin" --db "$work/pages.db" -q pull --fixtures "$work/v2"
    rows="SELECT object, key, payload, skip_reason FROM export_row ORDER BY 1, 2, 3"
    check "the export rows equal those of both versions pulled from their folders" \
        test "$(sqlite3 "$db" "$rows" | md5sum)" = "$(sqlite3 "$work/pages.db" "$rows" | md5sum)"
fi
exit $failed
