//! A cheap monotonic clock for accounting the time each plugin run takes.
//!
//! Every plugin run of every request is timed, so a clock read is on the request path several
//! times per request. `Instant::now()` goes through the vDSO's `clock_gettime` and its
//! conversion to seconds and nanoseconds (about 40 instructions, and as many again to subtract
//! two of them). Where the CPU's time-stamp counter runs at a constant rate and on across sleep
//! states (`constant_tsc` and `nonstop_tsc`, as Linux reports them; the kernel then uses it as
//! its own clock source), a reading is one `rdtsc` and a span one subtraction: spans are kept as
//! ticks and turned into time only when they are read ([`Span::duration`]). Elsewhere (another
//! architecture, a counter Linux does not call stable) a tick is a nanosecond since the first
//! reading.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A reading of the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticks(u64);

/// The ticks between two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(u64);

/// The clock's source, picked on the first reading.
struct Source {
    tsc: bool,
    /// The first reading, against which the counter's rate is measured (and, without the
    /// counter, the origin of the nanoseconds).
    anchor: (u64, Instant),
}

static SOURCE: OnceLock<Source> = OnceLock::new();
/// Counter ticks per nanosecond, measured once enough time has passed since the anchor.
static RATE: OnceLock<f64> = OnceLock::new();

/// How long after the anchor the counter's rate is measured: long enough that the two clock
/// reads' own jitter is far below a part in a thousand.
const RATE_AFTER: Duration = Duration::from_millis(50);

fn source() -> &'static Source {
    SOURCE.get_or_init(|| {
        let tsc = cfg!(target_arch = "x86_64") && stable_tsc();
        let now = Instant::now();
        Source {
            tsc,
            anchor: (if tsc { rdtsc() } else { 0 }, now),
        }
    })
}

/// Linux calls the counter usable as a clock when the CPU flags say it runs at a constant rate
/// and does not stop.
fn stable_tsc() -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return false;
    };
    let Some(flags) = info.lines().find(|l| l.starts_with("flags")) else {
        return false;
    };
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    has("constant_tsc") && has("nonstop_tsc")
}

#[cfg(target_arch = "x86_64")]
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` has no preconditions on x86_64; it only reads the counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn rdtsc() -> u64 {
    0
}

impl Ticks {
    /// Reads the clock.
    #[inline]
    pub fn now() -> Ticks {
        let s = source();
        if s.tsc {
            Ticks(rdtsc())
        } else {
            Ticks(s.anchor.1.elapsed().as_nanos() as u64)
        }
    }

    /// The ticks from `earlier` to this reading (zero when `earlier` is later).
    #[inline]
    pub fn since(self, earlier: Ticks) -> Span {
        Span(self.0.saturating_sub(earlier.0))
    }
}

impl Span {
    /// The span as time. The first call after the clock started measures the counter's rate
    /// (waiting, the one time, until [`RATE_AFTER`] has passed since the first reading).
    pub fn duration(self) -> Duration {
        let s = source();
        if !s.tsc {
            return Duration::from_nanos(self.0);
        }
        let rate = *RATE.get_or_init(|| {
            let (t0, i0) = s.anchor;
            while i0.elapsed() < RATE_AFTER {
                std::thread::sleep(RATE_AFTER.saturating_sub(i0.elapsed()));
            }
            let (t1, i1) = (rdtsc(), Instant::now());
            let ns = (i1 - i0).as_nanos() as f64;
            let ticks = t1.saturating_sub(t0) as f64;
            if ns > 0.0 && ticks > 0.0 {
                ticks / ns
            } else {
                1.0
            }
        });
        Duration::from_nanos((self.0 as f64 / rate) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_measures_the_time_that_passed() {
        let start = Ticks::now();
        let wall = Instant::now();
        std::thread::sleep(Duration::from_millis(120));
        let span = Ticks::now().since(start);
        let measured = span.duration();
        let elapsed = wall.elapsed();
        // Within 10 % of what Instant measured over the same sleep.
        let diff = measured.abs_diff(elapsed);
        assert!(
            diff < elapsed / 10,
            "measured {measured:?}, Instant says {elapsed:?}"
        );
    }

    #[test]
    fn readings_never_go_back_and_a_reversed_span_is_zero() {
        let a = Ticks::now();
        let b = Ticks::now();
        assert!(b >= a);
        assert_eq!(a.since(b), Span::default());
    }
}
