# Sourced by the bench scripts that push to the Marketo simulator, from the project root: the
# folder they work in, the build they measure, and the simulator.

# `work`: a temporary folder, removed on exit, with the simulator `start_marketo_sim` started.
work=$(mktemp -d)
sim_pid=
trap '[ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null; rm -rf "$work"' EXIT

# The oppsync to measure: OPPSYNC_BIN, else this checkout's release build, built now.
oppsync_bin() {
    if [ -z "${OPPSYNC_BIN:-}" ]; then
        cargo build --release --quiet
    fi
    echo "${OPPSYNC_BIN:-$PWD/target/release/oppsync}"
}

# Starts `BIN sim marketo` on a free loopback port with the other arguments, waits until it
# listens, and points oppsync at it: sets `url`, and exports MARKETO_BASE_URL with the
# simulator's credentials.
start_marketo_sim() {
    local bin=$1
    shift
    "$bin" sim marketo --port 0 "$@" > "$work/sim.out" &
    sim_pid=$!
    for _ in $(seq 50); do grep -q listening "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
    url=$(head -1 "$work/sim.out" | awk '{print $NF}')
    export MARKETO_BASE_URL=$url MARKETO_CLIENT_ID=oppsync-sim MARKETO_CLIENT_SECRET=oppsync-sim-secret
}

# Stops the simulator `start_marketo_sim` started.
stop_marketo_sim() {
    kill "$sim_pid"
    wait "$sim_pid" 2>/dev/null || true
    sim_pid=
}
