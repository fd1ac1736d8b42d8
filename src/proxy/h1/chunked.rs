//! Decoding of a chunked response body (RFC 9112 §7.1): chunk sizes in hex, chunk extensions
//! and trailer fields skipped, as nginx's proxy module skips them. The decoder works on the
//! connection's read buffer and hands out chunk data without copying it.

use bytes::{Buf, Bytes, BytesMut};

/// Longest size line (with its extensions) or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;
/// Most trailer bytes accepted in total.
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk: bytes of data left.
    Data(u64),
    /// After a chunk's data: its line end.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one; bytes seen so far.
    Trailers(usize),
    Done,
}

/// What the buffer gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// More bytes must be read first.
    NeedMore,
    /// The body ended (after its trailers).
    End,
}

/// The body is not valid chunked encoding.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid;

#[derive(Debug)]
pub struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { state: State::Size }
    }
}

impl Decoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the front of `buf`, consuming what it decodes.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, Invalid> {
        loop {
            match self.state {
                State::Done => return Ok(Step::End),
                State::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = left.min(buf.len() as u64);
                    let data = buf.split_to(n as usize).freeze();
                    self.state = if n == left {
                        State::DataEnd
                    } else {
                        State::Data(left - n)
                    };
                    return Ok(Step::Data(data));
                }
                State::DataEnd => match buf.first() {
                    None => return Ok(Step::NeedMore),
                    Some(b'\n') => {
                        buf.advance(1);
                        self.state = State::Size;
                    }
                    Some(b'\r') => match buf.get(1) {
                        None => return Ok(Step::NeedMore),
                        Some(b'\n') => {
                            buf.advance(2);
                            self.state = State::Size;
                        }
                        Some(_) => return Err(Invalid),
                    },
                    Some(_) => return Err(Invalid),
                },
                State::Trailers(seen) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                        return Ok(Step::End);
                    }
                    let seen = seen + line.len();
                    if seen > MAX_TRAILERS {
                        return Err(Invalid);
                    }
                    self.state = State::Trailers(seen);
                }
            }
        }
    }
}

/// One line off the front of `buf`, without its CRLF (a bare LF ends a line too); `None` while
/// it is incomplete.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, Invalid> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) if i > MAX_LINE => Err(Invalid),
        Some(i) => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(Invalid),
        None => Ok(None),
    }
}

/// The size of a chunk-size line: hex digits, then optional whitespace and `;extensions`.
fn chunk_size(line: &[u8]) -> Result<u64, Invalid> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    // 15 hex digits at most: sizes stay far from overflow, as nginx bounds them too.
    if digits == 0 || digits > 15 {
        return Err(Invalid);
    }
    let rest = &line[digits..];
    let rest = rest
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .map_or(&[][..], |i| &rest[i..]);
    if !rest.is_empty() && rest[0] != b';' {
        return Err(Invalid);
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        size = size * 16 + u64::from(d);
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` one byte at a time and returns the data and whether it ended.
    fn decode_bytewise(input: &[u8]) -> Result<(Vec<u8>, bool), Invalid> {
        let mut dec = Decoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in input {
            buf.extend_from_slice(&[b]);
            loop {
                match dec.decode(&mut buf)? {
                    Step::Data(d) => out.extend_from_slice(&d),
                    Step::NeedMore => break,
                    Step::End => return Ok((out, true)),
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn extensions_and_trailers_are_skipped() {
        let body = b"5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        assert_eq!(decode_bytewise(body), Ok((b"hello world".to_vec(), true)));
    }

    #[test]
    fn bare_lf_line_ends_are_accepted() {
        assert_eq!(
            decode_bytewise(b"3\nabc\n0\n\n"),
            Ok((b"abc".to_vec(), true))
        );
    }

    #[test]
    fn an_unfinished_body_does_not_end() {
        assert_eq!(
            decode_bytewise(b"3\r\nabc\r\n"),
            Ok((b"abc".to_vec(), false))
        );
    }

    #[test]
    fn malformed_sizes_and_line_ends_are_refused() {
        assert_eq!(decode_bytewise(b"x\r\n"), Err(Invalid));
        assert_eq!(decode_bytewise(b"\r\n"), Err(Invalid));
        assert_eq!(decode_bytewise(b"3\r\nabcX"), Err(Invalid));
        assert_eq!(decode_bytewise(b"1000000000000000\r\n"), Err(Invalid));
        assert_eq!(decode_bytewise(b"3 x\r\n"), Err(Invalid));
    }
}
