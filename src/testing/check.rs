//! Response and error-log checks: each compares one section of a block with what the gateway
//! answered or logged, and returns a failure message with both sides when they differ.

use pcre2::bytes::{Regex, RegexBuilder};

use super::block::Value;
use super::client::Response;

/// A Perl pattern (`qr//` with its modifiers) compiled for PCRE2, Perl's own regex dialect.
pub fn compile(pattern: &str, flags: &str) -> Result<Regex, String> {
    let mut b = RegexBuilder::new();
    b.utf(true);
    for f in flags.chars() {
        match f {
            'i' => {
                b.caseless(true);
            }
            'm' => {
                b.multi_line(true);
            }
            's' => {
                b.dotall(true);
            }
            'x' => {
                b.extended(true);
            }
            _ => {}
        }
    }
    b.build(pattern)
        .map_err(|e| format!("cannot compile /{pattern}/{flags}: {e}"))
}

fn is_match(re: &Regex, hay: &str) -> bool {
    re.is_match(hay.as_bytes()).unwrap_or(false)
}

/// The expectation for request `i` of a block: the i-th item of a list, else the value.
pub fn nth(value: &Value, i: usize) -> Option<&Value> {
    match value {
        Value::List(items) => items.get(i),
        v => Some(v),
    }
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a char boundary.
fn prefix_at_most(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn show(s: &str) -> String {
    if s.len() > 2000 {
        format!("{:?}… ({} bytes)", prefix_at_most(s, 2000), s.len())
    } else {
        format!("{s:?}")
    }
}

/// A line-by-line view of two texts, marking the first line that differs.
pub fn diff(expected: &str, got: &str) -> String {
    let mut out = String::new();
    let e: Vec<&str> = expected.split_inclusive('\n').collect();
    let g: Vec<&str> = got.split_inclusive('\n').collect();
    let first = (0..e.len().max(g.len()))
        .find(|&i| e.get(i) != g.get(i))
        .unwrap_or(0);
    out.push_str(&format!("    expected: {}\n", show(expected)));
    out.push_str(&format!("    got:      {}\n", show(got)));
    out.push_str(&format!(
        "    first difference at line {}: expected {:?}, got {:?}",
        first + 1,
        e.get(first).copied().unwrap_or("<end>"),
        g.get(first).copied().unwrap_or("<end>")
    ));
    out
}

/// `--- error_code`: the status, per request.
pub fn status(expected: &Value, resp: &Response) -> Result<(), String> {
    let want = expected.text().map(str::trim).unwrap_or_default();
    if want != resp.status.to_string() {
        return Err(format!("error_code: expected {want}, got {}", resp.status));
    }
    Ok(())
}

/// `--- error_code_like`: a pattern the status (as decimal text) must match.
pub fn status_like(expected: &Value, resp: &Response) -> Result<(), String> {
    let (pattern, flags) = match expected {
        Value::Text(p) => (p.trim().to_string(), String::new()),
        Value::Regex { pattern, flags } => (pattern.clone(), flags.clone()),
        _ => return Err("error_code_like: unusable expectation".into()),
    };
    let re = compile(&pattern, &flags)?;
    let got = resp.status.to_string();
    if is_match(&re, &got) {
        return Ok(());
    }
    Err(format!(
        "error_code_like: status {got} does not match /{pattern}/{flags}"
    ))
}

/// `--- response_body`: exact text, or a `qr//` item that must match.
pub fn body(expected: &Value, got: &str) -> Result<(), String> {
    match expected {
        Value::Text(want) if want == got => Ok(()),
        Value::Text(want) => Err(format!("response_body differs:\n{}", diff(want, got))),
        Value::Regex { pattern, flags } => body_like(pattern, flags, got, true),
        _ => Err("response_body: unusable expectation".into()),
    }
}

/// `--- response_body_like` (`want == true`) or `_unlike`.
pub fn body_like(pattern: &str, flags: &str, got: &str, want: bool) -> Result<(), String> {
    let re = compile(pattern, flags)?;
    if is_match(&re, got) == want {
        return Ok(());
    }
    Err(format!(
        "response body {} /{pattern}/{flags}:\n    got: {}",
        if want { "does not match" } else { "matches" },
        show(got)
    ))
}

pub fn like_value(expected: &Value, got: &str, want: bool) -> Result<(), String> {
    match expected {
        // Test::Nginx treats a plain `_like` section as a pattern with /s.
        Value::Text(p) => body_like(p.trim_end_matches('\n'), "s", got, want),
        Value::Regex { pattern, flags } => body_like(pattern, flags, got, want),
        _ => Err("response_body_like: unusable expectation".into()),
    }
}

fn header_value(resp: &Response, name: &str) -> Option<String> {
    let values = resp.header(name);
    (!values.is_empty()).then(|| values.join(", "))
}

/// `--- response_headers`: `Name: value` exact; `!Name` or `Name:` empty means absent.
pub fn headers(expected: &str, resp: &Response) -> Vec<String> {
    let mut fails = Vec::new();
    for line in expected.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(name) = line.strip_prefix('!') {
            let name = name.trim();
            if let Some(v) = header_value(resp, name) {
                fails.push(format!("response header {name} must be absent, got {v:?}"));
            }
            continue;
        }
        let Some((name, want)) = line.split_once(':') else {
            fails.push(format!("response_headers line {line:?} has no ':'"));
            continue;
        };
        let (name, want) = (name.trim(), want.trim());
        let got = header_value(resp, name);
        match (want.is_empty(), got) {
            (true, None) => {}
            (true, Some(g)) if g.is_empty() => {}
            (true, Some(g)) => {
                fails.push(format!("response header {name} must be absent, got {g:?}"))
            }
            (false, Some(g)) if g == want => {}
            (false, g) => fails.push(format!(
                "response header {name}: expected {want:?}, got {}",
                g.map(|g| format!("{g:?}"))
                    .unwrap_or_else(|| "no such header".into())
            )),
        }
    }
    fails
}

/// `--- response_headers_like`: `Name: pattern`.
pub fn headers_like(expected: &str, resp: &Response) -> Vec<String> {
    let mut fails = Vec::new();
    for line in expected.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((name, pat)) = line.split_once(':') else {
            fails.push(format!("response_headers_like line {line:?} has no ':'"));
            continue;
        };
        let (name, pat) = (name.trim(), pat.trim());
        let got = header_value(resp, name).unwrap_or_default();
        match compile(pat, "") {
            Ok(re) if is_match(&re, &got) => {}
            Ok(_) => fails.push(format!(
                "response header {name}: {got:?} does not match /{pat}/"
            )),
            Err(e) => fails.push(e),
        }
    }
    fails
}

