//! I-JSON (RFC 7493) validation of `json` payloads.
//!
//! A `json` event is embedded verbatim in every envelope, so whatever is accepted here reaches
//! every subscriber's JSON parser. RFC 8259 alone is not enough for that: it allows lone
//! surrogate escapes (`"\ud800"`), which strict parsers (Rust's `serde_json` into `String`,
//! Go's `encoding/json` replaces them, Python's `json` keeps them and then fails to encode)
//! handle differently or refuse; duplicate member names, which parsers resolve differently;
//! and unbounded nesting, which overflows recursive parsers. I-JSON closes these gaps, and a
//! nesting limit closes the last one.
//!
//! # Why a hand-written scanner
//!
//! `serde_json` (already a dependency) cannot check this without building a value: skipping
//! with `IgnoredAny` does not look at `\u` escapes at all, a `Value` keeps the last of two
//! duplicate names silently, its own recursion limit (128) is fixed, and its errors give a
//! line and column rather than a byte offset. The small crates that do check I-JSON build a
//! tree (an allocation per value) and are not widely used. This scanner runs once over the
//! bytes, with the container stack in one `u64`; member names are compared in place (a list
//! of offsets), and hashed only in objects with more than 16 of them. The fuzz target
//! `fuzz/fuzz_targets/json_validate.rs` checks it against `serde_json`.

use std::collections::hash_map::{Entry, HashMap};
use std::fmt;
use std::hash::{BuildHasher, RandomState};

/// Deepest nesting of arrays and objects accepted in a `json` payload: `[[1]]` is 2 levels.
///
/// Deep enough for any real document, shallow enough for every recursive parser a subscriber
/// may use (`serde_json` stops at 128, some others at 100 to 512).
pub const MAX_JSON_DEPTH: usize = 64;

/// Which rule a payload broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonRule {
    /// Not JSON at all (RFC 8259); the text says what was expected.
    Syntax(&'static str),
    /// A `\u` escape of a UTF-16 surrogate that is not half of a high-low pair (RFC 7493 §2.1).
    LoneSurrogate,
    /// A Unicode noncharacter (U+FDD0..U+FDEF or U+xxFFFE/U+xxFFFF) in a string (RFC 7493 §2.1).
    Noncharacter(char),
    /// The same member name twice in one object, compared after unescaping (RFC 7493 §2.3).
    DuplicateName,
    /// Arrays and objects nested deeper than [`MAX_JSON_DEPTH`].
    TooDeep,
    /// A number whose magnitude an IEEE 754 double cannot hold (RFC 7493 §2.2).
    NumberOutOfRange,
}

impl fmt::Display for JsonRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(expected) => write!(f, "syntax error, {expected}"),
            Self::LoneSurrogate => f.write_str("lone surrogate escape (I-JSON, RFC 7493 §2.1)"),
            Self::Noncharacter(c) => write!(
                f,
                "noncharacter U+{:04X} in a string (I-JSON, RFC 7493 §2.1)",
                *c as u32
            ),
            Self::DuplicateName => {
                f.write_str("duplicate member name in one object (I-JSON, RFC 7493 §2.3)")
            }
            Self::TooDeep => write!(
                f,
                "arrays and objects nested deeper than {MAX_JSON_DEPTH} levels"
            ),
            Self::NumberOutOfRange => {
                f.write_str("number beyond the range of a double (I-JSON, RFC 7493 §2.2)")
            }
        }
    }
}

/// A payload is not I-JSON: the rule it broke and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{rule} at byte {offset}")]
pub struct JsonError {
    /// The rule broken.
    pub rule: JsonRule,
    /// Byte offset in the payload where the offending token starts (the payload length if the
    /// payload ended too soon).
    pub offset: usize,
}

/// Checks that `text` is one I-JSON value: RFC 8259 JSON with no lone surrogate escapes, no
/// noncharacters, no duplicate member names, no number beyond a double's range, and at most
/// [`MAX_JSON_DEPTH`] levels of nesting. Whitespace around the value is allowed.
///
/// # Errors
/// [`JsonError`] naming the first rule broken and its byte offset.
pub fn validate_json(text: &str) -> Result<(), JsonError> {
    Scanner {
        bytes: text.as_bytes(),
        text,
        pos: 0,
        names: MemberNames::default(),
    }
    .document()
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    names: MemberNames,
}

