//! PCRE patterns for native plugins, compiled once per conf with the error wording of
//! `ngx.re` (what the Lua plugins of the same names report), and `ngx.re.sub`'s replacement
//! templates (`$0`..`$99`, `${n}`, `$$`).

use pcre2::bytes::{Regex, RegexBuilder};

/// Compiles `pattern` (JIT when available), optionally case-insensitive.
pub fn compile(pattern: &str, caseless: bool) -> Result<Regex, String> {
    RegexBuilder::new()
        .jit_if_available(true)
        .caseless(caseless)
        .build(pattern)
        .map_err(|e| {
            format!(
                "pcre_compile() failed: {} in \"{pattern}\"",
                e.to_string().rsplit(": ").next().unwrap_or("")
            )
        })
}

/// One piece of a replacement template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    Group(usize),
}

/// A parsed `ngx.re.sub` replacement template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Piece>);

impl Template {
    pub fn parse(t: &str) -> Result<Template, String> {
        let bad = || "failed to compile the replacement template".to_string();
        let mut out = Vec::new();
        let mut lit = String::new();
        let mut chars = t.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            if c != '$' {
                lit.push(c);
                continue;
            }
            match chars.peek().map(|(_, c)| *c) {
                Some('$') => {
                    chars.next();
                    lit.push('$');
                }
                Some('{') => {
                    chars.next();
                    let mut digits = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, d)) if d.is_ascii_digit() => digits.push(d),
                            _ => return Err(bad()),
                        }
                    }
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                    out.push(Piece::Group(digits.parse().map_err(|_| bad())?));
                }
                Some(d) if d.is_ascii_digit() => {
                    let mut n = 0usize;
                    while let Some((_, d)) =
                        chars.peek().copied().filter(|(_, d)| d.is_ascii_digit())
                    {
                        n = n * 10 + (d as u8 - b'0') as usize;
                        chars.next();
                    }
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                    out.push(Piece::Group(n));
                }
                _ => return Err(bad()),
            }
        }
        out.push(Piece::Lit(lit));
        Ok(Template(out))
    }

    /// Replaces the first match of `re` in `subject`; `None` when nothing matched.
    pub fn sub_first(&self, re: &Regex, subject: &str) -> Result<Option<String>, String> {
        let mut locs = re.capture_locations();
        let Some(m) = re
            .captures_read(&mut locs, subject.as_bytes())
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let mut out = String::with_capacity(subject.len());
        out.push_str(&subject[..m.start()]);
        for p in &self.0 {
            match p {
                Piece::Lit(l) => out.push_str(l),
                Piece::Group(g) => {
                    if let Some((a, b)) = locs.get(*g) {
                        out.push_str(&subject[a..b]);
                    }
                }
            }
        }
        out.push_str(&subject[m.end()..]);
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_substitute_groups_once() {
        let re = compile("^/old/(.*)$", false).unwrap();
        let t = Template::parse("/new/$1?from=${1}&cost=$$5").unwrap();
        assert_eq!(
            t.sub_first(&re, "/old/a/b").unwrap().as_deref(),
            Some("/new/a/b?from=a/b&cost=$5")
        );
        assert_eq!(t.sub_first(&re, "/other").unwrap(), None);
        assert!(Template::parse("$x").is_err());
        assert!(
            compile("(", false)
                .unwrap_err()
                .starts_with("pcre_compile() failed:")
        );
    }
}
