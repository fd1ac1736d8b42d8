//! Follows HTTP/1 message framing on the raw bytes hyper reads, to see what hyper hides.
//!
//! hyper parses strictly, but a request carrying both `Content-Length` and `Transfer-Encoding`
//! reaches the service with the `Content-Length` silently removed, so the service cannot refuse it
//! the way nginx does (400). This tracker sees the same bytes just before hyper does, finds each
//! request head, judges it, and queues one [`Verdict`] per request in order; the service takes the
//! verdict of the request it is handling. It also tells the connection which phase it is in (idle,
//! reading a head, reading a body) so the right client timeout applies.
//!
//! It never changes the bytes and never decides framing for hyper: when it cannot follow the stream
//! (a malformed head or chunk, an upgrade) it stops and yields [`Verdict::Unknown`] from then on,
//! leaving hyper's own checks as the only ones.

use std::collections::VecDeque;

/// What the tracker concluded about one request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// `Content-Length` together with `Transfer-Encoding`: nginx answers 400.
    ContentLengthWithChunked,
    /// The request line is longer than the configured limit: nginx answers 414.
    RequestLineTooLong,
    /// A header line is longer than the configured limit: nginx answers 400.
    HeaderLineTooLong,
    /// `Content-Length` twice (hyper keeps one copy of equal values): nginx answers 400.
    DuplicateContentLength,
    /// The tracker could not follow the stream; only hyper's checks apply.
    Unknown,
}

/// Where the connection is in the current message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests: no byte of the next head seen yet.
    Idle,
    /// Some bytes of a head, not all of it.
    Head,
    /// The head is complete; body bytes are expected.
    Body,
    /// Tracking stopped.
    Lost,
}

#[derive(Debug)]
enum State {
    Head,
    Body(u64),
    Chunk(Chunk),
    Lost,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading hex digits of a chunk size.
    Size {
        value: u64,
        digits: u32,
    },
    /// After the size: extensions, until LF.
    Ext {
        size: u64,
    },
    Data(u64),
    /// After data: CR LF (or a bare LF).
    DataEnd {
        seen_cr: bool,
    },
    /// After the last chunk: trailer lines until an empty one; `empty` = nothing on this line yet.
    Trailer {
        empty: bool,
    },
}

/// Heads larger than this are not tracked (hyper refuses them with 431 anyway).
const MAX_HEAD: usize = 128 * 1024;

#[derive(Debug)]
pub struct Framing {
    state: State,
    head: Vec<u8>,
    verdicts: VecDeque<Verdict>,
    max_line: usize,
}