/// Open containers, innermost last: bit `i` of `kinds` is set when level `i` is an object.
/// `objects[i]` numbers the object at level `i` and `first_names[i]` is where its names start
/// in [`MemberNames::open`], so member names are only compared within one object.
struct Stack {
    depth: usize,
    kinds: u64,
    objects: [u32; MAX_JSON_DEPTH],
    first_names: [usize; MAX_JSON_DEPTH],
}

const _: () = assert!(MAX_JSON_DEPTH <= u64::BITS as usize);

impl Stack {
    fn innermost_is_object(&self) -> bool {
        self.kinds & (1 << (self.depth - 1)) != 0
    }

    /// The innermost object: its number and where its names start.
    fn object(&self) -> (u32, usize) {
        (
            self.objects[self.depth - 1],
            self.first_names[self.depth - 1],
        )
    }
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn document(mut self) -> Result<(), JsonError> {
        let mut stack = Stack {
            depth: 0,
            kinds: 0,
            objects: [0; MAX_JSON_DEPTH],
            first_names: [0; MAX_JSON_DEPTH],
        };
        let mut next_object = 0u32;
        'value: loop {
            self.skip_whitespace();
            let start = self.pos;
            match self.peek() {
                Some(open @ (b'[' | b'{')) => {
                    if stack.depth == MAX_JSON_DEPTH {
                        return fail(JsonRule::TooDeep, start);
                    }
                    self.pos += 1;
                    let is_object = open == b'{';
                    if is_object {
                        stack.kinds |= 1 << stack.depth;
                        stack.objects[stack.depth] = next_object;
                        stack.first_names[stack.depth] = self.names.open.len();
                        next_object = next_object.wrapping_add(1);
                    } else {
                        stack.kinds &= !(1 << stack.depth);
                    }
                    stack.depth += 1;
                    self.skip_whitespace();
                    let close = if is_object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        stack.depth -= 1;
                    } else {
                        if is_object {
                            self.member_name(stack.object())?;
                        }
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    self.string(None)?;
                }
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal("true")?,
                Some(b'f') => self.literal("false")?,
                Some(b'n') => self.literal("null")?,
                Some(_) => return fail(JsonRule::Syntax("expected a value"), start),
                None => return fail(JsonRule::Syntax("expected a value, found the end"), start),
            }
            // A value ended: close containers until one continues with a comma.
            loop {
                self.skip_whitespace();
                if stack.depth == 0 {
                    if self.pos == self.bytes.len() {
                        return Ok(());
                    }
                    return fail(
                        JsonRule::Syntax("expected the end after the value"),
                        self.pos,
                    );
                }
                let in_object = stack.innermost_is_object();
                let (close, expected) = if in_object {
                    (b'}', "expected ',' or '}'")
                } else {
                    (b']', "expected ',' or ']'")
                };
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if in_object {
                            self.skip_whitespace();
                            self.member_name(stack.object())?;
                        }
                        continue 'value;
                    }
                    Some(b) if b == close => {
                        self.pos += 1;
                        if in_object {
                            self.names.open.truncate(stack.object().1);
                        }
                        stack.depth -= 1;
                    }
                    _ => return fail(JsonRule::Syntax(expected), self.pos),
                }
            }
        }
    }

    /// A member name and its `:`, checked against the other names of `object` (its number
    /// and where its names start).
    fn member_name(&mut self, object: (u32, usize)) -> Result<(), JsonError> {
        let start = self.pos;
        if self.peek() != Some(b'"') {
            return fail(JsonRule::Syntax("expected a member name"), start);
        }
        let escaped = self.string(None)?;
        let name = Name {
            start,
            end: self.pos,
            escaped,
        };
        if self.names.is_repeated(self.text, object, name) {
            return fail(JsonRule::DuplicateName, start);
        }
        self.skip_whitespace();
        if self.peek() != Some(b':') {
            return fail(JsonRule::Syntax("expected ':'"), self.pos);
        }
        self.pos += 1;
        Ok(())
    }

    fn literal(&mut self, word: &'static str) -> Result<(), JsonError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            fail(JsonRule::Syntax("expected a value"), self.pos)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return fail(JsonRule::Syntax("expected a digit"), self.pos),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return fail(JsonRule::Syntax("expected a digit after '.'"), self.pos);
            }
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            exponent = true;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return fail(
                    JsonRule::Syntax("expected a digit in the exponent"),
                    self.pos,
                );
            }
        }
        // Only an exponent or more than 308 digits can reach a double's limit (about 1.8e308),
        // so the common number is not parsed at all.
        if exponent || self.pos - start > 308 {
            let finite = self.text[start..self.pos]
                .parse::<f64>()
                .is_ok_and(f64::is_finite);
            if !finite {
                return fail(JsonRule::NumberOutOfRange, start);
            }
        }
        Ok(())
    }

    /// A string starting at the opening quote; `decoded` receives its unescaped text.
    ///
    /// A noncharacter is reported only once the string is known to be well formed, so the
    /// first error found is the one a strict parser would report first.
    /// Says whether the string holds an escape (if not, its bytes are its text).
    fn string(&mut self, mut decoded: Option<&mut String>) -> Result<bool, JsonError> {
        self.pos += 1;
        let mut noncharacter = None;
        let mut escaped = false;
        loop {
            let run = self.pos;
            self.pos += self.bytes[run..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))
                .unwrap_or(self.bytes.len() - run);
            if let Some(out) = decoded.as_deref_mut() {
                out.push_str(&self.text[run..self.pos]);
            }
            let at = self.pos;
            let c = match self.peek() {
                None => return fail(JsonRule::Syntax("unterminated string"), at),
                Some(b'"') => {
                    self.pos += 1;
                    return match noncharacter {
                        Some((c, offset)) => fail(JsonRule::Noncharacter(c), offset),
                        None => Ok(escaped),
                    };
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?
                }
                Some(b) if b < 0x20 => {
                    return fail(
                        JsonRule::Syntax("control character in a string must be escaped"),
                        at,
                    )
                }
                Some(_) => {
                    // `text` is a `str`, so a non-ASCII byte starts a whole character.
                    let c = self.text[at..].chars().next().unwrap_or('\u{fffd}');
                    self.pos += c.len_utf8();
                    c
                }
            };
            if noncharacter.is_none() && is_noncharacter(c) {
                noncharacter = Some((c, at));
            }
            if let Some(out) = decoded.as_deref_mut() {
                out.push(c);
            }
        }
    }

    /// One escape starting at its backslash; a surrogate escape must be followed by its pair.
    fn escape(&mut self) -> Result<char, JsonError> {
        let at = self.pos;
        self.pos += 1;
        let simple = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                let unit = self.hex4(at)?;
                return match unit {
                    0xD800..=0xDBFF => {
                        let rest = &self.bytes[self.pos..];
                        if rest.is_empty() || rest == b"\\" {
                            return fail(JsonRule::Syntax("unterminated string"), self.bytes.len());
                        }
                        let low = if rest.starts_with(b"\\u") {
                            self.pos += 2;
                            self.hex4(self.pos - 2)?
                        } else {
                            0
                        };
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return fail(JsonRule::LoneSurrogate, at);
                        }
                        let scalar = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        Ok(char::from_u32(scalar).unwrap_or('\u{fffd}'))
                    }
                    0xDC00..=0xDFFF => fail(JsonRule::LoneSurrogate, at),
                    _ => Ok(char::from_u32(unit).unwrap_or('\u{fffd}')),
                };
            }
            _ => return fail(JsonRule::Syntax("invalid escape"), at),
        };
        self.pos += 1;
        Ok(simple)
    }

    /// Four hex digits of a `\u` escape that starts at `escape`.
    fn hex4(&mut self, escape: usize) -> Result<u32, JsonError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok());
        match digits {
            Some(unit) => {
                self.pos += 4;
                Ok(unit)
            }
            None => fail(
                JsonRule::Syntax("expected four hex digits after \\u"),
                escape,
            ),
        }
    }
}

