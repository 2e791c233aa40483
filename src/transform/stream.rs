//! The streaming field engine's core: the byte-level selection of [`super::splice`], fed a body
//! chunk by chunk instead of whole (issue 18).
//!
//! A [`Streamer`] validates the document as it arrives (RFC 8259: structure, strings and their
//! escapes, numbers, literals, UTF-8, a nesting bound) and passes every byte outside the
//! selected values straight through; a selected value is held until it is complete — and only
//! it, bounded by `max_value` — then handed to the caller, whose replacement (a token, a mask)
//! goes out instead. Memory is bounded by the largest selected value, the longest member name
//! and the nesting depth, never by the body.
//!
//! Selection is the splice engine's, on the same [`Plan`] (names, indexes, wildcards,
//! descendant names; outermost wins; the first selector that ends at a node owns it; every
//! occurrence of a duplicate name is selected; the member rule names the context), so the
//! output equals the splice engine's on the whole body — a property the tests check over
//! random documents cut at random places.
//!
//! **Failing closed mid-stream.** What was already passed on is a prefix of the document with
//! every selected value replaced: it never holds a selected value's plaintext. An invalid
//! document, a selected value over `max_value` or a failed replacement is an error from
//! [`Streamer::feed`] or [`Streamer::finish`]; the caller must then abort the response (no
//! terminating chunk on HTTP/1.1, `RST_STREAM` on HTTP/2), so the client sees a truncated,
//! unusable answer and nothing more.

use std::fmt;

use super::path::push_normal_name;
use super::splice::{Child, Plan, MAX_NESTING};

/// Longest member name held to decide selection (names are compared decoded).
pub const MAX_KEY_BYTES: usize = 64 * 1024;

/// Largest held-value buffer kept for the next value (a token-sized value needs far less; a
/// rare large one gets its own).
const SPARE_KEPT: usize = 4096;

/// A selected value, complete: what the caller replaces.
#[derive(Debug)]
pub struct Selected<'a> {
    /// Index of the selector that selected it.
    pub selector: usize,
    /// The value's JSON text, exactly as it arrived.
    pub raw: &'a [u8],
    /// Where it is (spelled only when asked: an export's millionth value needs no path).
    pub path: PathView<'a>,
    /// The member rule's context: the member that holds the value (for an array element, the
    /// member that holds the array); `""` at the root.
    pub member: &'a str,
}

/// The path of a selected value, borrowed from the streamer's state.
#[derive(Debug, Clone, Copy)]
pub struct PathView<'a> {
    steps: &'a [Step],
    names: &'a str,
}

impl PathView<'_> {
    /// The RFC 9535 Normalized Path.
    pub fn spell(&self) -> String {
        let mut path = String::from("$");
        for step in self.steps {
            match step {
                Step::Key(range) => {
                    path.push('[');
                    push_normal_name(&mut path, &self.names[range.clone()]);
                    path.push(']');
                }
                Step::Index(i) => {
                    use std::fmt::Write as _;
                    let _ = write!(path, "[{i}]");
                }
            }
        }
        path
    }
}

impl fmt::Display for PathView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spell())
    }
}

/// Why a stream stopped. Everything passed on before it is safe (see the module docs).
#[derive(Debug, PartialEq, Eq)]
pub enum StreamError<E> {
    /// Not one JSON document (at this byte offset of the body).
    Invalid { offset: u64, why: &'static str },
    /// A selected value (or a member name) longer than the bound.
    TooLarge { offset: u64 },
    /// The caller's replacement failed.
    Replace(E),
}

impl<E: fmt::Display> fmt::Display for StreamError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Invalid { offset, why } => {
                write!(f, "invalid JSON at byte {offset}: {why}")
            }
            StreamError::TooLarge { offset } => {
                write!(
                    f,
                    "a selected value at byte {offset} is over the streaming bound"
                )
            }
            StreamError::Replace(e) => write!(f, "{e}"),
        }
    }
}

