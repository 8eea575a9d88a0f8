//! The long-poll exchange without I/O: query parsing, timeout clamping, batch building and
//! the choice of the next cursor. The async handler in `transport.rs` feeds it deliveries and
//! writes out what it returns.
//!
//! # Batch rules
//!
//! A batch takes deliveries in subscription order until one of these stops it:
//! - it holds `max_events` events (notices do not count);
//! - the next message would make the `messages` array content (envelopes plus the commas
//!   between them) exceed `max_bytes`. That message is left out and the batch is closed.
//!
//! Until the batch holds an event, every message is taken whatever its size. So a batch always
//! carries at least one message, and never stops at notices alone while an event is ready: a
//! `gap` notice followed by an event larger than `max_bytes` still makes progress.
//!
//! A message left out is not lost: the next cursor is the id of the last event *taken*, and the
//! next poll resumes from there (from history), so it comes again.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use streamgate_core::{EventId, Rejection, Topic};
use streamgate_proto::{EnvelopeFormat, SubscribeQuery};

/// What the client asked for in `GET /poll?topics=…&cursor=…&timeout=…&limit=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollQuery {
    /// `topics=a,b` (at least one).
    pub topics: Vec<Topic>,
    /// `cursor=` (or its aliases `since=`, `last_event_id=`): resume after this id.
    pub cursor: Option<EventId>,
    /// How long to hold the request when nothing is ready, already clamped.
    pub timeout: Duration,
    /// Most events in the response, already clamped to the configured maximum.
    pub max_events: usize,
}

/// The server-side bounds a [`PollQuery`] is parsed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryBounds {
    /// Hold time when the query names none.
    pub default_timeout: Duration,
    /// Longest hold time; longer requests are clamped to it.
    pub max_timeout: Duration,
    /// Most events per batch; a larger `limit` is clamped to it.
    pub max_events: usize,
}

impl PollQuery {
    /// Parses a raw (percent-encoded) query string.
    ///
    /// # Errors
    /// `bad_topic`, `bad_cursor`, `no_topics`, or `bad_query` (a malformed or repeated
    /// `timeout` or `limit`, or `envelope=binary`, which long polling cannot carry).
    pub fn parse(query: Option<&str>, bounds: &QueryBounds) -> Result<Self, Rejection> {
        let subscribe = SubscribeQuery::parse(query)?;
        let mut timeout = None;
        let mut limit = None;
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match key.as_ref() {
                "timeout" => &mut timeout,
                "limit" => &mut limit,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(Rejection::new(
                    "bad_query",
                    format!("parameter {key} is given twice"),
                ));
            }
        }
        if subscribe.envelope == EnvelopeFormat::Binary {
            return Err(Rejection::new(
                "bad_query",
                "long polling answers with JSON batches only; drop envelope=binary",
            ));
        }
        if subscribe.topics.is_empty() {
            return Err(Rejection::new(
                "no_topics",
                "name the topics to poll: GET /poll?topics=a,b",
            ));
        }
        let timeout = match timeout {
            None => bounds.default_timeout.min(bounds.max_timeout),
            Some(text) => parse_timeout(&text, bounds.max_timeout)?,
        };
        let max_events = match limit {
            None => bounds.max_events,
            Some(text) => parse_limit(&text, bounds.max_events)?,
        };
        Ok(Self {
            topics: subscribe.topics,
            cursor: subscribe.since,
            timeout,
            max_events: max_events.max(1),
        })
    }
}

/// Parses `timeout=<seconds>`: a decimal number (`25`, `0.2`), clamped to `max`.
///
/// # Errors
/// `bad_query` if `text` is not digits with an optional fraction.
pub fn parse_timeout(text: &str, max: Duration) -> Result<Duration, Rejection> {
    let bad = || {
        Rejection::new(
            "bad_query",
            format!("timeout must be a number of seconds such as 25 or 0.5, got {text:?}"),
        )
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) {
        return Err(bad());
    }
    let secs: f64 = text.parse().map_err(|_| bad())?;
    // Digits only, so `secs` is finite and non-negative; a huge value saturates to `max`.
    Ok(Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max)))
}

