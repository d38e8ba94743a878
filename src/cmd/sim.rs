//! `oppsync sim marketo ...`: run the Marketo simulator in the foreground.

use std::io::Write;

use anyhow::Result;

use crate::cli::{SimMarketoArgs, SimTarget};
use crate::exit::{Outcome, usage};
use crate::sim::marketo::{MarketoSim, SimConfig};

pub(crate) fn run(target: &SimTarget) -> Result<Outcome> {
    let SimTarget::Marketo(args) = target else {
        return Err(usage(
            "`oppsync sim dynamics` is not available yet in this build",
        ));
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
        transient_rate: args.transient_rate,
        seed: args.seed,
        ..SimConfig::default()
    })
}