/// Where the scanner is inside a scalar token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// Between tokens.
    None,
    /// In a string; `escape`: after a backslash; `hex`: hex digits of `\u` still to come.
    Str { escape: bool, hex: u8 },
    /// In a number; the state of its grammar.
    Num(Num),
    /// In `true`, `false` or `null`: the literal and how many bytes matched.
    Lit(&'static [u8], usize),
}

/// The number grammar, `-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`, as states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

impl Num {
    /// Whether the number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits)
    }

    fn next(self, b: u8) -> Option<Num> {
        Some(match (self, b) {
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus, b'1'..=b'9') => Num::Int,
            (Num::Int, b'0'..=b'9') => Num::Int,
            (Num::Zero | Num::Int, b'.') => Num::Dot,
            (Num::Dot | Num::Frac, b'0'..=b'9') => Num::Frac,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::Exp,
            (Num::Exp, b'+' | b'-') => Num::ExpSign,
            (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => Num::ExpDigits,
            _ => return None,
        })
    }
}

/// What the scanner expects next in its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value (the document's, an element's, or a member's after its colon).
    Value,
    /// In an object: a member name or `}` (right after `{`).
    KeyOrEnd,
    /// In an object: a member name (after a comma).
    Key,
    /// In an object: the colon after a name.
    Colon,
    /// In an array: a value or `]` (right after `[`).
    ValueOrEnd,
    /// After a value in a container: a comma or the container's end.
    CommaOrEnd,
    /// After the document's value: only whitespace.
    Done,
}

/// One open container.
#[derive(Debug)]
struct Frame {
    object: bool,
    /// The next element's index (arrays).
    index: usize,
    /// This container's (selector, step) pairs: `active[from..to]`; its children's are pushed
    /// above `to`.
    from: usize,
    to: usize,
}

/// One step of the path to the current value: a member name is a range of `names` (one
/// buffer for the whole path, so reading a member allocates nothing).
#[derive(Debug)]
pub(crate) enum Step {
    Key(std::ops::Range<usize>),
    Index(usize),
}

/// A selected value being held.
#[derive(Debug)]
struct Capture {
    selector: usize,
    /// `frames.len()` when it started: it ends when a value ends at this depth.
    depth: usize,
    held: Vec<u8>,
}

/// The streaming selector. See the module documentation.
pub struct Streamer {
    plan: Plan,
    max_value: usize,
    /// Bytes consumed so far (for error offsets).
    offset: u64,
    expect: Expect,
    token: Token,
    frames: Vec<Frame>,
    /// (selector, next step) pairs, as the splice walker keeps them.
    active: Vec<(usize, usize)>,
    path: Vec<Step>,
    /// The decoded member names of `path`, end to end.
    names: String,
    /// A member name being read (raw JSON text, quotes included), when `in_key`.
    key: Vec<u8>,
    in_key: bool,
    capture: Option<Capture>,
    /// The buffer a held value is read into, kept between values.
    spare: Vec<u8>,
    /// UTF-8 validation across chunks: continuation bytes still expected, and the bounds of
    /// the next one (overlong forms and surrogates are refused).
    utf8_left: u8,
    utf8_lo: u8,
    utf8_hi: u8,
}

/// What the caller does with each selected value: appends its replacement to the output (the
/// `Vec`), or says why it has none (whatever it appended then is taken back).
pub type Replace<'r, E> = dyn FnMut(Selected<'_>, &mut Vec<u8>) -> Result<(), E> + 'r;

impl Streamer {
    /// A streamer for `plan`, holding selected values up to `max_value` bytes.
    pub fn new(plan: Plan, max_value: usize) -> Self {
        Self {
            active: (0..plan.selectors.len()).map(|s| (s, 0)).collect(),
            plan,
            max_value,
            offset: 0,
            expect: Expect::Value,
            token: Token::None,
            frames: Vec::new(),
            path: Vec::new(),
            names: String::new(),
            key: Vec::new(),
            in_key: false,
            capture: None,
            spare: Vec::new(),
            utf8_left: 0,
            utf8_lo: 0x80,
            utf8_hi: 0xBF,
        }
    }

