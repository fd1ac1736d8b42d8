//! Client connection and request counts, as nginx's `stub_status` keeps them: process-wide
//! atomics the server updates as connections open, read a request head, have a request in
//! flight, and close.
//!
//! APISIX's exporter reads nginx's counters through FFI (`ffi.C.ngx_stat_active[0]` …): the same
//! names are exported from the moongate binary as pointers to these counters (see `build.rs`),
//! so that code reads moongate's numbers unmodified.
//!
//! What the numbers mean here:
//! - `accepted`, `handled`: client connections accepted (every accepted one is handled);
//! - `active`: client connections open now;
//! - `reading`: HTTP/1 connections in the middle of receiving a request head;
//! - `writing`: requests being processed (from the parsed head to the last byte of the
//!   response; an HTTP/2 connection counts once per stream);
//! - `waiting`: open connections doing neither (idle keep-alive, or not yet sent a byte);
//! - `requests`: requests received since start.

use std::sync::atomic::{AtomicU64, Ordering};

static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static HANDLED: AtomicU64 = AtomicU64::new(0);
static ACTIVE: AtomicU64 = AtomicU64::new(0);
static READING: AtomicU64 = AtomicU64::new(0);
static WRITING: AtomicU64 = AtomicU64::new(0);
static WAITING: AtomicU64 = AtomicU64::new(0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// A C `uint64_t *` naming one counter.
#[repr(transparent)]
pub struct StatPtr(&'static AtomicU64);

// nginx's names, so that `ffi.C.ngx_stat_*` finds them (exported by the binary's link flags).
#[unsafe(no_mangle)]
#[used]
pub static ngx_stat_accepted: StatPtr = StatPtr(&ACCEPTED);
#[unsafe(no_mangle)]
#[used]
pub static ngx_stat_handled: StatPtr = StatPtr(&HANDLED);
#[unsafe(no_mangle)]
#[used]
pub static ngx_stat_requests: StatPtr = StatPtr(&REQUESTS);
#[unsafe(no_mangle)]
#[used]
pub static ngx_stat_active: StatPtr = StatPtr(&ACTIVE);
#[unsafe(no_mangle)]
#[used]
pub static ngx_stat_reading: StatPtr = StatPtr(&READING);
#[unsafe(no_mangle)]
#[used]
pub static ngx_stat_writing: StatPtr = StatPtr(&WRITING);
#[unsafe(no_mangle)]
#[used]
pub static ngx_stat_waiting: StatPtr = StatPtr(&WAITING);

/// `waiting` is what the others leave; kept as a counter of its own for the FFI readers.
fn settle_waiting() {
    let busy = READING.load(Ordering::Relaxed) + WRITING.load(Ordering::Relaxed);
    WAITING.store(
        ACTIVE.load(Ordering::Relaxed).saturating_sub(busy),
        Ordering::Relaxed,
    );
}

fn dec(c: &AtomicU64) {
    // Never below zero, whatever the order of a racing pair of updates.
    let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(1))
    });
}

/// An accepted client connection; counts as active until dropped.
pub struct ConnGuard(());

impl ConnGuard {
    pub fn open() -> ConnGuard {
        ACCEPTED.fetch_add(1, Ordering::Relaxed);
        HANDLED.fetch_add(1, Ordering::Relaxed);
        ACTIVE.fetch_add(1, Ordering::Relaxed);
        settle_waiting();
        ConnGuard(())
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        dec(&ACTIVE);
        settle_waiting();
    }
}

/// A connection started (`true`) or finished (`false`) receiving a request head.
pub fn reading(started: bool) {
    if started {
        READING.fetch_add(1, Ordering::Relaxed);
    } else {
        dec(&READING);
    }
    settle_waiting();
}

/// A request's handling began.
pub fn request_begin() {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    WRITING.fetch_add(1, Ordering::Relaxed);
    settle_waiting();
}

/// A request's response was sent or abandoned.
pub fn request_end() {
    dec(&WRITING);
    settle_waiting();
}

/// The counters now, by their `stub_status` names (`total` is the request count).
pub fn snapshot() -> [(&'static str, u64); 7] {
    let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
    [
        ("active", l(&ACTIVE)),
        ("accepted", l(&ACCEPTED)),
        ("handled", l(&HANDLED)),
        ("total", l(&REQUESTS)),
        ("reading", l(&READING)),
        ("writing", l(&WRITING)),
        ("waiting", l(&WAITING)),
    ]
}
