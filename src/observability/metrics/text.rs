//! The Prometheus text exposition format (version 0.0.4), written from a namespace's families.
//!
//! Each family is one block: `# HELP`, `# TYPE`, then its series sorted by label values; a
//! histogram's series give their cumulative `_bucket` lines (`le` ascending, then `+Inf`),
//! `_sum` and `_count`. Families without a series are left out, as nginx-lua-prometheus leaves
//! out metrics nothing has written yet.

use std::fmt::Write as _;

use super::store::{Family, Kind, Namespace};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A sample value as Prometheus parses it: integers without a fraction, `+Inf`/`-Inf`/`NaN`.
pub fn push_number(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        // Rust's shortest round-trip form (`0.005`, `1e-7`), which Go's ParseFloat reads.
        let _ = write!(out, "{v:?}");
    }
}

fn push_escaped(out: &mut String, s: &str, quote: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// `{a="x",b="y"}` (with `le` last for a bucket), or nothing when there are no labels.
fn push_labels(out: &mut String, names: &[String], values: &[String], le: Option<&str>) {
    if names.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (n, v) in names.iter().zip(values) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(n);
        out.push_str("=\"");
        push_escaped(out, v, true);
        out.push('"');
    }
    if let Some(le) = le {
        if !first {
            out.push(',');
        }
        out.push_str("le=\"");
        out.push_str(le);
        out.push('"');
    }
    out.push('}');
}

/// Appends one family's block.
pub fn push_family(out: &mut String, f: &Family) {
    f.sweep();
    let series = f.snapshot();
    if series.is_empty() {
        return;
    }
    let def = &f.def;
    out.push_str("# HELP ");
    out.push_str(&def.name);
    out.push(' ');
    push_escaped(out, &def.help, false);
    out.push_str("\n# TYPE ");
    out.push_str(&def.name);
    out.push(' ');
    out.push_str(def.kind.as_str());
    out.push('\n');
    let bounds: Vec<String> = f
        .bounds()
        .iter()
        .map(|b| {
            let mut s = String::new();
            push_number(&mut s, *b);
            s
        })
        .collect();
    for s in series {
        match def.kind {
            Kind::Counter | Kind::Gauge => {
                out.push_str(&def.name);
                push_labels(out, &def.labels, s.labels(), None);
                out.push(' ');
                push_number(out, s.value());
                out.push('\n');
            }
            Kind::Histogram => {
                let (cum, count) = s.cumulative();
                for (b, c) in bounds.iter().zip(cum) {
                    out.push_str(&def.name);
                    out.push_str("_bucket");
                    push_labels(out, &def.labels, s.labels(), Some(b));
                    let _ = writeln!(out, " {c}");
                }
                out.push_str(&def.name);
                out.push_str("_bucket");
                push_labels(out, &def.labels, s.labels(), Some("+Inf"));
                let _ = writeln!(out, " {count}");
                out.push_str(&def.name);
                out.push_str("_sum");
                push_labels(out, &def.labels, s.labels(), None);
                out.push(' ');
                push_number(out, s.value());
                out.push('\n');
                out.push_str(&def.name);
                out.push_str("_count");
                push_labels(out, &def.labels, s.labels(), None);
                let _ = writeln!(out, " {count}");
            }
        }
    }
}

/// The whole namespace, families by name.
pub fn render(ns: &Namespace) -> String {
    let mut out = String::new();
    for f in ns.families() {
        push_family(&mut out, &f);
    }
    out
}