/// Parses `limit=<events>`: an integer of at least 1, clamped to `max`.
///
/// # Errors
/// `bad_query` if `text` is not a positive integer.
pub fn parse_limit(text: &str, max: usize) -> Result<usize, Rejection> {
    let bad = || {
        Rejection::new(
            "bad_query",
            format!("limit must be a whole number of events, at least 1, got {text:?}"),
        )
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // Digits only: a parse failure is an overflow, which clamps like any large value.
    match text.parse::<usize>() {
        Ok(0) => Err(bad()),
        Ok(n) => Ok(n.min(max)),
        Err(_) => Ok(max),
    }
}

/// The bounds of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most events (notices do not count). At least 1.
    pub max_events: usize,
    /// Most bytes of envelopes and separating commas, except that messages are taken whatever
    /// their size until the batch holds an event.
    pub max_bytes: usize,
}

/// Whether [`Batch`] took a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Taken; the batch may take more.
    Taken,
    /// Taken, and the batch is now full: stop pulling deliveries.
    TakenFull,
    /// Not taken (it would exceed `max_bytes`); the batch is closed. The message comes again
    /// on the next poll, which resumes from [`Batch::last_event`].
    Refused,
}

/// One response under construction.
#[derive(Debug, Clone)]
pub struct Batch {
    limits: BatchLimits,
    messages: Vec<Bytes>,
    /// Bytes of the `messages` array content so far (envelopes and commas).
    content_len: usize,
    events: usize,
    last_event: Option<EventId>,
    closed: bool,
}

impl Batch {
    /// An empty batch.
    pub fn new(limits: BatchLimits) -> Self {
        Self {
            limits: BatchLimits {
                max_events: limits.max_events.max(1),
                max_bytes: limits.max_bytes,
            },
            messages: Vec::new(),
            content_len: 0,
            events: 0,
            last_event: None,
            closed: false,
        }
    }

    /// Whether the batch takes no more messages: pull no further delivery for it.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether nothing was taken yet.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Events taken.
    pub fn events(&self) -> usize {
        self.events
    }

    /// The id of the last event taken.
    pub fn last_event(&self) -> Option<&EventId> {
        self.last_event.as_ref()
    }

    /// Offers an event's JSON envelope.
    pub fn offer_event(&mut self, id: &EventId, envelope: Bytes) -> Offer {
        self.offer(envelope, Some(id))
    }

    /// Offers a notice (`gap`, `reset`, `lagged`) encoded as JSON.
    pub fn offer_notice(&mut self, notice: Bytes) -> Offer {
        self.offer(notice, None)
    }

    fn offer(&mut self, message: Bytes, event: Option<&EventId>) -> Offer {
        if self.closed {
            return Offer::Refused;
        }
        let separator = usize::from(!self.messages.is_empty());
        let len = self.content_len + separator + message.len();
        if self.events > 0 && len > self.limits.max_bytes {
            self.closed = true;
            return Offer::Refused;
        }
        self.content_len = len;
        self.messages.push(message);
        if let Some(id) = event {
            self.events += 1;
            self.last_event = Some(id.clone());
        }
        // Full when no further event may come, or not even a one-byte message would fit.
        if self.events >= self.limits.max_events
            || (self.events > 0 && len >= self.limits.max_bytes)
        {
            self.closed = true;
            return Offer::TakenFull;
        }
        Offer::Taken
    }