    fn invalid<E>(&self, why: &'static str) -> StreamError<E> {
        StreamError::Invalid {
            offset: self.offset,
            why,
        }
    }

    /// Feeds the next chunk of the body: appends to `out` what may be passed on now, and calls
    /// `replace` for each selected value completed in it (its result goes out instead).
    pub fn feed<E>(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<u8>,
        replace: &mut Replace<'_, E>,
    ) -> Result<(), StreamError<E>> {
        let mut cursor = Cursor { chunk, pass: 0 };
        let mut i = 0;
        while i < chunk.len() {
            // Inside a string, skip to its next quote or backslash at once (most of a
            // document's bytes are string contents): see `string_run`.
            if matches!(
                self.token,
                Token::Str {
                    escape: false,
                    hex: 0
                }
            ) && self.utf8_left == 0
            {
                let off = string_run(&chunk[i..]);
                if off > 0 {
                    if self.in_key {
                        self.push_key(&chunk[i..i + off])?;
                    }
                    self.offset += off as u64;
                    i += off;
                    continue;
                }
            }
            let b = chunk[i];
            if self.step(b, i, &mut cursor, out, replace)? {
                self.utf8(b)?;
                self.offset += 1;
                i += 1;
            }
        }
        cursor.flush(chunk.len(), self, out)
    }

    /// Ends the body: the document must be complete.
    pub fn finish<E>(
        &mut self,
        out: &mut Vec<u8>,
        replace: &mut Replace<'_, E>,
    ) -> Result<(), StreamError<E>> {
        // A number at the root ends with the body.
        if let Token::Num(n) = self.token {
            if !n.complete() || !self.frames.is_empty() {
                return Err(self.invalid("the body ends inside a value"));
            }
            self.token = Token::None;
            let mut cursor = Cursor {
                chunk: &[],
                pass: 0,
            };
            self.value_done(0, &mut cursor, out, replace)?;
        }
        if self.expect != Expect::Done || self.token != Token::None || self.utf8_left != 0 {
            return Err(self.invalid("the body ends before the document does"));
        }
        Ok(())
    }

    /// More of the member name being read, within [`MAX_KEY_BYTES`].
    fn push_key<E>(&mut self, bytes: &[u8]) -> Result<(), StreamError<E>> {
        self.key.extend_from_slice(bytes);
        if self.key.len() > MAX_KEY_BYTES {
            return Err(StreamError::TooLarge {
                offset: self.offset,
            });
        }
        Ok(())
    }

    /// Incremental UTF-8 validation of every byte of the body.
    #[inline]
    fn utf8<E>(&mut self, b: u8) -> Result<(), StreamError<E>> {
        if self.utf8_left > 0 {
            if b < self.utf8_lo || b > self.utf8_hi {
                return Err(self.invalid("not UTF-8"));
            }
            self.utf8_left -= 1;
            self.utf8_lo = 0x80;
            self.utf8_hi = 0xBF;
            return Ok(());
        }
        let (left, lo, hi) = match b {
            0x00..=0x7F => return Ok(()),
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return Err(self.invalid("not UTF-8")),
        };
        self.utf8_left = left;
        self.utf8_lo = lo;
        self.utf8_hi = hi;
        Ok(())
    }

