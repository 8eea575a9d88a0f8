//! Where each topic lives: one NATS subject per topic, `{prefix}.t.{token}`.
//!
//! One subject per topic is what lets JetStream keep a bounded history *per topic*
//! (`max_msgs_per_subject`) inside a single stream with a single sequence counter.
//!
//! A topic cannot be used as the token as it is: topic names may contain `.`, including
//! leading, trailing and doubled dots (`.x`, `x..y`), while `.` separates subject tokens and
//! an empty token is illegal. So the token is the topic with two bytes escaped, URL style
//! but with `_` as the escape character: `.` becomes `_2E` and `_` itself becomes `_5F`.
//! Letters, digits and `-` stay as they are, so names remain readable in NATS tooling
//! (`a.b` is stored under `streamgate.t.a_2Eb`), the token never contains a dot, a
//! wildcard or whitespace, and decoding is exact. The exact topic name also travels in a
//! header of every message; the subject is the fallback.

use streamgate_core::Topic;

/// The escape character of a subject token; see the module documentation.
const ESCAPE: u8 = b'_';
const HEX_DIGITS: &[u8; 16] = b"0123456789ABCDEF";

/// The subjects of one log: `{prefix}.t.>`.
#[derive(Clone, Debug)]
pub(crate) struct Subjects {
    /// `{prefix}.t.`, ready for a token to be appended.
    topic_root: String,
}

impl Subjects {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            topic_root: format!("{prefix}.t."),
        }
    }

    /// The wildcard capturing every topic: what the stream listens to.
    pub(crate) fn all_topics(&self) -> String {
        format!("{}>", self.topic_root)
    }

    /// The subject of `topic`.
    pub(crate) fn of_topic(&self, topic: &Topic) -> String {
        let mut subject = String::with_capacity(self.topic_root.len() + topic.as_str().len() + 8);
        subject.push_str(&self.topic_root);
        for byte in topic.as_str().bytes() {
            match byte {
                b'.' | ESCAPE => {
                    subject.push(ESCAPE as char);
                    subject.push(HEX_DIGITS[usize::from(byte >> 4)] as char);
                    subject.push(HEX_DIGITS[usize::from(byte & 0x0f)] as char);
                }
                other => subject.push(other as char),
            }
        }
        subject
    }

    /// The topic a subject of this log belongs to, or `None` when the subject is not one
    /// this crate writes (another prefix, a malformed escape, a name no topic can have).
    pub(crate) fn topic_of(&self, subject: &str) -> Option<Topic> {
        let token = subject.strip_prefix(&self.topic_root)?;
        let mut name = Vec::with_capacity(token.len());
        let mut bytes = token.bytes();
        while let Some(byte) = bytes.next() {
            if byte == ESCAPE {
                let high = hex_value(bytes.next()?)?;
                let low = hex_value(bytes.next()?)?;
                name.push(high << 4 | low);
            } else {
                name.push(byte);
            }
        }
        let name = String::from_utf8(name).ok()?;
        let topic = Topic::new(&name).ok()?;
        // Only the canonical spelling maps back: `_61` for `a` would be a second subject for
        // one topic, and its history would escape the per-subject bound.
        (self.of_topic(&topic) == subject).then_some(topic)
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap()
    }

    #[test]
    fn escapes_dots_and_the_escape_character() {
        let subjects = Subjects::new("sg");
        assert_eq!(subjects.of_topic(&topic("demo")), "sg.t.demo");
        assert_eq!(subjects.of_topic(&topic("a.b")), "sg.t.a_2Eb");
        assert_eq!(subjects.of_topic(&topic(".x")), "sg.t._2Ex");
        assert_eq!(subjects.of_topic(&topic("x..y")), "sg.t.x_2E_2Ey");
        assert_eq!(subjects.of_topic(&topic("-_.")), "sg.t.-_5F_2E");
        assert_eq!(subjects.all_topics(), "sg.t.>");
    }

    #[test]
    fn round_trips_every_alphabet_character() {
        let subjects = Subjects::new("a.b");
        let alphabet: String = ('a'..='z')
            .chain('A'..='Z')
            .chain('0'..='9')
            .chain(['_', '-', '.'])
            .collect();
        for name in [
            alphabet.as_str(),
            ".",
            "..",
            "_",
            "__",
            "_2E",
            "x".repeat(128).as_str(),
        ] {
            let subject = subjects.of_topic(&topic(name));
            assert_eq!(subject.split('.').count(), 4, "{subject}");
            assert_eq!(subjects.topic_of(&subject), Some(topic(name)));
        }
        let all_dots = ".".repeat(128);
        assert_eq!(
            subjects.topic_of(&subjects.of_topic(&topic(&all_dots))),
            Some(topic(&all_dots))
        );
    }

    #[test]
    fn rejects_foreign_and_non_canonical_subjects() {
        let subjects = Subjects::new("sg");
        for subject in [
            "other.t.demo",
            "sg.t.",
            "sg.t.a.b",
            "sg.t._2",
            "sg.t._zz",
            "sg.t._61",
            "sg.t._2e",
            "sg.t.a/b",
        ] {
            assert_eq!(subjects.topic_of(subject), None, "{subject}");
        }
    }
}
