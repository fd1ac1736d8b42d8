//! lua-resty-expr (v1) expressions, as APISIX uses them in route `vars` and plugin `_meta.filter`.
//!
//! An expression is a JSON array: a list of rules that must all hold, or a logical operator
//! (`AND`, `OR`, `!AND`, `!OR`, any case) followed by rules or nested expressions. A rule is
//! `[var, op, value]`, `[var, "!", op, value]` (negated), or `[var, value]` (equality; the value is
//! lower-cased first, a quirk of lua-resty-expr kept for compatibility). Variables are strings or
//! missing; comparisons follow lua-resty-expr, including its Lua `tonumber` conversions.

use std::borrow::Cow;

use pcre2::bytes::{Regex, RegexBuilder};
use serde_json::Value;

use super::ip::IpSet;

/// A compiled expression. Evaluating it never allocates.
#[derive(Debug, Clone)]
pub struct Expr {
    root: Option<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Logic { op: Logic, kids: Vec<Node> },
    Rule(Rule),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Logic {
    And,
    Or,
    NotAnd,
    NotOr,
}

#[derive(Debug, Clone)]
struct Rule {
    var: String,
    reverse: bool,
    op: Op,
}

/// The right-hand side of `==`/`~=`, typed as the Lua value it would be.
#[derive(Debug, Clone)]
enum Rhs {
    Str(String),
    Num(f64),
    Nil,
    /// A boolean, array or object: never equal to a string variable.
    Other,
}

#[derive(Debug, Clone)]
enum Op {
    Eq(Rhs),
    Ne(Rhs),
    Gt(Option<f64>),
    Ge(Option<f64>),
    Lt(Option<f64>),
    Le(Option<f64>),
    Regex(Regex),
    In(Vec<Rhs>),
    /// `has` needs a list on the left; variables are strings, so it never holds.
    Has,
    IpMatch(IpSet),
}

impl Expr {
    /// Compiles a `vars` value. Errors use lua-resty-expr's words.
    pub fn compile(v: &Value) -> Result<Expr, String> {
        let list = v.as_array().ok_or("rule should be an array")?;
        if list.is_empty() {
            return Ok(Expr { root: None });
        }
        if let Some(first) = list[0].as_str()
            && logic_op(first).is_none()
        {
            return Err("rule should be wrapped inside brackets".into());
        }
        Ok(Expr {
            root: Some(compile_node(list)?),
        })
    }

    /// True when the expression holds for the variables `lookup` returns.
    pub fn eval<'a>(&self, lookup: &dyn Fn(&str) -> Option<Cow<'a, str>>) -> bool {
        match &self.root {
            None => true,
            Some(n) => eval_node(n, lookup),
        }
    }
}

fn logic_op(s: &str) -> Option<Logic> {
    match s.to_ascii_uppercase().as_str() {
        "AND" => Some(Logic::And),
        "OR" => Some(Logic::Or),
        "!AND" => Some(Logic::NotAnd),
        "!OR" => Some(Logic::NotOr),
        _ => None,
    }
}

fn compile_node(list: &[Value]) -> Result<Node, String> {
    if list.is_empty() {
        return Err("rule too short".into());
    }
    if list[0].is_array() {
        let kids = list
            .iter()
            .map(|v| match v.as_array() {
                Some(a) => compile_node(a),
                None => Err("invalid expression".into()),
            })
            .collect::<Result<_, _>>()?;
        return Ok(Node::Logic {
            op: Logic::And,
            kids,
        });
    }
    if let Some(op) = list[0].as_str().and_then(logic_op) {
        if list.len() <= 2 {
            return Err("rule too short".into());
        }
        let kids = list[1..]
            .iter()
            .map(|v| match v.as_array() {
                Some(a) => compile_node(a),
                None => Err("invalid expression".into()),
            })
            .collect::<Result<_, _>>()?;
        return Ok(Node::Logic { op, kids });
    }
    compile_rule(list).map(Node::Rule)
}

/// Lua's `tostring` for the JSON scalars a rule can hold.
fn lua_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        }),
        _ => None,
    }
}