    /// One byte at `i` of the chunk. Returns false when the byte must be seen again (it ended
    /// a number and is not part of it).
    #[inline]
    fn step<E>(
        &mut self,
        b: u8,
        i: usize,
        cursor: &mut Cursor<'_>,
        out: &mut Vec<u8>,
        replace: &mut Replace<'_, E>,
    ) -> Result<bool, StreamError<E>> {
        match self.token {
            Token::Str { escape, hex } => {
                self.token = self.string_byte(b, escape, hex)?;
                if self.in_key {
                    self.push_key(&[b])?;
                }
                if self.token == Token::None {
                    if self.in_key {
                        self.expect = Expect::Colon;
                    } else {
                        self.value_done(i + 1, cursor, out, replace)?;
                    }
                }
                return Ok(true);
            }
            Token::Num(n) => {
                if let Some(next) = n.next(b) {
                    self.token = Token::Num(next);
                    return Ok(true);
                }
                if !n.complete() {
                    return Err(self.invalid("a malformed number"));
                }
                self.token = Token::None;
                self.value_done(i, cursor, out, replace)?;
                return Ok(false);
            }
            Token::Lit(lit, matched) => {
                if b != lit[matched] {
                    return Err(self.invalid("an unknown literal"));
                }
                if matched + 1 == lit.len() {
                    self.token = Token::None;
                    self.value_done(i + 1, cursor, out, replace)?;
                } else {
                    self.token = Token::Lit(lit, matched + 1);
                }
                return Ok(true);
            }
            Token::None => {}
        }
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            return Ok(true);
        }
        match self.expect {
            Expect::Done => Err(self.invalid("more than one document")),
            Expect::Colon => {
                if b != b':' {
                    return Err(self.invalid("expected `:`"));
                }
                self.in_key = false;
                let start = self.names.len();
                let raw = &self.key[1..self.key.len() - 1];
                if raw.contains(&b'\\') {
                    let name: String = serde_json::from_slice(&self.key)
                        .map_err(|_| self.invalid("a malformed member name"))?;
                    self.names.push_str(&name);
                } else {
                    // Validated as it was read: UTF-8, no control character, no escape.
                    let name = std::str::from_utf8(raw).map_err(|_| self.invalid("not UTF-8"))?;
                    self.names.push_str(name);
                }
                let (from, to) = {
                    let frame = self.frames.last().expect("in an object");
                    (frame.from, frame.to)
                };
                self.active.truncate(to);
                let names = std::mem::take(&mut self.names);
                self.advance(from, to, Child::Key(&names[start..]));
                self.names = names;
                let end = self.names.len();
                self.path.push(Step::Key(start..end));
                self.expect = Expect::Value;
                Ok(true)
            }
            Expect::KeyOrEnd | Expect::Key => {
                if b == b'}' && self.expect == Expect::KeyOrEnd {
                    self.close(i, cursor, out, replace)?;
                    return Ok(true);
                }
                if b != b'"' {
                    return Err(self.invalid("expected a member name"));
                }
                self.key.clear();
                self.key.push(b);
                self.in_key = true;
                self.token = Token::Str {
                    escape: false,
                    hex: 0,
                };
                Ok(true)
            }
            Expect::CommaOrEnd => {
                let object = self.frames.last().expect("in a container").object;
                match (b, object) {
                    (b',', true) => self.expect = Expect::Key,
                    (b',', false) => self.expect = Expect::Value,
                    (b'}', true) | (b']', false) => self.close(i, cursor, out, replace)?,
                    _ => return Err(self.invalid("expected `,` or the container's end")),
                }
                Ok(true)
            }
            Expect::ValueOrEnd if b == b']' => {
                self.close(i, cursor, out, replace)?;
                Ok(true)
            }
            Expect::Value | Expect::ValueOrEnd => {
                self.value_start(b, i, cursor, out)?;
                Ok(true)
            }
        }
    }

    /// A string's byte after its opening quote: the token that follows.
    #[inline]
    fn string_byte<E>(&self, b: u8, escape: bool, hex: u8) -> Result<Token, StreamError<E>> {
        let string = |escape, hex| Token::Str { escape, hex };
        Ok(match (escape, hex, b) {
            (false, 0, b'"') => Token::None,
            (false, 0, b'\\') => string(true, 0),
            (false, 0, 0x00..=0x1F) => return Err(self.invalid("a control character in a string")),
            (false, 0, _) => string(false, 0),
            (true, _, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => string(false, 0),
            (true, _, b'u') => string(false, 4),
            (true, _, _) => return Err(self.invalid("an unknown escape")),
            (false, n, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => string(false, n - 1),
            (false, _, _) => return Err(self.invalid("a malformed \\u escape")),
        })
    }

    /// Pushes the pairs still active at `child` of the container whose pairs are
    /// `active[from..to]` (the splice walker's rule).
    fn advance(&mut self, from: usize, to: usize, child: Child<'_>) {
        if self.capture.is_some() {
            return; // outermost wins: nothing inside a held value is selected
        }
        self.plan.advance(&mut self.active, from, to, &child);
    }

    /// A value starts with `b` at `i`: decide whether it is held, then open it.
    fn value_start<E>(
        &mut self,
        b: u8,
        i: usize,
        cursor: &mut Cursor<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), StreamError<E>> {
        // An array element's index is its name.
        if let Some(frame) = self.frames.last() {
            if !frame.object {
                let (from, to, index) = (frame.from, frame.to, frame.index);
                self.active.truncate(to);
                self.advance(from, to, Child::Index(index));
                self.path.push(Step::Index(index));
            }
        }
        let value_from = self.frames.last().map_or(0, |f| f.to);
        if self.capture.is_none() {
            let terminal = self.active[value_from..]
                .iter()
                .filter(|(s, pos)| *pos == self.plan.selectors[*s].len())
                .map(|(s, _)| *s)
                .min();
            if let Some(selector) = terminal {
                cursor.flush(i, self, out)?;
                self.capture = Some(Capture {
                    selector,
                    depth: self.frames.len(),
                    held: std::mem::take(&mut self.spare),
                });
            }
        }
        match b {
            b'{' | b'[' => {
                if self.frames.len() >= MAX_NESTING {
                    return Err(self.invalid("nested too deep"));
                }
                let object = b == b'{';
                let to = self.active.len();
                let from = if self.capture.is_some() {
                    to
                } else {
                    value_from
                };
                self.frames.push(Frame {
                    object,
                    index: 0,
                    from,
                    to,
                });
                self.expect = if object {
                    Expect::KeyOrEnd
                } else {
                    Expect::ValueOrEnd
                };
            }
            b'"' => {
                self.token = Token::Str {
                    escape: false,
                    hex: 0,
                }
            }
            b'-' => self.token = Token::Num(Num::Minus),
            b'0' => self.token = Token::Num(Num::Zero),
            b'1'..=b'9' => self.token = Token::Num(Num::Int),
            b't' => self.token = Token::Lit(b"true", 1),
            b'f' => self.token = Token::Lit(b"false", 1),
            b'n' => self.token = Token::Lit(b"null", 1),
            _ => return Err(self.invalid("expected a value")),
        }
        Ok(())
    }

    /// The container closed by the byte at `i` ends.
    fn close<E>(
        &mut self,
        i: usize,
        cursor: &mut Cursor<'_>,
        out: &mut Vec<u8>,
        replace: &mut Replace<'_, E>,
    ) -> Result<(), StreamError<E>> {
        let frame = self.frames.pop().expect("in a container");
        self.active.truncate(frame.to);
        self.value_done(i + 1, cursor, out, replace)
    }

    /// A value ended just before byte `end` of the chunk: release a held value it completes,
    /// and move on in its container.
    fn value_done<E>(
        &mut self,
        end: usize,
        cursor: &mut Cursor<'_>,
        out: &mut Vec<u8>,
        replace: &mut Replace<'_, E>,
    ) -> Result<(), StreamError<E>> {
        if self
            .capture
            .as_ref()
            .is_some_and(|c| c.depth == self.frames.len())
        {
            cursor.flush(end, self, out)?;
            let mut capture = self.capture.take().expect("checked above");
            let member = self
                .path
                .iter()
                .rev()
                .find_map(|step| match step {
                    Step::Key(range) => Some(&self.names[range.clone()]),
                    Step::Index(_) => None,
                })
                .unwrap_or("");
            let selected = Selected {
                selector: capture.selector,
                raw: &capture.held,
                path: PathView {
                    steps: &self.path,
                    names: &self.names,
                },
                member,
            };
            let before = out.len();
            if let Err(e) = replace(selected, out) {
                out.truncate(before);
                return Err(StreamError::Replace(e));
            }
            // The plaintext is not kept in the spare buffer between values, nor is a buffer
            // grown for one large value kept for the rest of the answer.
            zeroize::Zeroize::zeroize(capture.held.as_mut_slice());
            capture.held.clear();
            if capture.held.capacity() <= SPARE_KEPT {
                self.spare = capture.held;
            }
        }
        match self.frames.last_mut() {
            None => self.expect = Expect::Done,
            Some(frame) => {
                if !frame.object {
                    frame.index += 1;
                }
                let to = frame.to;
                if let Some(Step::Key(range)) = self.path.pop() {
                    self.names.truncate(range.start);
                }
                self.active.truncate(to);
                self.expect = Expect::CommaOrEnd;
            }
        }
        Ok(())
    }
}

/// The part of the current chunk not yet passed on or held.
struct Cursor<'c> {
    chunk: &'c [u8],
    pass: usize,
}