fn fail<T>(rule: JsonRule, offset: usize) -> Result<T, JsonError> {
    Err(JsonError { rule, offset })
}

fn is_noncharacter(c: char) -> bool {
    let c = c as u32;
    (0xFDD0..=0xFDEF).contains(&c) || c & 0xFFFE == 0xFFFE
}

/// A member name: offsets of its opening quote and just past its closing quote.
#[derive(Clone, Copy)]
struct Name {
    start: usize,
    end: usize,
    escaped: bool,
}

/// Names of one object are compared one by one while it has up to this many: no hashing and,
/// for names without escapes (nearly all), no copying either.
const NAMES_COMPARED_IN_TURN: usize = 16;

/// The member names of the open objects.
///
/// Past [`NAMES_COMPARED_IN_TURN`] names, an object's names go into a set of keyed hashes of
/// their unescaped text. The hash is keyed per process ([`RandomState`]), so a sender cannot
/// craft names that collide on purpose; two names with the same hash are still compared in
/// full before a payload is refused.
#[derive(Default)]
struct MemberNames {
    hasher: RandomState,
    /// Names of the open objects that have at most `NAMES_COMPARED_IN_TURN`, innermost last.
    open: Vec<Name>,
    /// (object number, name hash) → the first name with that hash, for larger objects.
    hashed: HashMap<(u32, u64), Name>,
    /// Unescaped text of names that have escapes, when they must be compared or hashed.
    current: String,
    earlier: String,
}

