//! `validate_json`: the I-JSON check (RFC 7493 plus a nesting limit) that every `json` payload
//! passes on every publish path (`ContentType::validate`) and every client message passes
//! before it is read (`ClientMessage::parse`).
//!
//! Properties: never panics; an error's offset is inside the input (or at its end); it agrees
//! with `serde_json`, read through a visitor that adds the I-JSON rules serde_json does not
//! check (nesting, repeated names, noncharacters): a document serde_json reads within those
//! rules is accepted, one it refuses is refused for the same kind of reason. The one allowed
//! difference is a number at the very edge of a double's range, which serde_json's default
//! float parser may round differently from the standard library's.
#![no_main]

use std::collections::HashSet;
use std::fmt;

use libfuzzer_sys::fuzz_target;
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use streamgate_core::{validate_json, JsonRule, MAX_JSON_DEPTH};

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Syntax,
    LoneSurrogate,
    Noncharacter,
    DuplicateName,
    TooDeep,
    NumberOutOfRange,
}

fn kind_of(rule: JsonRule) -> Kind {
    match rule {
        JsonRule::Syntax(_) => Kind::Syntax,
        JsonRule::LoneSurrogate => Kind::LoneSurrogate,
        JsonRule::Noncharacter(_) => Kind::Noncharacter,
        JsonRule::DuplicateName => Kind::DuplicateName,
        JsonRule::TooDeep => Kind::TooDeep,
        JsonRule::NumberOutOfRange => Kind::NumberOutOfRange,
        _ => unreachable!("a rule this target does not know: {rule:?}"),
    }
}

/// The oracle's reading of a serde_json error message.
fn kind_of_serde(message: &str) -> Kind {
    if message.starts_with("oracle: duplicate") {
        Kind::DuplicateName
    } else if message.starts_with("oracle: too deep") {
        Kind::TooDeep
    } else if message.starts_with("oracle: noncharacter") {
        Kind::Noncharacter
    } else if message.contains("surrogate") || message.contains("end of hex escape") {
        Kind::LoneSurrogate
    } else if message.contains("number out of range") {
        Kind::NumberOutOfRange
    } else {
        Kind::Syntax
    }
}

/// Reads any value, holding it to the rules serde_json leaves out.
#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
}

impl Strict {
    fn deeper<E: serde::de::Error>(self) -> Result<Self, E> {
        if self.depth == MAX_JSON_DEPTH {
            return Err(E::custom("oracle: too deep"));
        }
        Ok(Self {
            depth: self.depth + 1,
        })
    }
}

fn check_chars<E: serde::de::Error>(s: &str) -> Result<(), E> {
    let bad = |c: char| {
        let c = c as u32;
        (0xFDD0..=0xFDEF).contains(&c) || c & 0xFFFE == 0xFFFE
    };
    if s.chars().any(bad) {
        return Err(E::custom("oracle: noncharacter"));
    }
    Ok(())
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        check_chars(s)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        let mut names = HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            check_chars(&name)?;
            if !names.insert(name) {
                return Err(A::Error::custom("oracle: duplicate"));
            }
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

fn oracle(text: &str) -> Result<(), Kind> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    Strict { depth: 0 }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end())
        .map_err(|e| kind_of_serde(&e.to_string()))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ours = validate_json(text);
    if let Err(error) = &ours {
        assert!(
            error.offset <= text.len(),
            "{error} in {} bytes",
            text.len()
        );
        assert!(!error.to_string().is_empty());
    }
    let ours = ours.map_err(|e| kind_of(e.rule));
    let theirs = oracle(text);
    match (&ours, &theirs) {
        (Ok(()), Err(Kind::NumberOutOfRange)) | (Err(Kind::NumberOutOfRange), Ok(())) => {}
        _ => assert_eq!(
            ours, theirs,
            "validate_json and serde_json disagree on {text:?}"
        ),
    }
});
