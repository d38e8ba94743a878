//! `oppsync sim marketo ...` and `oppsync sim dynamics ...`: run a simulator in the foreground.

use std::io::Write;

use anyhow::Result;

use std::time::Duration;

use crate::cli::{SimDynamicsArgs, SimMarketoArgs, SimTarget};
use crate::exit::{Outcome, usage};
use crate::sim::dynamics::{DynamicsSim, DynamicsSimConfig};
use crate::sim::marketo::{MarketoSim, SimConfig};

pub(crate) fn run(target: &SimTarget) -> Result<Outcome> {
    let args = match target {
        SimTarget::Marketo(args) => args,
        SimTarget::Dynamics(args) => return run_dynamics(args),
    };
    let config = config_from(args)?;
    let sim = MarketoSim::start(args.port, config)?;
    // The banner is informational: a closed stdout must not stop the simulator.
    let url = sim.url();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Marketo simulator listening on {url}");
    let _ = writeln!(
        out,
        "client id {}, client secret {}; state at {url}/sim/state, faults via POST {url}/sim/faults",
        args.client_id, args.client_secret
    );
    let _ = writeln!(
        out,
        "point oppsync at it: MARKETO_BASE_URL={url} MARKETO_CLIENT_ID={} MARKETO_CLIENT_SECRET=...",
        args.client_id
    );
    let _ = out.flush();
    drop(out);
    sim.wait();
    Ok(Outcome::Done)
}

fn run_dynamics(args: &SimDynamicsArgs) -> Result<Outcome> {
    let config = DynamicsSimConfig {
        next: args.next.clone(),
        page_size: args.page_size.max(1),
        client_id: args.client_id.clone(),
        client_secret: args.client_secret.clone(),
        username: args.username.clone(),
        password: args.password.clone(),
        token_ttl: Duration::from_secs(args.token_ttl),
        expires_in_as_string: args.expires_in_string,
        throttle_every: args.throttle_every,
        retry_after_secs: args.retry_after,
        no_change_tracking: args.no_change_tracking.clone(),
        latency: Duration::from_millis(args.latency_ms),
        ..DynamicsSimConfig::new(args.fixtures.clone())
    };
    let sim = DynamicsSim::start(args.port, config)?;
    let url = sim.url();
    let state = sim.state();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Dataverse simulator listening on {url}");
    let _ = writeln!(
        out,
        "serving {} (version 1 of {}): {}",
        args.fixtures.display(),
        state["versions"],
        state["tables"]
    );
    let _ = writeln!(
        out,
        "point oppsync at it: DYNAMICS_URL={url} DYNAMICS_TOKEN_URL={url}/oppsync-sim/oauth2/v2.0/token DYNAMICS_CLIENT_ID={} DYNAMICS_CLIENT_SECRET=...",
        args.client_id
    );
    let _ = writeln!(
        out,
        "control: GET {url}/sim/state, POST {url}/sim/advance, POST {url}/sim/expire-deltas, POST {url}/sim/faults"
    );
    let _ = out.flush();
    drop(out);
    sim.wait();
    Ok(Outcome::Done)
}

fn config_from(args: &SimMarketoArgs) -> Result<SimConfig> {
    if !(0.0..=1.0).contains(&args.transient_rate) {
        return Err(usage(format!(
            "--transient-rate {} must be between 0 and 1",
            args.transient_rate
        )));
    }
    Ok(SimConfig {
        client_id: args.client_id.clone(),
        client_secret: args.client_secret.clone(),
        token_ttl: std::time::Duration::from_secs(args.token_ttl),
        rate_limit_calls: args.rate_limit_calls.max(1),
        rate_limit_window: std::time::Duration::from_secs(args.rate_limit_window.max(1)),
        concurrency: args.concurrency.max(1),
        daily_quota: args.daily_quota,
        latency: std::time::Duration::from_millis(args.latency_ms),
        latency_jitter: std::time::Duration::from_millis(args.latency_jitter_ms),
        transient_rate: args.transient_rate,
        seed: args.seed,
        native_crm_sync: args.native_crm_sync,
        ..SimConfig::default()
    })
}
