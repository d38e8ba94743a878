//! The Marketo side of the pipeline: the REST client (`client`, `limiter`), the check of the
//! instance's fields before anything is sent (`describe`), and the push that sends a plan and
//! records what Marketo answered (`push`).

pub(crate) mod client;
pub(crate) mod describe;
pub(crate) mod limiter;
pub(crate) mod push;
pub(crate) mod recheck;