/// The patterns of an `error_log`/`no_error_log` section: one per line of plain text, or the
/// items of an `eval` list (strings are substrings, `qr//` are patterns).
pub fn log_patterns(value: &Value) -> Vec<Value> {
    match value {
        Value::Text(t) => t
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| Value::Text(l.to_string()))
            .collect(),
        Value::List(items) => items.iter().flat_map(log_patterns).collect(),
        v => vec![v.clone()],
    }
}

fn log_has(pattern: &Value, log: &str) -> Result<bool, String> {
    match pattern {
        Value::Text(t) => Ok(log.contains(t.as_str())),
        Value::Regex { pattern, flags } => Ok(is_match(&compile(pattern, flags)?, log)),
        _ => Err("unusable log pattern".into()),
    }
}

fn describe(p: &Value) -> String {
    match p {
        Value::Text(t) => format!("{t:?}"),
        Value::Regex { pattern, flags } => format!("/{pattern}/{flags}"),
        _ => "?".into(),
    }
}

/// `--- error_log`: the patterns that are still missing from `log`.
pub fn missing_from_log(value: &Value, log: &str) -> Vec<String> {
    log_patterns(value)
        .iter()
        .filter_map(|p| match log_has(p, log) {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "error_log: {} not found in the error log",
                describe(p)
            )),
            Err(e) => Some(e),
        })
        .collect()
}

/// `--- no_error_log`: every pattern that appears, with the offending line.
pub fn present_in_log(value: &Value, log: &str) -> Vec<String> {
    log_patterns(value)
        .iter()
        .filter_map(|p| match log_has(p, log) {
            Ok(false) => None,
            Ok(true) => {
                let line = log
                    .lines()
                    .find(|l| log_has(p, l).unwrap_or(false))
                    .unwrap_or_default();
                Some(format!(
                    "no_error_log: {} found in the error log: {line}",
                    describe(p)
                ))
            }
            Err(e) => Some(e),
        })
        .collect()
}

/// `--- grep_error_log` + `grep_error_log_out`: every match in the log, each followed by a
/// newline, compared with the expected output.
pub fn grep_log(pattern: &Value, expected: &Value, log: &str) -> Result<(), String> {
    let mut out = String::new();
    match pattern {
        Value::Text(t) => {
            let t = t.trim_end_matches('\n');
            for line in log.lines() {
                for _ in line.matches(t) {
                    out.push_str(t);
                    out.push('\n');
                }
            }
        }
        Value::Regex { pattern, flags } => {
            let re = compile(pattern, flags)?;
            for line in log.lines() {
                for m in re.find_iter(line.as_bytes()).flatten() {
                    out.push_str(&String::from_utf8_lossy(m.as_bytes()));
                    out.push('\n');
                }
            }
        }
        _ => return Err("grep_error_log: unusable pattern".into()),
    }
    match expected {
        Value::Text(want) if *want == out => Ok(()),
        Value::Text(want) => Err(format!("grep_error_log_out differs:\n{}", diff(want, &out))),
        Value::Regex { pattern, flags } => {
            if is_match(&compile(pattern, flags)?, &out) {
                Ok(())
            } else {
                Err(format!(
                    "grep_error_log_out: {out:?} does not match /{pattern}/{flags}"
                ))
            }
        }
        _ => Err("grep_error_log_out: unusable expectation".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(headers: &[(&str, &str)]) -> Response {
        Response {
            status: 200,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: vec![],
        }
    }

    #[test]
    fn absent_headers_are_written_with_a_bang_or_an_empty_value() {
        let r = resp(&[("X-A", "1")]);
        assert!(headers("X-A: 1\n!X-B\nX-C:", &r).is_empty());
        assert_eq!(headers("!X-A", &r).len(), 1);
        assert_eq!(headers("X-A: 2", &r).len(), 1);
    }

    #[test]
    fn grep_collects_every_match_one_per_line() {
        let log = "a [warn] x=1 y x=2\nb [warn] x=3\n";
        let re = Value::Regex {
            pattern: "x=\\d".into(),
            flags: "".into(),
        };
        assert!(grep_log(&re, &Value::Text("x=1\nx=2\nx=3\n".into()), log).is_ok());
        assert!(grep_log(&re, &Value::Text("x=1\n".into()), log).is_err());
    }

    #[test]
    fn log_sections_take_lines_or_eval_items() {
        let log = "2026/01/01 [error] 1#1: boom\n";
        assert!(missing_from_log(&Value::Text("boom\n[error]\n".into()), log).is_empty());
        assert_eq!(
            present_in_log(&Value::Text("[error]\n".into()), log).len(),
            1
        );
        let re = Value::List(vec![Value::Regex {
            pattern: "bo+m".into(),
            flags: "".into(),
        }]);
        assert!(missing_from_log(&re, log).is_empty());
    }
}