impl Framing {
    /// `max_line`: the longest request or header line accepted (nginx `large_client_header_buffers`).
    pub fn new(max_line: usize) -> Framing {
        Framing {
            state: State::Head,
            head: Vec::new(),
            verdicts: VecDeque::new(),
            max_line,
        }
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Head if self.head.is_empty() => Phase::Idle,
            State::Head => Phase::Head,
            State::Body(_) | State::Chunk(_) => Phase::Body,
            State::Lost => Phase::Lost,
        }
    }

    /// The verdict for the next request the service handles.
    pub fn next_verdict(&mut self) -> Verdict {
        self.verdicts.pop_front().unwrap_or(Verdict::Unknown)
    }

    /// Feeds bytes as they are read from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Lost => return,
                State::Head => {
                    if self.head.is_empty() {
                        // Empty lines before a request line are ignored, as hyper and nginx do.
                        let skip = data
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                        // The usual case: the whole head is in this read; judge it in place.
                        if let Some(end) = find_head_end(data, 0) {
                            self.judge(&data[..end]);
                            data = &data[end..];
                            continue;
                        }
                    }
                    let before = self.head.len();
                    self.head.extend_from_slice(data);
                    match find_head_end(&self.head, before.saturating_sub(3)) {
                        Some(end) => {
                            data = &data[end - before..];
                            let mut head = std::mem::take(&mut self.head);
                            head.truncate(end);
                            self.judge(&head);
                            head.clear();
                            self.head = head;
                        }
                        None => {
                            if self.head.len() > MAX_HEAD {
                                self.lose();
                            }
                            return;
                        }
                    }
                }
                State::Body(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
                State::Chunk(c) => {
                    let (used, next) = step_chunk(*c, data);
                    data = &data[used..];
                    match next {
                        Some(Some(c)) => self.state = State::Chunk(c),
                        Some(None) => self.state = State::Head,
                        None => {
                            self.lose();
                            return;
                        }
                    }
                }
            }
        }
    }

    fn lose(&mut self) {
        self.state = State::Lost;
        self.head = Vec::new();
    }

    /// Judges one complete head and sets up the framing of its body. Only the lines that
    /// matter are looked at; hyper validates the rest.
    fn judge(&mut self, head: &[u8]) {
        let mut lines = head
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let request_line = lines.next().unwrap_or(b"");
        let mut verdict = Verdict::Ok;
        if request_line.len() > self.max_line {
            verdict = Verdict::RequestLineTooLong;
        }
        let is_connect =
            request_line.len() >= 8 && request_line[..8].eq_ignore_ascii_case(b"CONNECT ");
        let mut has_cl = false;
        let mut content_length: Option<u64> = None;
        let mut te_chunked: Option<bool> = None;
        for line in lines {
            if line.is_empty() {
                break;
            }
            if verdict == Verdict::Ok && line.len() > self.max_line {
                verdict = Verdict::HeaderLineTooLong;
            }
            match line[0] {
                b'c' | b'C'
                    if line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:") =>
                {
                    if has_cl && verdict == Verdict::Ok {
                        verdict = Verdict::DuplicateContentLength;
                    }
                    has_cl = true;
                    content_length = std::str::from_utf8(&line[15..])
                        .ok()
                        .and_then(|v| v.trim().parse().ok());
                }
                b't' | b'T'
                    if line.len() >= 18
                        && line[..18].eq_ignore_ascii_case(b"transfer-encoding:") =>
                {
                    // hyper frames as chunked when the last coding is `chunked`.
                    let last = line[18..].rsplit(|b| *b == b',').next().unwrap_or(b"");
                    te_chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                }
                _ => {}
            }
        }
        if te_chunked.is_some() && has_cl && verdict == Verdict::Ok {
            verdict = Verdict::ContentLengthWithChunked;
        }
        self.verdicts.push_back(verdict);
        self.state = match (is_connect, te_chunked, has_cl, content_length) {
            (true, ..) => State::Lost,
            (_, Some(true), ..) => State::Chunk(Chunk::Size {
                value: 0,
                digits: 0,
            }),
            (_, Some(false), ..) => State::Lost,
            (_, None, false, _) | (_, None, true, Some(0)) => State::Head,
            (_, None, true, Some(n)) => State::Body(n),
            (_, None, true, None) => State::Lost,
        };
    }
}

/// Index just past the blank line ending a head (`\r\n\r\n` or bare `\n\n`), searching from `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = buf[i..].iter().position(|b| *b == b'\n') {
        let nl = i + off;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => {}
        }
        i = nl + 1;
    }
    None
}

