//! A small reader for the nginx configuration snippets `.t` blocks carry (`--- config`,
//! `--- http_config`): directives with arguments, nested blocks, and the `*_by_lua_block { … }`
//! directives whose body is Lua (read with Lua's own string and comment rules, as nginx's Lua
//! module does). It only parses; `translate` decides what each directive means.

/// One directive: `name arg…;` or `name arg… { children }`, or a Lua block.
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub children: Option<Vec<Directive>>,
    /// The Lua source of a `*_by_lua_block`.
    pub lua: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("nginx config line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

struct Reader<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn line(&self) -> usize {
        self.src[..self.pos.min(self.src.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
            + 1
    }

    fn err(&self, msg: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line(),
            msg: msg.into(),
        }
    }

    fn skip_space(&mut self) {
        while self.pos < self.src.len() {
            match self.src[self.pos] {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'#' => {
                    while self.pos < self.src.len() && self.src[self.pos] != b'\n' {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    /// A word or a quoted string; `None` at `;`, `{`, `}` or the end.
    fn token(&mut self) -> Result<Option<String>, ParseError> {
        self.skip_space();
        let Some(&c) = self.src.get(self.pos) else {
            return Ok(None);
        };
        if matches!(c, b';' | b'{' | b'}') {
            return Ok(None);
        }
        if c == b'"' || c == b'\'' {
            self.pos += 1;
            let mut out = Vec::new();
            while let Some(&b) = self.src.get(self.pos) {
                self.pos += 1;
                if b == b'\\' {
                    if let Some(&n) = self.src.get(self.pos) {
                        self.pos += 1;
                        match n {
                            b'"' | b'\'' | b'\\' => out.push(n),
                            b'n' => out.push(b'\n'),
                            b't' => out.push(b'\t'),
                            _ => {
                                out.push(b'\\');
                                out.push(n);
                            }
                        }
                    }
                } else if b == c {
                    return Ok(Some(String::from_utf8_lossy(&out).into_owned()));
                } else {
                    out.push(b);
                }
            }
            return Err(self.err("unterminated quoted string"));
        }
        let start = self.pos;
        while let Some(&b) = self.src.get(self.pos) {
            if matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b';' | b'{' | b'}') {
                break;
            }
            self.pos += 1;
        }
        Ok(Some(
            String::from_utf8_lossy(&self.src[start..self.pos]).into_owned(),
        ))
    }

    /// After `{` of a Lua block: the source up to its matching `}`, skipping braces inside Lua
    /// strings, long strings and comments.
    fn lua_body(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        let mut depth = 1usize;
        while let Some(&b) = self.src.get(self.pos) {
            match b {
                b'{' => {
                    depth += 1;
                    self.pos += 1;
                }
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        let body = String::from_utf8_lossy(&self.src[start..self.pos]).into_owned();
                        self.pos += 1;
                        return Ok(body);
                    }
                    self.pos += 1;
                }
                b'"' | b'\'' => {
                    self.pos += 1;
                    while let Some(&s) = self.src.get(self.pos) {
                        self.pos += 1;
                        if s == b'\\' {
                            self.pos += 1;
                        } else if s == b {
                            break;
                        }
                    }
                }
                b'[' => {
                    if !self.long_bracket() {
                        self.pos += 1;
                    }
                }
                b'-' if self.src.get(self.pos + 1) == Some(&b'-') => {
                    self.pos += 2;
                    if self.src.get(self.pos) == Some(&b'[') && self.long_bracket() {
                        continue;
                    }
                    while self.pos < self.src.len() && self.src[self.pos] != b'\n' {
                        self.pos += 1;
                    }
                }
                _ => self.pos += 1,
            }
        }
        Err(self.err("unterminated Lua block (no matching '}')"))
    }

    /// At `[`: skips a `[[…]]` / `[==[…]==]` long bracket and says whether there was one.
    fn long_bracket(&mut self) -> bool {
        let mut p = self.pos + 1;
        let mut level = 0;
        while self.src.get(p) == Some(&b'=') {
            level += 1;
            p += 1;
        }
        if self.src.get(p) != Some(&b'[') {
            return false;
        }
        let close: Vec<u8> = std::iter::once(b']')
            .chain(std::iter::repeat_n(b'=', level))
            .chain(std::iter::once(b']'))
            .collect();
        p += 1;
        while p + close.len() <= self.src.len() {
            if self.src[p..p + close.len()] == close[..] {
                self.pos = p + close.len();
                return true;
            }
            p += 1;
        }
        self.pos = self.src.len();
        true
    }

    fn directives(&mut self, nested: bool) -> Result<Vec<Directive>, ParseError> {
        let mut out = Vec::new();
        loop {
            self.skip_space();
            match self.src.get(self.pos) {
                None if nested => return Err(self.err("unexpected end: a '}' is missing")),
                None => return Ok(out),
                Some(b'}') if nested => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'}') => return Err(self.err("unexpected '}'")),
                Some(b';') => {
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            let Some(name) = self.token()? else {
                return Err(self.err("unexpected '{'"));
            };
            let mut args = Vec::new();
            while let Some(a) = self.token()? {
                args.push(a);
            }
            match self.src.get(self.pos) {
                Some(b';') => {
                    self.pos += 1;
                    out.push(Directive {
                        name,
                        args,
                        children: None,
                        lua: None,
                    });
                }
                Some(b'{') => {
                    self.pos += 1;
                    if name.ends_with("_by_lua_block") {
                        let lua = self.lua_body()?;
                        out.push(Directive {
                            name,
                            args,
                            children: None,
                            lua: Some(lua),
                        });
                    } else {
                        let children = self.directives(true)?;
                        out.push(Directive {
                            name,
                            args,
                            children: Some(children),
                            lua: None,
                        });
                    }
                }
                _ => return Err(self.err(format!("directive \"{name}\" is not terminated by ';'"))),
            }
        }
    }
}

/// Parses a snippet into its top-level directives.
pub fn parse(src: &str) -> Result<Vec<Directive>, ParseError> {
    Reader {
        src: src.as_bytes(),
        pos: 0,
    }
    .directives(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_blocks_keep_braces_inside_strings_and_comments() {
        let d = parse(
            r#"
            location = /t {
                content_by_lua_block {
                    local t = {a = "}", b = [[ } ]]} -- }
                    --[==[ } ]==]
                    ngx.say('}')
                }
            }
            location /x { return 200 "a;b"; }
            "#,
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].args, ["=", "/t"]);
        let lua = d[0].children.as_ref().unwrap()[0].lua.as_ref().unwrap();
        assert!(lua.contains("ngx.say('}')"), "{lua}");
        let ret = &d[1].children.as_ref().unwrap()[0];
        assert_eq!(ret.args, ["200", "a;b"]);
    }

    #[test]
    fn unbalanced_braces_are_an_error_with_a_line() {
        let e = parse("location /t {\n  return 200;\n").unwrap_err();
        assert!(e.msg.contains("missing"), "{e}");
    }
}
