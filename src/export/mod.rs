//! The Marketo side of the pipeline: the REST client (`client`, `limiter`) and the push that
//! sends a plan and records what Marketo answered (`push`).

pub(crate) mod client;
pub(crate) mod limiter;
pub(crate) mod push;
