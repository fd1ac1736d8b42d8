//! Cached, formatted wall-clock times for log lines.
//!
//! nginx formats its time strings once per second, not per line; we do the same per thread, so a
//! log line costs a string copy, not a `localtime_r` + format.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

struct Cached {
    second: i64,
    /// `2026/11/22 13:00:00` (error log).
    errlog: String,
    /// `22/Nov/2026:13:00:00 +0000` (`$time_local`).
    local: String,
    /// `2026-11-22T13:00:00+00:00` (`$time_iso8601`).
    iso8601: String,
}

thread_local! {
    static CACHE: RefCell<Cached> = const { RefCell::new(Cached {
        second: i64::MIN,
        errlog: String::new(),
        local: String::new(),
        iso8601: String::new(),
    }) };
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Seconds and milliseconds since the epoch.
pub fn now_unix() -> (i64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_millis())
}

fn refresh(c: &mut Cached, second: i64) {
    // SAFETY: localtime_r writes only into `tm`, which we own; a zeroed `tm` is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = second as libc::time_t;
    unsafe { libc::localtime_r(&t, &mut tm) };
    let (y, mo, d, h, mi, s) = (
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
    );
    let off = tm.tm_gmtoff / 60;
    let (sign, off) = if off < 0 { ('-', -off) } else { ('+', off) };
    c.second = second;
    c.errlog = format!("{y:04}/{mo:02}/{d:02} {h:02}:{mi:02}:{s:02}");
    let mon = MONTHS[(tm.tm_mon.clamp(0, 11)) as usize];
    c.local = format!(
        "{d:02}/{mon}/{y:04}:{h:02}:{mi:02}:{s:02} {sign}{:02}{:02}",
        off / 60,
        off % 60
    );
    c.iso8601 = format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{sign}{:02}:{:02}",
        off / 60,
        off % 60
    );
}

fn with<R>(f: impl FnOnce(&Cached) -> R) -> R {
    let (sec, _) = now_unix();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.second != sec {
            refresh(&mut c, sec);
        }
        f(&c)
    })
}

/// Appends the error-log timestamp (`2026/11/22 13:00:00`).
pub fn push_errlog_time(out: &mut String) {
    with(|c| out.push_str(&c.errlog));
}

/// Appends `$time_local`.
pub fn push_time_local(out: &mut String) {
    with(|c| out.push_str(&c.local));
}

/// Appends `$time_iso8601`.
pub fn push_time_iso8601(out: &mut String) {
    with(|c| out.push_str(&c.iso8601));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errlog_time_has_nginx_shape() {
        let mut s = String::new();
        push_errlog_time(&mut s);
        let b = s.as_bytes();
        assert_eq!(s.len(), 19, "{s}");
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16]),
            (b'/', b'/', b' ', b':', b':')
        );
    }

    #[test]
    fn time_local_has_nginx_shape() {
        let mut s = String::new();
        push_time_local(&mut s);
        // 22/Nov/2026:13:00:00 +0000
        assert_eq!(s.len(), 26, "{s}");
        assert!(MONTHS.contains(&&s[3..6]), "{s}");
    }
}
