//! Time functions: `ngx.time`, `now`, `update_time`, `today`, `localtime`, `utctime`,
//! `http_time`, `cookie_time`, `parse_http_time`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mlua::{Lua, Table, Value};

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// `ngx.now()`: seconds since the epoch, with milliseconds (as nginx keeps its time). Also
/// what the FFI entry point returns (`lua::ffi_entry`); `ngx.time()` is its whole part.
pub fn now_secs() -> f64 {
    now().as_millis() as f64 / 1000.0
}

fn tm(secs: i64, local: bool) -> libc::tm {
    // SAFETY: both functions only write into `out`, which we own; a zeroed `tm` is valid.
    let mut out: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = secs as libc::time_t;
    unsafe {
        if local {
            libc::localtime_r(&t, &mut out);
        } else {
            libc::gmtime_r(&t, &mut out);
        }
    }
    out
}

fn ymd_hms(t: &libc::tm) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.tm_year + 1900,
        t.tm_mon + 1,
        t.tm_mday,
        t.tm_hour,
        t.tm_min,
        t.tm_sec
    )
}

/// `Thu, 18 Nov 2010 11:27:35 GMT`.
pub fn http_time(secs: i64) -> String {
    let t = tm(secs, false);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[t.tm_wday.clamp(0, 6) as usize],
        t.tm_mday,
        MONTHS[t.tm_mon.clamp(0, 11) as usize],
        t.tm_year + 1900,
        t.tm_hour,
        t.tm_min,
        t.tm_sec
    )
}

/// `Thu, 18-Nov-10 11:27:35 GMT` (two-digit years, as nginx writes cookie expiry).
pub fn cookie_time(secs: i64) -> String {
    let t = tm(secs, false);
    format!(
        "{}, {:02}-{}-{:02} {:02}:{:02}:{:02} GMT",
        DAYS[t.tm_wday.clamp(0, 6) as usize],
        t.tm_mday,
        MONTHS[t.tm_mon.clamp(0, 11) as usize],
        (t.tm_year + 1900) % 100,
        t.tm_hour,
        t.tm_min,
        t.tm_sec
    )
}

pub fn register(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    // Both replaced by FFI wrappers at VM setup (`lua::ffi_entry`): a call a trace compiles.
    ngx.set(
        "time",
        lua.create_function(|_, ()| Ok(now().as_secs() as i64))?,
    )?;
    ngx.set("now", lua.create_function(|_, ()| Ok(now_secs()))?)?;
    // moongate reads the clock when asked, so there is no cached time to refresh.
    ngx.set("update_time", lua.create_function(|_, ()| Ok(()))?)?;
    ngx.set(
        "today",
        lua.create_function(|_, ()| {
            let t = tm(now().as_secs() as i64, true);
            Ok(format!(
                "{:04}-{:02}-{:02}",
                t.tm_year + 1900,
                t.tm_mon + 1,
                t.tm_mday
            ))
        })?,
    )?;
    ngx.set(
        "localtime",
        lua.create_function(|_, ()| Ok(ymd_hms(&tm(now().as_secs() as i64, true))))?,
    )?;
    ngx.set(
        "utctime",
        lua.create_function(|_, ()| Ok(ymd_hms(&tm(now().as_secs() as i64, false))))?,
    )?;
    ngx.set(
        "http_time",
        lua.create_function(|_, secs: f64| Ok(http_time(secs as i64)))?,
    )?;
    ngx.set(
        "cookie_time",
        lua.create_function(|_, secs: f64| Ok(cookie_time(secs as i64)))?,
    )?;
    ngx.set(
        "parse_http_time",
        lua.create_function(|_, s: String| {
            Ok(match httpdate::parse_http_date(&s) {
                Ok(t) => Value::Integer(
                    t.duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0),
                ),
                Err(_) => Value::Nil,
            })
        })?,
    )?;
    Ok(())
}