fn rhs(v: &Value) -> Rhs {
    match v {
        Value::String(s) => Rhs::Str(s.clone()),
        Value::Number(n) => n.as_f64().map_or(Rhs::Other, Rhs::Num),
        Value::Null => Rhs::Nil,
        _ => Rhs::Other,
    }
}

fn compile_rule(list: &[Value]) -> Result<Rule, String> {
    let (var, op, value, reverse) = if list.len() == 4 {
        if list[1].as_str() != Some("!") {
            return Err("bad 'not' expression".into());
        }
        (&list[0], Some(&list[2]), list.get(3), true)
    } else {
        (&list[0], list.get(1), list.get(2), false)
    };
    let var = lua_string(var).ok_or("invalid expression")?;
    let op_name = op.and_then(lua_string).map(|s| s.to_ascii_lowercase());
    // A JSON `null` value is present (APISIX decodes it to `ngx.null`, not `nil`), so only a
    // two-element rule takes the `[var, value]` shortcut below.
    let known = |o: &str| {
        matches!(
            o,
            "==" | "~=" | ">" | ">=" | "<" | "<=" | "~~" | "~*" | "in" | "has" | "ipmatch"
        )
    };
    let (op_name, value) = match (op_name, value) {
        // `[var, value]`: equality with the (lower-cased) value.
        (Some(o), None) if !known(&o) => ("==".to_string(), Value::String(o)),
        (Some(o), v) => (o, v.cloned().unwrap_or(Value::Null)),
        (None, _) => return Err("invalid expression".into()),
    };
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => lua_tonumber(s),
        _ => None,
    };
    let op = match op_name.as_str() {
        "==" => Op::Eq(rhs(&value)),
        "~=" => Op::Ne(rhs(&value)),
        ">" => Op::Gt(num(&value)),
        ">=" => Op::Ge(num(&value)),
        "<" => Op::Lt(num(&value)),
        "<=" => Op::Le(num(&value)),
        "~~" | "~*" => {
            // `ngx.re.find` would turn a number into its text, so `["arg_a", "~~", 1]` works.
            let pat = lua_string(&value).ok_or("regex must be a string")?;
            let pat = pat.as_str();
            let re = RegexBuilder::new()
                .caseless(op_name == "~*")
                .jit_if_available(true)
                .build(pat)
                .map_err(|e| format!("failed to compile regex {pat:?}: {e}"))?;
            Op::Regex(re)
        }
        "in" => Op::In(
            value
                .as_array()
                .map(|a| a.iter().map(rhs).collect())
                .unwrap_or_default(),
        ),
        "has" => Op::Has,
        "ipmatch" => {
            let items: Vec<String> = match &value {
                Value::String(s) if !s.is_empty() => vec![s.clone()],
                Value::Array(a) if !a.is_empty() => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or("invalid ip address")?,
                _ => return Err("invalid ip address".into()),
            };
            Op::IpMatch(IpSet::parse(&items)?)
        }
        other => return Err(format!("invalid operator '{other}'")),
    };
    Ok(Rule { var, reverse, op })
}

/// Lua's `tonumber` on a string: an optional sign, then decimal digits with an optional point and
/// exponent, or `0x` hex digits; Lua's white space around it is allowed. Anything else is not a
/// number, including the `inf`/`nan` spellings Rust's float parser would take.
fn lua_tonumber(s: &str) -> Option<f64> {
    let t = s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r'));
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let v = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        // Accumulate in f64: Lua numbers are doubles, so long hex strings round rather than fail.
        hex.chars()
            .filter_map(|c| c.to_digit(16))
            .fold(0f64, |acc, d| acc * 16.0 + f64::from(d))
    } else {
        let starts_like_a_number = body
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_digit() || *b == b'.');
        let only_number_chars = body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
        if !starts_like_a_number || !only_number_chars {
            return None;
        }
        body.parse::<f64>().ok()?
    };
    Some(if neg { -v } else { v })
}

fn str_eq(l: Option<&str>, r: &Rhs) -> bool {
    match (l, r) {
        (None, Rhs::Nil) => true,
        (Some(l), Rhs::Str(r)) => l == r,
        (Some(l), Rhs::Num(r)) => lua_tonumber(l) == Some(*r),
        _ => false,
    }
}

