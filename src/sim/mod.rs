//! The local simulators of the Marketo REST API and the Dataverse Web API, served on 127.0.0.1
//! only, so that users and tests can rehearse a sync without the real services.

pub mod dynamics;
pub(crate) mod http;
pub mod marketo;
