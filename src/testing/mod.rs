//! `moongate test`: a Test::Nginx-style runner for `.t` files, moongate's own and APISIX's.
//!
//! Per file: Perl runs the prologue with our stand-ins ([`perl`]) and hands over the blocks
//! ([`block`]); per block, the nginx snippets and YAML sections become moongate files
//! ([`translate`]), a real gateway process serves them on the test port and a second process
//! serves the test upstreams ([`gateway`]), the requests go over raw sockets ([`client`]) and
//! the answers and the error log are compared with the block ([`check`]); [`report`] prints
//! the result. Blocks of one file share one gateway (and so its config store) unless a block's
//! `config.yaml` differs, which restarts it; every file starts clean.

pub mod block;
pub mod check;
pub mod client;
pub mod gateway;
pub mod nginx;
pub mod perl;
pub mod report;
pub mod runner;
pub mod translate;

pub use report::Summary;
pub use runner::{Options, run};
