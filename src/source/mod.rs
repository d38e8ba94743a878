//! Where records come from. Every source yields Web API collection pages (`page::Page`) that
//! `stage` writes the same way, whatever their origin: today fixture folders and the live
//! Web API (`webapi`, with `entra` for tokens). Sources read; they never write to the database.

pub(crate) mod entra;
pub(crate) mod fixtures;
pub(crate) mod page;
pub(crate) mod webapi;