fn eval_rule(r: &Rule, l: Option<&str>) -> bool {
    let cmp = |f: fn(f64, f64) -> bool, rv: &Option<f64>| match (l.and_then(lua_tonumber), rv) {
        (Some(a), Some(b)) => f(a, *b),
        _ => false,
    };
    match &r.op {
        Op::Eq(rv) => str_eq(l, rv),
        // `~=` against a number: a non-numeric variable is "not equal".
        Op::Ne(rv) => !str_eq(l, rv),
        Op::Gt(rv) => cmp(|a, b| a > b, rv),
        Op::Ge(rv) => cmp(|a, b| a >= b, rv),
        Op::Lt(rv) => cmp(|a, b| a < b, rv),
        Op::Le(rv) => cmp(|a, b| a <= b, rv),
        Op::Regex(re) => l.is_some_and(|s| re.is_match(s.as_bytes()).unwrap_or(false)),
        Op::In(items) => {
            l.is_some_and(|s| items.iter().any(|i| matches!(i, Rhs::Str(x) if x == s)))
        }
        Op::Has => false,
        Op::IpMatch(set) => l
            .and_then(|s| s.parse().ok())
            .is_some_and(|ip| set.contains(ip)),
    }
}

fn eval_node<'a>(n: &Node, lookup: &dyn Fn(&str) -> Option<Cow<'a, str>>) -> bool {
    match n {
        Node::Rule(r) => {
            let v = lookup(&r.var);
            eval_rule(r, v.as_deref()) != r.reverse
        }
        Node::Logic { op, kids } => {
            let any = |want: bool| kids.iter().any(|k| eval_node(k, lookup) == want);
            match op {
                Logic::And => !any(false),
                Logic::Or => any(true),
                Logic::NotAnd => any(false),
                Logic::NotOr => !any(true),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn holds(expr: Value, vars: &[(&str, &str)]) -> bool {
        let e = Expr::compile(&expr).unwrap_or_else(|err| panic!("{expr}: {err}"));
        let lookup = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| Cow::Owned(v.to_string()))
        };
        e.eval(&lookup)
    }

    #[test]
    fn equality_compares_strings_or_numbers_by_the_configured_type() {
        assert!(holds(json!([["arg_a", "==", "1"]]), &[("arg_a", "1")]));
        assert!(!holds(json!([["arg_a", "==", "1"]]), &[("arg_a", "01")]));
        assert!(holds(json!([["arg_a", "==", 1]]), &[("arg_a", "01")]));
        assert!(!holds(json!([["arg_a", "==", 1]]), &[("arg_a", "x")]));
        assert!(holds(json!([["arg_a", "~=", 1]]), &[("arg_a", "x")]));
        assert!(!holds(json!([["arg_a", "==", "1"]]), &[]));
        assert!(holds(json!([["arg_a", "~=", "1"]]), &[]));
    }

    #[test]
    fn two_element_rules_compare_with_the_lowercased_value() {
        assert!(holds(json!([["http_x", "ABC"]]), &[("http_x", "abc")]));
        assert!(!holds(json!([["http_x", "ABC"]]), &[("http_x", "ABC")]));
    }

    #[test]
    fn numeric_comparisons_convert_both_sides() {
        assert!(holds(json!([["arg_n", ">", 5]]), &[("arg_n", "6")]));
        assert!(holds(json!([["arg_n", ">=", "5"]]), &[("arg_n", "5")]));
        assert!(holds(json!([["arg_n", "<", 5]]), &[("arg_n", "0x4")]));
        assert!(!holds(json!([["arg_n", "<=", 5]]), &[("arg_n", "abc")]));
        assert!(!holds(json!([["arg_n", ">", 5]]), &[]));
    }

    #[test]
    fn regex_operators_search_anywhere_and_star_ignores_case() {
        assert!(holds(
            json!([["http_ua", "~~", "curl/[0-9]+"]]),
            &[("http_ua", "x curl/8 y")]
        ));
        assert!(!holds(
            json!([["http_ua", "~~", "^curl"]]),
            &[("http_ua", "Curl")]
        ));
        assert!(holds(
            json!([["http_ua", "~*", "^curl"]]),
            &[("http_ua", "Curl")]
        ));
        assert!(!holds(json!([["http_ua", "~~", "x"]]), &[]));
    }

    #[test]
    fn in_has_and_ipmatch() {
        assert!(holds(
            json!([["arg_c", "in", ["a", "b"]]]),
            &[("arg_c", "b")]
        ));
        assert!(!holds(
            json!([["arg_c", "in", ["a", 1]]]),
            &[("arg_c", "1")]
        ));
        assert!(!holds(json!([["arg_c", "has", "a"]]), &[("arg_c", "a")]));
        assert!(holds(
            json!([["remote_addr", "ipmatch", ["10.0.0.0/8", "::1"]]]),
            &[("remote_addr", "10.2.3.4")]
        ));
        assert!(!holds(
            json!([["remote_addr", "ipmatch", "10.0.0.0/8"]]),
            &[("remote_addr", "11.2.3.4")]
        ));
    }

    #[test]
    fn negation_and_nested_logic() {
        assert!(holds(json!([["arg_a", "!", "==", "x"]]), &[("arg_a", "y")]));
        assert!(!holds(
            json!([["arg_a", "!", "==", "x"]]),
            &[("arg_a", "x")]
        ));
        let e = json!([
            "OR",
            ["arg_a", "==", "1"],
            ["AND", ["arg_b", "==", "2"], ["arg_c", "==", "3"]]
        ]);
        assert!(holds(e.clone(), &[("arg_a", "1")]));
        assert!(holds(e.clone(), &[("arg_b", "2"), ("arg_c", "3")]));
        assert!(!holds(e, &[("arg_b", "2")]));
        assert!(holds(
            json!(["!AND", ["arg_a", "==", "1"], ["arg_b", "==", "2"]]),
            &[("arg_a", "1")]
        ));
        assert!(!holds(
            json!(["!OR", ["arg_a", "==", "1"], ["arg_b", "==", "2"]]),
            &[("arg_a", "1")]
        ));
        assert!(holds(
            json!(["or", ["arg_a", "==", "1"], ["arg_b", "==", "2"]]),
            &[("arg_b", "2")]
        ));
        assert!(holds(json!([]), &[]));
    }

    #[test]
    fn malformed_expressions_are_refused_with_lua_resty_expr_words() {
        let err = |v: Value| Expr::compile(&v).unwrap_err();
        assert_eq!(
            err(json!(["arg_a", "==", "1"])),
            "rule should be wrapped inside brackets"
        );
        assert_eq!(err(json!([["arg_a", "=~", "1"]])), "invalid operator '=~'");
        assert_eq!(
            err(json!([["arg_a", "x", "==", "1"]])),
            "bad 'not' expression"
        );
        assert_eq!(err(json!(["AND", ["arg_a", "==", "1"]])), "rule too short");
        assert_eq!(
            err(json!([["remote_addr", "ipmatch", ""]])),
            "invalid ip address"
        );
        assert!(err(json!([["a", "~~", "("]])).contains("failed to compile regex"));
    }

    #[test]
    fn numbers_are_read_as_lua_tonumber_reads_them() {
        let n = |v: &str, expr: Value| holds(expr, &[("arg_n", v)]);
        assert!(n("-0x10", json!([["arg_n", "==", -16]])));
        assert!(n("+5", json!([["arg_n", ">", 4]])));
        assert!(n(" 7 ", json!([["arg_n", "==", 7]])));
        assert!(n("1e2", json!([["arg_n", "==", 100]])));
        assert!(n(".5", json!([["arg_n", "<", 1]])));
        for not_a_number in ["inf", "-Infinity", "nan", "0x", "1e", "", "5px"] {
            assert!(
                !n(not_a_number, json!([["arg_n", "<", 1e300]])),
                "{not_a_number}"
            );
            assert!(
                !n(not_a_number, json!([["arg_n", ">", -1e300]])),
                "{not_a_number}"
            );
        }
    }

    #[test]
    fn a_non_numeric_config_value_makes_ordering_fail_and_its_negation_hold() {
        assert!(!holds(json!([["arg_n", ">", "abc"]]), &[("arg_n", "5")]));
        assert!(holds(
            json!([["arg_n", "!", ">", "abc"]]),
            &[("arg_n", "5")]
        ));
    }

    #[test]
    fn a_null_value_compares_with_a_missing_variable() {
        assert!(holds(json!([["arg_a", "==", null]]), &[]));
        assert!(!holds(json!([["arg_a", "==", null]]), &[("arg_a", "")]));
        assert!(holds(json!([["arg_a", "~=", null]]), &[("arg_a", "x")]));
        // Three elements with an unknown operator stay an unknown operator, null or not.
        assert_eq!(
            Expr::compile(&json!([["arg_a", "x", null]])).unwrap_err(),
            "invalid operator 'x'"
        );
    }

    #[test]
    fn negation_applies_to_every_operator_including_missing_variables() {
        let v = &[("arg_a", "b")];
        assert!(holds(json!([["arg_a", "!", "in", ["x", "y"]]]), v));
        assert!(holds(json!([["arg_a", "!", "has", "b"]]), v));
        assert!(holds(json!([["arg_a", "!", "~~", "^x"]]), v));
        assert!(!holds(json!([["arg_a", "!", "~*", "^B$"]]), v));
        assert!(holds(json!([["arg_a", "!", "ipmatch", "10.0.0.0/8"]]), v));
        assert!(holds(json!([["arg_missing", "!", "==", "b"]]), v));
        assert!(!holds(json!([["arg_missing", "!", "~=", "b"]]), v));
    }

    #[test]
    fn operators_and_logic_words_ignore_case() {
        let v = &[("arg_a", "b")];
        assert!(holds(json!([["arg_a", "IN", ["b"]]]), v));
        assert!(holds(
            json!(["!or", ["arg_a", "==", "x"], ["arg_a", "==", "y"]]),
            v
        ));
        assert!(holds(
            json!(["And", ["arg_a", "==", "b"], ["arg_a", "~=", "c"]]),
            v
        ));
    }

    #[test]
    fn logic_nests_at_any_depth() {
        let e = json!([
            "AND",
            [
                "OR",
                ["arg_a", "==", "1"],
                ["!AND", ["arg_b", "==", "1"], ["arg_c", "==", "1"]]
            ],
            [["arg_d", "~=", "no"], ["arg_e", "in", ["x", "y"]]]
        ]);
        assert!(holds(e.clone(), &[("arg_a", "1"), ("arg_e", "x")]));
        assert!(holds(e.clone(), &[("arg_b", "1"), ("arg_e", "y")]));
        assert!(!holds(
            e.clone(),
            &[("arg_b", "1"), ("arg_c", "1"), ("arg_e", "y")]
        ));
        assert!(!holds(
            e.clone(),
            &[("arg_a", "1"), ("arg_d", "no"), ("arg_e", "x")]
        ));
        assert!(!holds(e, &[("arg_a", "1")]));
    }

    #[test]
    fn a_regex_value_may_be_a_number_and_ipmatch_takes_v6_blocks() {
        assert!(holds(json!([["arg_a", "~~", 42]]), &[("arg_a", "x42y")]));
        let e = json!([["remote_addr", "ipmatch", ["2001:db8::/32"]]]);
        assert!(holds(e.clone(), &[("remote_addr", "2001:db8:1::1")]));
        assert!(!holds(e.clone(), &[("remote_addr", "2001:db9::1")]));
        assert!(!holds(e, &[("remote_addr", "not-an-ip")]));
    }

    #[test]
    fn ipmatch_lists_must_hold_only_addresses() {
        let err = |v: Value| Expr::compile(&v).unwrap_err();
        assert_eq!(
            err(json!([["remote_addr", "ipmatch", [1]]])),
            "invalid ip address"
        );
        assert_eq!(
            err(json!([["remote_addr", "ipmatch", []]])),
            "invalid ip address"
        );
        assert!(err(json!([["remote_addr", "ipmatch", "300.1.1.1"]])).contains("300.1.1.1"));
    }
}