impl MemberNames {
    /// Records `name` as a name of `object` (its number and where its names start in
    /// `open`), or says it repeats an earlier name of the same object.
    fn is_repeated(&mut self, text: &str, (object, first): (u32, usize), name: Name) -> bool {
        if self.open.len() - first < NAMES_COMPARED_IN_TURN {
            for i in first..self.open.len() {
                if self.same(text, self.open[i], name) {
                    return true;
                }
            }
            self.open.push(name);
            if self.open.len() - first == NAMES_COMPARED_IN_TURN {
                for i in first..self.open.len() {
                    let earlier = self.open[i];
                    let hash = self.hash(text, earlier);
                    self.hashed.entry((object, hash)).or_insert(earlier);
                }
            }
            return false;
        }
        let hash = self.hash(text, name);
        match self.hashed.entry((object, hash)) {
            Entry::Vacant(slot) => {
                slot.insert(name);
                false
            }
            Entry::Occupied(first) => {
                let earlier = *first.get();
                self.same(text, earlier, name)
            }
        }
    }

    fn same(&mut self, text: &str, a: Name, b: Name) -> bool {
        if !a.escaped && !b.escaped {
            return text[a.start..a.end] == text[b.start..b.end];
        }
        let mut current = std::mem::take(&mut self.current);
        let mut earlier = std::mem::take(&mut self.earlier);
        unescape(text, a, &mut earlier);
        unescape(text, b, &mut current);
        let same = earlier == current;
        self.current = current;
        self.earlier = earlier;
        same
    }

    fn hash(&mut self, text: &str, name: Name) -> u64 {
        if !name.escaped {
            return self.hasher.hash_one(&text[name.start + 1..name.end - 1]);
        }
        let mut current = std::mem::take(&mut self.current);
        unescape(text, name, &mut current);
        let hash = self.hasher.hash_one(current.as_str());
        self.current = current;
        hash
    }
}