/// Advances through chunked framing. Returns bytes used and the next state: `Some(Some(c))` more
/// chunked data, `Some(None)` the message ended, `None` malformed.
fn step_chunk(mut c: Chunk, data: &[u8]) -> (usize, Option<Option<Chunk>>) {
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        c = match c {
            Chunk::Size { value, digits } => match (b as char).to_digit(16) {
                Some(d) if digits < 16 => Chunk::Size {
                    value: value * 16 + d as u64,
                    digits: digits + 1,
                },
                Some(_) => return (i, None),
                None if digits == 0 => return (i, None),
                None if b == b'\n' => {
                    if value == 0 {
                        Chunk::Trailer { empty: true }
                    } else {
                        Chunk::Data(value)
                    }
                }
                None => Chunk::Ext { size: value },
            },
            Chunk::Ext { size } => {
                if b == b'\n' {
                    if size == 0 {
                        Chunk::Trailer { empty: true }
                    } else {
                        Chunk::Data(size)
                    }
                } else {
                    Chunk::Ext { size }
                }
            }
            Chunk::Data(left) => {
                let n = left.min((data.len() - i) as u64);
                i += n as usize;
                let left = left - n;
                c = if left == 0 {
                    Chunk::DataEnd { seen_cr: false }
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            Chunk::DataEnd { seen_cr } => match b {
                b'\r' if !seen_cr => Chunk::DataEnd { seen_cr: true },
                b'\n' => Chunk::Size {
                    value: 0,
                    digits: 0,
                },
                _ => return (i, None),
            },
            Chunk::Trailer { empty } => match b {
                b'\n' if empty => return (i + 1, Some(None)),
                b'\n' => Chunk::Trailer { empty: true },
                b'\r' => Chunk::Trailer { empty },
                _ => Chunk::Trailer { empty: false },
            },
        };
        i += 1;
    }
    (i, Some(Some(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(input: &[u8], split: usize) -> (Vec<Verdict>, Phase) {
        let mut f = Framing::new(8192);
        for part in input.chunks(split.max(1)) {
            f.feed(part);
        }
        let phase = f.phase();
        let mut v = Vec::new();
        while !f.verdicts.is_empty() {
            v.push(f.next_verdict());
        }
        (v, phase)
    }

    #[test]
    fn pipelined_requests_get_one_verdict_each_at_any_split() {
        let input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in [1, 2, 3, 7, 64, 1000] {
            let (v, phase) = verdicts(input, split);
            assert_eq!(v, vec![Verdict::Ok; 3], "split {split}");
            assert_eq!(phase, Phase::Idle);
        }
    }

    #[test]
    fn content_length_with_chunked_is_flagged_in_either_order() {
        let a = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let b = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n";
        for input in [&a[..], &b[..]] {
            let (v, phase) = verdicts(input, 5);
            assert_eq!(v, vec![Verdict::ContentLengthWithChunked]);
            assert_eq!(phase, Phase::Idle);
        }
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers_is_followed() {
        let input = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET /n HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in [1, 4, 100] {
            let (v, phase) = verdicts(input, split);
            assert_eq!(v, vec![Verdict::Ok, Verdict::Ok], "split {split}");
            assert_eq!(phase, Phase::Idle);
        }
    }

    #[test]
    fn a_repeated_content_length_is_flagged_even_when_equal() {
        let (v, phase) = verdicts(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx",
            7,
        );
        assert_eq!(v, vec![Verdict::DuplicateContentLength]);
        assert_eq!(phase, Phase::Idle);
    }

    #[test]
    fn long_lines_are_flagged() {
        let long = "a".repeat(9000);
        let line = format!("GET /{long} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            verdicts(line.as_bytes(), 100).0,
            vec![Verdict::RequestLineTooLong]
        );
        let hdr = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {long}\r\n\r\n");
        assert_eq!(
            verdicts(hdr.as_bytes(), 100).0,
            vec![Verdict::HeaderLineTooLong]
        );
    }

    #[test]
    fn phases_follow_the_message() {
        let mut f = Framing::new(8192);
        assert_eq!(f.phase(), Phase::Idle);
        f.feed(b"POST / HTTP/1.1\r\nHo");
        assert_eq!(f.phase(), Phase::Head);
        f.feed(b"st: x\r\nContent-Length: 3\r\n\r\nab");
        assert_eq!(f.phase(), Phase::Body);
        f.feed(b"c");
        assert_eq!(f.phase(), Phase::Idle);
    }

    #[test]
    fn only_framing_lines_are_judged_and_hyper_refuses_the_rest() {
        // A malformed header line is hyper's to refuse (the connection closes); tracking goes on.
        let (v, phase) = verdicts(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 100);
        assert_eq!(v, vec![Verdict::Ok]);
        assert_eq!(phase, Phase::Idle);
        let (_, phase) = verdicts(b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n", 100);
        assert_eq!(phase, Phase::Lost);
    }

    #[test]
    fn bare_lf_heads_are_followed() {
        let (v, phase) = verdicts(
            b"GET / HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\nHost: x\n\n",
            3,
        );
        assert_eq!(v, vec![Verdict::Ok, Verdict::Ok]);
        assert_eq!(phase, Phase::Idle);
    }
}
