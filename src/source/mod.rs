//! Where records come from. Every source yields Web API collection pages (`page::Page`) that
//! `stage` writes the same way, whatever their origin: today fixture folders and the live
//! Web API (`webapi`, with `entra` for tokens, `paging` for the links it may follow, and
//! `strategy` for where a pull starts and how it falls back). Sources read; they never write to
//! the database.

pub(crate) mod entra;
pub(crate) mod fixtures;
pub(crate) mod page;
pub(crate) mod paging;
pub(crate) mod strategy;
pub(crate) mod strict;
pub(crate) mod webapi;