/// The text of a name already scanned once (so this cannot fail), into `out`.
fn unescape(text: &str, name: Name, out: &mut String) {
    out.clear();
    let mut rescan = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: name.start,
        names: MemberNames::default(),
    };
    let _ = rescan.string(Some(out));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Option<(JsonRule, usize)> {
        validate_json(text).err().map(|e| (e.rule, e.offset))
    }

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn accepts_ordinary_json() {
        for text in [
            "0",
            "-0.5e-3",
            " true ",
            "null",
            r#""""#,
            r#"{"a":[1,2,{"b":null}],"c":"\u00e9\ud83d\ude00\n","d":{}}"#,
            "[]",
            "{}",
            "\"héllo 😀\"",
            "1e308",
            "1e-400",
            r#"{"a":{"x":1},"b":{"x":2}}"#,
        ] {
            assert_eq!(validate_json(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn lone_surrogates() {
        assert_eq!(
            rule(r#"{"s":"\ud800"}"#),
            Some((JsonRule::LoneSurrogate, 6))
        );
        assert_eq!(rule(r#""\udc00""#), Some((JsonRule::LoneSurrogate, 1)));
        assert_eq!(rule(r#""\uDBFF x""#), Some((JsonRule::LoneSurrogate, 1)));
        // Reversed pair: the low half comes first, so it is alone.
        assert_eq!(
            rule(r#""\udc00\ud800""#),
            Some((JsonRule::LoneSurrogate, 1))
        );
        // Two high halves.
        assert_eq!(
            rule(r#""\ud800\ud800""#),
            Some((JsonRule::LoneSurrogate, 1))
        );
        // A lone surrogate in a member name is refused too.
        assert_eq!(rule(r#"{"\ud800":1}"#), Some((JsonRule::LoneSurrogate, 2)));
        // The pair, in either case of hex digits.
        assert_eq!(validate_json(r#""\ud83d\ude00""#), Ok(()));
        assert_eq!(validate_json(r#""\uD83D\uDE00""#), Ok(()));
    }

    #[test]
    fn noncharacters() {
        assert_eq!(
            rule(r#""\uffff""#),
            Some((JsonRule::Noncharacter('\u{ffff}'), 1))
        );
        assert_eq!(
            rule("\"a\u{fdd0}\""),
            Some((JsonRule::Noncharacter('\u{fdd0}'), 2))
        );
        assert_eq!(
            rule(r#""\ud83f\udfff""#),
            Some((JsonRule::Noncharacter('\u{1ffff}'), 1))
        );
        assert!(validate_json("\"\u{fffd}\u{fdef}x\"").is_err());
        // A later syntax error or lone surrogate in the same string is reported first.
        assert_eq!(
            rule(r#""\uffff\ud800""#),
            Some((JsonRule::LoneSurrogate, 7))
        );
        assert_eq!(validate_json("\"\u{fffd}\u{fdf0}\""), Ok(()));
    }

    #[test]
    fn duplicate_names() {
        assert_eq!(rule(r#"{"a":1,"a":2}"#), Some((JsonRule::DuplicateName, 7)));
        // Compared after unescaping.
        assert_eq!(
            rule(r#"{"a":1,"\u0061":2}"#),
            Some((JsonRule::DuplicateName, 7))
        );
        // At depth, in an object that follows another with the same names.
        let deep = r#"[{"k":{"x":1}},{"k":{"x":1,"y":2,"x":3}}]"#;
        assert_eq!(rule(deep), Some((JsonRule::DuplicateName, 33)));
        // Past 16 names an object's names are hashed: the same rules hold there.
        let many: Vec<String> = (0..40).map(|i| format!(r#""n{i}":{{"n{i}":0}}"#)).collect();
        let many = many.join(",");
        assert_eq!(validate_json(&format!("{{{many}}}")), Ok(()));
        for repeat in ["n3", "n\\u0033", "n39", "n20"] {
            let text = format!(r#"{{{many},"{repeat}":1}}"#);
            let offset = text.len() - repeat.len() - 5;
            assert_eq!(
                rule(&text),
                Some((JsonRule::DuplicateName, offset)),
                "{repeat}"
            );
        }
        let escaped_first = format!(r#"{{"n\u0031\u0037":0,{many}}}"#);
        assert!(matches!(
            rule(&escaped_first),
            Some((JsonRule::DuplicateName, _))
        ));
        // A nested object's names do not count as its parent's.
        assert_eq!(
            validate_json(r#"{"a":{"b":1,"c":2},"b":{"a":1},"c":3}"#),
            Ok(())
        );
        assert_eq!(
            rule(r#"{"a":{"b":1,"c":2},"b":{"a":1},"a":3}"#),
            Some((JsonRule::DuplicateName, 31))
        );
        // The same name in sibling or nested objects is fine.
        assert_eq!(validate_json(r#"{"a":{"a":{"a":1}},"b":{"a":2}}"#), Ok(()));
    }

    #[test]
    fn depth_limit() {
        assert_eq!(validate_json(&nested(MAX_JSON_DEPTH)), Ok(()));
        assert_eq!(
            rule(&nested(MAX_JSON_DEPTH + 1)),
            Some((JsonRule::TooDeep, MAX_JSON_DEPTH))
        );
        assert_eq!(
            rule(&nested(300)),
            Some((JsonRule::TooDeep, MAX_JSON_DEPTH))
        );
        let objects = format!(
            "{}1{}",
            r#"{"a":"#.repeat(MAX_JSON_DEPTH),
            "}".repeat(MAX_JSON_DEPTH)
        );
        assert_eq!(validate_json(&objects), Ok(()));
        // Depth counts open containers, not values seen: many siblings are fine.
        let wide = format!("[{}[]]", "[],".repeat(10_000));
        assert_eq!(validate_json(&wide), Ok(()));
    }

    #[test]
    fn numbers() {
        assert_eq!(rule("1e400"), Some((JsonRule::NumberOutOfRange, 0)));
        assert_eq!(rule("[-1E+309]"), Some((JsonRule::NumberOutOfRange, 1)));
        let long = "9".repeat(400);
        assert_eq!(rule(&long), Some((JsonRule::NumberOutOfRange, 0)));
        assert_eq!(validate_json(&"9".repeat(300)), Ok(()));
        for bad in ["01", "1.", ".5", "-", "1e", "+1", "0x10", "NaN", "Infinity"] {
            assert!(matches!(rule(bad), Some((JsonRule::Syntax(_), _))), "{bad}");
        }
    }

    #[test]
    fn syntax_errors_name_an_offset() {
        assert!(matches!(rule(""), Some((JsonRule::Syntax(_), 0))));
        assert!(matches!(rule("1 2"), Some((JsonRule::Syntax(_), 2))));
        assert!(matches!(rule("[1,]"), Some((JsonRule::Syntax(_), 3))));
        assert!(matches!(rule(r#"{"a" 1}"#), Some((JsonRule::Syntax(_), 5))));
        assert!(matches!(
            rule(r#"{"a":1,}"#),
            Some((JsonRule::Syntax(_), 7))
        ));
        assert!(matches!(rule("\"a\u{1}\""), Some((JsonRule::Syntax(_), 2))));
        assert!(matches!(rule(r#""\x""#), Some((JsonRule::Syntax(_), 1))));
        assert!(matches!(rule(r#""\u12""#), Some((JsonRule::Syntax(_), 1))));
        assert!(matches!(rule(r#""abc"#), Some((JsonRule::Syntax(_), 4))));
        assert!(matches!(rule("[1"), Some((JsonRule::Syntax(_), 2))));
        assert!(matches!(rule("tru"), Some((JsonRule::Syntax(_), 0))));
        assert!(matches!(rule("\u{feff}1"), Some((JsonRule::Syntax(_), 0))));
    }

    #[test]
    fn big_valid_documents() {
        let mut members = String::from("{");
        for i in 0..50_000 {
            if i > 0 {
                members.push(',');
            }
            members.push_str(&format!(
                r#""key{i}":{{"n":{i},"s":"v\u00e9{i}","a":[true,null]}}"#
            ));
        }
        members.push('}');
        assert_eq!(validate_json(&members), Ok(()));
        let strings = format!(r#"["{}"]"#, "x😀\\n".repeat(200_000));
        assert_eq!(validate_json(&strings), Ok(()));
        // The same document with one duplicate at the very end is refused there.
        let mut duplicate = members[..members.len() - 1].to_owned();
        duplicate.push_str(r#","key7":0}"#);
        let offset = members.len();
        assert_eq!(rule(&duplicate), Some((JsonRule::DuplicateName, offset)));
    }

    #[test]
    fn reason_names_rule_and_offset() {
        let error = validate_json(r#"{"s":"\ud800"}"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "lone surrogate escape (I-JSON, RFC 7493 §2.1) at byte 6"
        );
    }
}
