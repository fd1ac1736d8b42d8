//! URI escaping shared by the request path (`arg_*` variables) and Lua (`ngx.unescape_uri`).

use std::borrow::Cow;

/// Decodes `%XX` escapes and `+` as a space, as nginx's argument decoding does; a malformed
/// escape is kept as it is. Borrows when there is nothing to decode.
pub fn unescape(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.iter().any(|b| *b == b'%' || *b == b'+') {
        return Cow::Borrowed(s);
    }
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_plus_decode_and_malformed_ones_stay() {
        assert_eq!(&*unescape(b"a%20b+c%zz%41%4"), b"a b c%zzA%4");
        assert!(matches!(unescape(b"plain"), Cow::Borrowed(_)));
    }
}
