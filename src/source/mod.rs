//! Where records come from. Every source yields Web API collection pages (`page::Page`) that
//! `stage` writes the same way, whatever their origin: today fixture folders, later the live
//! Web API. Sources read; they never write to the database.

pub(crate) mod fixtures;
pub(crate) mod page;
