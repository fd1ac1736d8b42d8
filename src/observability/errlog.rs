//! The error log: nginx-shaped lines behind the `log` crate facade.
//!
//! Lines look like nginx's, `2026/11/22 13:00:00 [error] 1234#1: message`, so that operators and
//! Test::Nginx-style `--- error_log` checks can grep `[error]`/`[warn]` exactly as under nginx. The
//! `#N` is the worker id (0 for the main thread). Writes are unbuffered, one `write` per line on an
//! `O_APPEND` file, so concurrent workers never interleave partial lines and nothing is lost on a
//! crash; the error log is low-volume by design.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

use super::clock;

/// nginx's error-log levels, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NginxLevel {
    Emerg,
    Alert,
    Crit,
    Error,
    Warn,
    Notice,
    Info,
    Debug,
}

impl NginxLevel {
    /// Parses an nginx level name (`warn`, `error`, …).
    pub fn parse(s: &str) -> Option<NginxLevel> {
        Some(match s {
            "emerg" => NginxLevel::Emerg,
            "alert" => NginxLevel::Alert,
            "crit" => NginxLevel::Crit,
            "error" => NginxLevel::Error,
            "warn" => NginxLevel::Warn,
            "notice" => NginxLevel::Notice,
            "info" => NginxLevel::Info,
            "debug" => NginxLevel::Debug,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NginxLevel::Emerg => "emerg",
            NginxLevel::Alert => "alert",
            NginxLevel::Crit => "crit",
            NginxLevel::Error => "error",
            NginxLevel::Warn => "warn",
            NginxLevel::Notice => "notice",
            NginxLevel::Info => "info",
            NginxLevel::Debug => "debug",
        }
    }

    /// The level of a `log` record. `log` has no notice/crit/alert/emerg, so those are carried
    /// in the record's target (`log::info!(target: "notice", …)`).
    fn of(record: &Record<'_>) -> NginxLevel {
        NginxLevel::of_meta(record.metadata())
    }

    fn of_meta(meta: &Metadata<'_>) -> NginxLevel {
        match (meta.level(), meta.target()) {
            (_, "emerg") => NginxLevel::Emerg,
            (_, "alert") => NginxLevel::Alert,
            (_, "crit") => NginxLevel::Crit,
            (_, "notice") => NginxLevel::Notice,
            (Level::Error, _) => NginxLevel::Error,
            (Level::Warn, _) => NginxLevel::Warn,
            (Level::Info, _) => NginxLevel::Info,
            (Level::Debug | Level::Trace, _) => NginxLevel::Debug,
        }
    }
}

thread_local! {
    static WORKER_ID: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as worker `id` (shown as `pid#id` in log lines).
pub fn set_worker_id(id: usize) {
    WORKER_ID.with(|w| w.set(id));
}

enum Sink {
    Stderr,
    File(File),
}

struct ErrorLog {
    /// The most verbose level written, as `NginxLevel as usize`.
    level: AtomicUsize,
    sink: Mutex<Sink>,
}

static LOGGER: ErrorLog = ErrorLog {
    level: AtomicUsize::new(NginxLevel::Warn as usize),
    sink: Mutex::new(Sink::Stderr),
};

impl Log for ErrorLog {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        NginxLevel::of_meta(meta) as usize <= self.level.load(Ordering::Relaxed)
    }

    fn log(&self, record: &Record<'_>) {
        let level = NginxLevel::of(record);
        if level as usize > self.level.load(Ordering::Relaxed) {
            return;
        }
        let mut line = String::with_capacity(128);
        clock::push_errlog_time(&mut line);
        let worker = WORKER_ID.with(|w| w.get());
        use std::fmt::Write as _;
        let _ = writeln!(
            line,
            " [{}] {}#{}: {}",
            level.as_str(),
            std::process::id(),
            worker,
            record.args()
        );
        let mut sink = match self.sink.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        // A failed log write has nowhere better to go; dropping it keeps requests flowing.
        let _ = match &mut *sink {
            Sink::Stderr => std::io::stderr().write_all(line.as_bytes()),
            Sink::File(f) => f.write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {}
}

/// Installs the logger (idempotent), writing to stderr at `warn` until [`configure`] is called.
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Trace);
    }
}

/// The most verbose level currently written (for `ngx.errlog.get_sys_filter_level`).
pub fn level() -> NginxLevel {
    const ALL: [NginxLevel; 8] = [
        NginxLevel::Emerg,
        NginxLevel::Alert,
        NginxLevel::Crit,
        NginxLevel::Error,
        NginxLevel::Warn,
        NginxLevel::Notice,
        NginxLevel::Info,
        NginxLevel::Debug,
    ];
    let n = LOGGER.level.load(Ordering::Relaxed);
    ALL.get(n).copied().unwrap_or(NginxLevel::Debug)
}

/// Sends the log to `path` (created with its directory if needed) at `level`.
pub fn configure(path: &Path, level: NginxLevel) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let mut sink = match LOGGER.sink.lock() {
        Ok(s) => s,
        Err(poisoned) => poisoned.into_inner(),
    };
    *sink = Sink::File(file);
    LOGGER.level.store(level as usize, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_order_like_nginx() {
        for name in [
            "emerg", "alert", "crit", "error", "warn", "notice", "info", "debug",
        ] {
            assert_eq!(NginxLevel::parse(name).map(|l| l.as_str()), Some(name));
        }
        assert!(NginxLevel::Error < NginxLevel::Warn);
        assert_eq!(NginxLevel::parse("verbose"), None);
    }
}