impl Cursor<'_> {
    /// Moves `chunk[pass..end]` to the held value if one is being held, else to `out`.
    fn flush<E>(
        &mut self,
        end: usize,
        streamer: &mut Streamer,
        out: &mut Vec<u8>,
    ) -> Result<(), StreamError<E>> {
        let bytes = &self.chunk[self.pass..end];
        self.pass = end;
        match &mut streamer.capture {
            Some(capture) => {
                capture.held.extend_from_slice(bytes);
                if capture.held.len() > streamer.max_value {
                    return Err(StreamError::TooLarge {
                        offset: streamer.offset,
                    });
                }
            }
            None => out.extend_from_slice(bytes),
        }
        Ok(())
    }
}

/// How many bytes at the start of `rest`, inside a string, can be skipped at once: up to the
/// next quote or backslash (or the chunk's end), as long as they hold no control character
/// and are valid UTF-8 (a sequence cut by the chunk's end is left to the byte-wise path).
/// Linear in what it skips, so a long string over many chunks costs one pass.
///
/// Most strings are short and ASCII (member names, ids, the values a rule seals), where a
/// library search costs more to set up than it saves: plain ASCII is skipped eight bytes at a
/// time first ([`ascii_run`]), and only text with other characters takes the general path.
fn string_run(rest: &[u8]) -> usize {
    let ascii = ascii_run(rest);
    match rest.get(ascii) {
        Some(&b) if b >= 0x80 => ascii + text_run(&rest[ascii..]),
        _ => ascii,
    }
}

