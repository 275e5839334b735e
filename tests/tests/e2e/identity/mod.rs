//! Identity and access end to end: tokens and their forgeries, what each role and owner may
//! do on both APIs, accounts (reset, brute force, bootstrap), the signed payments webhook,
//! and that no password or hash leaks anywhere.

mod access;
mod accounts;
mod queries;
mod secrets;
mod tokens;
mod webhook;