    /// The response body: `{"cursor":"<cursor>","messages":[<m1>,<m2>,…]}`, with each
    /// message's bytes copied verbatim (never re-serialised).
    pub fn into_body(self, cursor: &EventId) -> Bytes {
        const HEAD: &[u8] = b"{\"cursor\":\"";
        const MIDDLE: &[u8] = b"\",\"messages\":[";
        const TAIL: &[u8] = b"]}";
        // Epochs and sequences are alphanumeric: the cursor never needs JSON escaping.
        let cursor = cursor.to_string();
        let mut body = BytesMut::with_capacity(
            HEAD.len() + cursor.len() + MIDDLE.len() + self.content_len + TAIL.len(),
        );
        body.put_slice(HEAD);
        body.put_slice(cursor.as_bytes());
        body.put_slice(MIDDLE);
        for (i, message) in self.messages.iter().enumerate() {
            if i > 0 {
                body.put_u8(b',');
            }
            body.put_slice(message);
        }
        body.put_slice(TAIL);
        body.freeze()
    }
}

/// The cursor a response hands back, from which the client's next poll resumes.
///
/// - the id of the last event in the batch, if any;
/// - else the request's cursor, when it is of the subscription's epoch (nothing was delivered,
///   so the client stays where it was);
/// - else the subscription's start: for a first poll without a cursor, "now" (so nothing
///   published after this poll began is ever missed); after a `reset` (the cursor was of
///   another epoch), `epoch:0` of the current epoch, so the next poll does not get the same
///   `reset` again.
pub fn next_cursor(
    last_event: Option<&EventId>,
    request: Option<&EventId>,
    start: &EventId,
) -> EventId {
    last_event
        .or(request.filter(|cursor| cursor.epoch == start.epoch))
        .unwrap_or(start)
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamgate_core::Epoch;

    const S: Duration = Duration::from_secs(1);

    fn id(text: &str) -> EventId {
        text.parse().unwrap()
    }

    fn bounds() -> QueryBounds {
        QueryBounds {
            default_timeout: 25 * S,
            max_timeout: 60 * S,
            max_events: 100,
        }
    }

    fn parse(query: &str) -> Result<PollQuery, Rejection> {
        PollQuery::parse(Some(query), &bounds())
    }

    fn code(query: &str) -> &'static str {
        parse(query).unwrap_err().code
    }

    #[test]
    fn query_defaults_and_aliases() {
        let q = parse("topics=a,b&cursor=ep%3A7").unwrap();
        assert_eq!(
            q.topics,
            vec![Topic::new("a").unwrap(), Topic::new("b").unwrap()]
        );
        assert_eq!(q.cursor, Some(id("ep:7")));
        assert_eq!(q.timeout, 25 * S);
        assert_eq!(q.max_events, 100);
        assert_eq!(
            parse("topics=a&since=ep:8").unwrap().cursor,
            Some(id("ep:8"))
        );
        assert_eq!(parse("topics=a&cursor=").unwrap().cursor, None);
        let q = parse("topics=a&timeout=0.25&limit=7&unknown=1").unwrap();
        assert_eq!(q.timeout, Duration::from_millis(250));
        assert_eq!(q.max_events, 7);
    }

    #[test]
    fn timeout_parsing_and_clamping() {
        let max = 60 * S;
        assert_eq!(parse_timeout("0", max).unwrap(), Duration::ZERO);
        assert_eq!(
            parse_timeout("0.2", max).unwrap(),
            Duration::from_millis(200)
        );
        assert_eq!(parse_timeout("25", max).unwrap(), 25 * S);
        assert_eq!(parse_timeout("60", max).unwrap(), 60 * S);
        assert_eq!(parse_timeout("61", max).unwrap(), 60 * S);
        assert_eq!(parse_timeout(&"9".repeat(400), max).unwrap(), 60 * S);
        for bad in [
            "", "-1", "1.", ".5", "1e3", "inf", "NaN", " 1", "1s", "0x10", "1.2.3",
        ] {
            assert_eq!(
                parse_timeout(bad, max).unwrap_err().code,
                "bad_query",
                "{bad:?}"
            );
        }
        // The default is clamped too, if configured above the maximum.
        let q = PollQuery::parse(
            Some("topics=a"),
            &QueryBounds {
                default_timeout: 90 * S,
                ..bounds()
            },
        )
        .unwrap();
        assert_eq!(q.timeout, 60 * S);
        assert_eq!(parse("topics=a&timeout=600").unwrap().timeout, 60 * S);
    }

    #[test]
    fn limit_parsing_and_clamping() {
        assert_eq!(parse_limit("1", 100).unwrap(), 1);
        assert_eq!(parse_limit("100", 100).unwrap(), 100);
        assert_eq!(parse_limit("101", 100).unwrap(), 100);
        assert_eq!(parse_limit(&"9".repeat(40), 100).unwrap(), 100);
        for bad in ["", "0", "-1", "1.5", "ten"] {
            assert_eq!(
                parse_limit(bad, 100).unwrap_err().code,
                "bad_query",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn query_errors() {
        assert_eq!(code(""), "no_topics");
        assert_eq!(code("cursor=ep:1"), "no_topics");
        assert_eq!(code("topics=a&cursor=nope"), "bad_cursor");
        assert_eq!(code("topics=a/b"), "bad_topic");
        assert_eq!(code("topics=a&timeout=x"), "bad_query");
        assert_eq!(code("topics=a&timeout=1&timeout=2"), "bad_query");
        assert_eq!(code("topics=a&limit=0"), "bad_query");
        assert_eq!(code("topics=a&limit=1&limit=1"), "bad_query");
        assert_eq!(code("topics=a&envelope=binary"), "bad_query");
        assert!(parse("topics=a&envelope=json").is_ok());
        let reason = parse("topics=a&cursor=12").unwrap_err().reason;
        assert!(reason.contains("epoch:seq"), "{reason}");
    }

    fn limits(max_events: usize, max_bytes: usize) -> BatchLimits {
        BatchLimits {
            max_events,
            max_bytes,
        }
    }

    fn cursor() -> EventId {
        id("ep:9")
    }

    #[test]
    fn empty_batch_body() {
        let batch = Batch::new(limits(10, 100));
        assert!(batch.is_empty());
        assert_eq!(
            &batch.into_body(&cursor())[..],
            br#"{"cursor":"ep:9","messages":[]}"#
        );
    }

    #[test]
    fn messages_are_concatenated_verbatim() {
        let mut batch = Batch::new(limits(10, 1000));
        assert_eq!(
            batch.offer_notice(Bytes::from_static(br#"{"type":"reset"}"#)),
            Offer::Taken
        );
        assert_eq!(
            batch.offer_event(&id("ep:3"), Bytes::from_static(br#"{"e":3, "x" : [1]}"#)),
            Offer::Taken
        );
        assert_eq!(
            batch.offer_event(&id("ep:5"), Bytes::from_static(br#"{"e":5}"#)),
            Offer::Taken
        );
        assert_eq!(batch.events(), 2);
        assert_eq!(batch.last_event(), Some(&id("ep:5")));
        assert_eq!(
            &batch.into_body(&id("ep:5"))[..],
            br#"{"cursor":"ep:5","messages":[{"type":"reset"},{"e":3, "x" : [1]},{"e":5}]}"#
        );
    }

    #[test]
    fn event_count_limit() {
        let mut batch = Batch::new(limits(2, 1000));
        assert_eq!(batch.offer_notice(Bytes::from_static(b"{}")), Offer::Taken);
        assert_eq!(
            batch.offer_event(&id("ep:1"), Bytes::from_static(b"1")),
            Offer::Taken
        );
        assert!(!batch.is_closed());
        assert_eq!(
            batch.offer_event(&id("ep:2"), Bytes::from_static(b"2")),
            Offer::TakenFull
        );
        assert!(batch.is_closed());
        assert_eq!(
            batch.offer_event(&id("ep:3"), Bytes::from_static(b"3")),
            Offer::Refused
        );
        assert_eq!(batch.last_event(), Some(&id("ep:2")));
        assert_eq!(
            &batch.into_body(&id("ep:2"))[..],
            br#"{"cursor":"ep:2","messages":[{},1,2]}"#
        );
    }

    #[test]
    fn byte_limit_counts_envelopes_and_commas() {
        // Content "aaaa,bbbb" is 9 bytes: fits a 9-byte limit exactly.
        let mut batch = Batch::new(limits(10, 9));
        assert_eq!(
            batch.offer_event(&id("ep:1"), Bytes::from_static(b"aaaa")),
            Offer::Taken
        );
        assert_eq!(
            batch.offer_event(&id("ep:2"), Bytes::from_static(b"bbbb")),
            Offer::TakenFull
        );
        assert_eq!(
            &batch.into_body(&id("ep:2"))[..],
            br#"{"cursor":"ep:2","messages":[aaaa,bbbb]}"#
        );
        // One byte less and the second event is refused, closing the batch.
        let mut batch = Batch::new(limits(10, 8));
        assert_eq!(
            batch.offer_event(&id("ep:1"), Bytes::from_static(b"aaaa")),
            Offer::Taken
        );
        assert_eq!(
            batch.offer_event(&id("ep:2"), Bytes::from_static(b"bbbb")),
            Offer::Refused
        );
        assert!(batch.is_closed());
        assert_eq!(batch.offer_notice(Bytes::from_static(b"n")), Offer::Refused);
        assert_eq!(batch.last_event(), Some(&id("ep:1")));
        assert_eq!(
            &batch.into_body(&id("ep:1"))[..],
            br#"{"cursor":"ep:1","messages":[aaaa]}"#
        );
    }

    #[test]
    fn oversized_first_event_is_taken_alone() {
        let mut batch = Batch::new(limits(10, 3));
        assert_eq!(
            batch.offer_event(&id("ep:1"), Bytes::from_static(b"too long")),
            Offer::TakenFull
        );
        assert_eq!(
            &batch.into_body(&id("ep:1"))[..],
            br#"{"cursor":"ep:1","messages":[too long]}"#
        );
    }

    #[test]
    fn notices_never_starve_the_first_event() {
        // Notices over the byte limit, then an event over it too: all taken, so the cursor
        // moves and the next poll does not get the same notices forever.
        let mut batch = Batch::new(limits(10, 4));
        assert_eq!(
            batch.offer_notice(Bytes::from_static(b"gap-a")),
            Offer::Taken
        );
        assert_eq!(
            batch.offer_notice(Bytes::from_static(b"gap-b")),
            Offer::Taken
        );
        assert_eq!(
            batch.offer_event(&id("ep:7"), Bytes::from_static(b"event")),
            Offer::TakenFull
        );
        assert_eq!(
            &batch.into_body(&id("ep:7"))[..],
            br#"{"cursor":"ep:7","messages":[gap-a,gap-b,event]}"#
        );
        // After an event, a notice must fit like any message.
        let mut batch = Batch::new(limits(10, 8));
        assert_eq!(
            batch.offer_event(&id("ep:1"), Bytes::from_static(b"e1")),
            Offer::Taken
        );
        assert_eq!(
            batch.offer_notice(Bytes::from_static(b"lagged")),
            Offer::Refused
        );
        assert_eq!(
            &batch.into_body(&id("ep:1"))[..],
            br#"{"cursor":"ep:1","messages":[e1]}"#
        );
    }

    #[test]
    fn cursor_choice() {
        let start = id("ep:40");
        // The last event wins.
        assert_eq!(
            next_cursor(Some(&id("ep:44")), Some(&id("ep:12")), &start),
            id("ep:44")
        );
        // Nothing delivered: the request cursor, unchanged.
        assert_eq!(
            next_cursor(None, Some(&id("ep:12")), &id("ep:12")),
            id("ep:12")
        );
        // First poll: the subscription's start, "now".
        assert_eq!(next_cursor(None, None, &start), start);
        // After a reset with nothing kept: the current epoch's start, not the stale cursor.
        let reset_start = EventId::new(Epoch::new("ep").unwrap(), 0);
        assert_eq!(
            next_cursor(None, Some(&id("old:99")), &reset_start),
            reset_start
        );
    }
}