/// The length of the leading run of `rest` that is plain string content in ASCII: no quote,
/// backslash, control character or byte ≥ 0x80. Eight bytes per step (SWAR: each byte's
/// high bit of `flags` marks a byte that ends the run; borrows only travel towards later
/// bytes, so the first mark is exact).
#[inline]
fn ascii_run(rest: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while let Some(word) = rest.get(at..at + 8) {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let flags = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x)
            | x;
        let flags = flags & HIGH;
        if flags != 0 {
            return at + (flags.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + rest[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))
        .unwrap_or(rest.len() - at)
}

/// [`string_run`] for text with non-ASCII characters.
fn text_run(rest: &[u8]) -> usize {
    let end = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
    let run = &rest[..end];
    let clean = run.iter().position(|&b| b < 0x20).unwrap_or(run.len());
    match std::str::from_utf8(&run[..clean]) {
        Ok(_) => clean,
        Err(e) => e.valid_up_to(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonpath_rust::parser::parse_json_path;

    fn plan(sources: &[&str]) -> Plan {
        let queries: Vec<_> = sources
            .iter()
            .map(|s| parse_json_path(s).unwrap())
            .collect();
        let refs: Vec<_> = queries.iter().collect();
        Plan::compile(&refs).unwrap()
    }

    /// Streams `text` in pieces of `piece` bytes, replacing each selected value by `"X:<path>"`.
    fn run(
        plan: &Plan,
        text: &[u8],
        piece: usize,
        max: usize,
    ) -> (Vec<u8>, Result<(), StreamError<()>>) {
        let mut streamer = Streamer::new(plan.clone(), max);
        let mut out = Vec::new();
        let mut replace = |v: Selected<'_>, out: &mut Vec<u8>| -> Result<(), ()> {
            out.extend_from_slice(format!("\"X:{}\"", v.path).as_bytes());
            Ok(())
        };
        for chunk in text.chunks(piece) {
            if let Err(e) = streamer.feed(chunk, &mut out, &mut replace) {
                return (out, Err(e));
            }
        }
        let end = streamer.finish(&mut out, &mut replace);
        (out, end)
    }

    #[test]
    fn replaces_selected_values_and_passes_every_other_byte() {
        let p = plan(&["$.ssn", "$.cards[*].number", "$..pin"]);
        let text = br#"{ "name": "Ada", "ssn" : "123-45-6789", "cards": [{"number": 4111, "pin": "1"}, {"x": [1, -2.5e+3, true, null]}], "n": -0 }"#;
        for piece in [1, 2, 3, 7, 64, text.len()] {
            let (out, end) = run(&p, text, piece, 1 << 20);
            end.unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                r#"{ "name": "Ada", "ssn" : "X:$['ssn']", "cards": [{"number": "X:$['cards'][0]['number']", "pin": "X:$['cards'][0]['pin']"}, {"x": [1, -2.5e+3, true, null]}], "n": -0 }"#,
                "piece {piece}"
            );
        }
    }

    #[test]
    fn a_whole_document_and_root_scalars() {
        for text in [&b"42"[..], b" 42 ", b"\"s\"", b"{\"a\":1}", b"[]", b"null"] {
            let (out, end) = run(&plan(&["$"]), text, 1, 1 << 20);
            end.unwrap();
            let s = String::from_utf8(out).unwrap();
            assert!(s.contains("\"X:$\""), "{s}");
            assert!(!s.contains("42") && !s.contains("\"s\""), "{s}");
        }
    }

    /// Every malformed document fails (at the byte or at the end), as serde_json refuses it,
    /// and nothing of a selected value was passed on before the failure.
    #[test]
    fn malformed_documents_fail_without_passing_a_selected_value() {
        let p = plan(&["$.ssn"]);
        let cases: &[&[u8]] = &[
            b"",
            b"   ",
            b"{",
            b"{\"ssn\": \"123",
            b"{\"ssn\": \"123\"",
            b"{\"ssn\": \"123\",}",
            b"{\"ssn\" \"123\"}",
            b"{\"ssn\": 01}",
            b"{\"ssn\": 1.}",
            b"{\"ssn\": -}",
            b"{\"ssn\": 1e}",
            b"{\"ssn\": tru}",
            b"{\"ssn\": nul}",
            b"{\"ssn\": \"a\x01b\"}",
            b"{\"ssn\": \"\\x\"}",
            b"{\"ssn\": \"\\u12G4\"}",
            b"{\"ssn\": \"\xff\"}",
            b"{\"ssn\": \"\xed\xa0\x80\"}",
            b"{\"ssn\": \"\xc0\xaf\"}",
            b"{\"ssn\": \"123\"}}",
            b"{\"ssn\": \"123\"} {}",
            b"[1,]",
            b"[1 2]",
            b"{\"a\":1,,\"ssn\":2}",
            b"{1: 2}",
            b"\xef\xbb\xbf{\"ssn\": \"123\"}",
            b"{\"ssn\": [\"123\", ]}",
            b"{\"ssn\": \"123\"]",
            b"[\"ssn\": 1]",
        ];
        for text in cases {
            assert!(
                serde_json::from_slice::<serde_json::Value>(text).is_err(),
                "{text:?}"
            );
            for piece in [1, 3, text.len().max(1)] {
                let (out, end) = run(&p, text, piece, 1 << 20);
                assert!(
                    matches!(end, Err(StreamError::Invalid { .. })),
                    "{:?} piece {piece}: {end:?}",
                    String::from_utf8_lossy(text)
                );
                let out = String::from_utf8_lossy(&out);
                assert!(!out.contains("123"), "{out}");
            }
        }
    }

    #[test]
    fn nesting_and_value_bounds_fail_closed() {
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_NESTING + 1),
            "]".repeat(MAX_NESTING + 1)
        );
        let (_, end) = run(&plan(&["$.x"]), deep.as_bytes(), 16, 1 << 20);
        assert!(
            matches!(
                end,
                Err(StreamError::Invalid {
                    why: "nested too deep",
                    ..
                })
            ),
            "{end:?}"
        );
        let ok = format!("{}{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        run(&plan(&["$.x"]), ok.as_bytes(), 16, 1 << 20).1.unwrap();
        // A selected value over the bound: refused, and none of it passed on.
        let big = format!("{{\"a\": 1, \"ssn\": \"{}\"}}", "7".repeat(5000));
        let (out, end) = run(&plan(&["$.ssn"]), big.as_bytes(), 100, 4096);
        assert!(matches!(end, Err(StreamError::TooLarge { .. })), "{end:?}");
        assert_eq!(String::from_utf8(out).unwrap(), "{\"a\": 1, \"ssn\": ");
        // Unselected values of any size stream through.
        let (out, end) = run(
            &plan(&["$.ssn"]),
            big.replace("ssn", "bio").as_bytes(),
            100,
            4096,
        );
        end.unwrap();
        assert_eq!(out.len(), big.len());
    }

    /// A long string over many chunks, its multi-byte characters cut by chunk ends: passed
    /// through whole (the skip over string contents is linear, and leaves a cut character to
    /// the byte-wise path).
    #[test]
    fn long_strings_cross_chunks_intact() {
        let pad = "é€𝄞x".repeat(100_000);
        let text = format!("{{\"pad\": \"{pad}\", \"ssn\": \"1\"}}");
        for piece in [1000, 1021, 4096] {
            let (out, end) = run(&plan(&["$.ssn"]), text.as_bytes(), piece, 1 << 20);
            end.unwrap();
            let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(doc["pad"], pad.as_str());
            assert_eq!(doc["ssn"], "X:$['ssn']");
        }
        let bad = format!("{{\"pad\": \"{}\u{1}\"}}", "a".repeat(5000));
        let (_, end) = run(&plan(&["$.ssn"]), bad.as_bytes(), 1000, 1 << 20);
        assert!(matches!(end, Err(StreamError::Invalid { .. })), "{end:?}");
    }

    /// The eight-bytes-at-a-time skip stops exactly where a byte-wise one does: every byte
    /// value at every position of a word, after every prefix.
    #[test]
    fn ascii_run_stops_at_the_first_byte_that_ends_plain_ascii() {
        let ends = |b: u8| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b);
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut text = vec![b'a'; len];
                    text[at] = b;
                    // A later byte that also ends the run must not be taken for the first.
                    if at + 1 < len {
                        text[at + 1] = b'"';
                    }
                    let want = text.iter().position(|&c| ends(c)).unwrap_or(len);
                    assert_eq!(ascii_run(&text), want, "len {len} at {at} byte {b:#x}");
                }
            }
        }
    }

    #[test]
    fn a_failed_replacement_stops_the_stream() {
        let p = plan(&["$[*].ssn"]);
        let mut streamer = Streamer::new(p, 1 << 20);
        let mut out = Vec::new();
        let mut n = 0;
        let mut replace = |_: Selected<'_>, out: &mut Vec<u8>| -> Result<(), &'static str> {
            n += 1;
            // What a failing replacement appended is taken back.
            out.extend_from_slice(b"\"T\"");
            if n == 2 {
                Err("no subject")
            } else {
                Ok(())
            }
        };
        let err = streamer
            .feed(
                br#"[{"ssn":"a"},{"ssn":"b"},{"ssn":"c"}]"#,
                &mut out,
                &mut replace,
            )
            .unwrap_err();
        assert_eq!(err, StreamError::Replace("no subject"));
        assert_eq!(String::from_utf8(out).unwrap(), r#"[{"ssn":"T"},{"ssn":"#);
    }
}
