//! Query strings of every subscribing URL: `SubscribeQuery::parse` (`topics=`, `since=`,
//! `cursor=`, `last_event_id=`, `envelope=`), the long-poll `PollQuery::parse` (`timeout=`,
//! `limit=`) and the WebTransport session path (`SessionParams::parse`, `mode=`).
//!
//! Properties: never panics; a parsed query written back as a query string parses to the same
//! value; bounds are respected (a poll's timeout is at most the maximum, its limit between 1
//! and the maximum); a WebTransport session always has topics.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use longpoll::poll::{PollQuery, QueryBounds};
use streamgate_proto::{EnvelopeFormat, SubscribeQuery};
use webtransport::wire::SessionParams;

fn write_back(query: &SubscribeQuery) -> String {
    let topics: Vec<&str> = query.topics.iter().map(|t| t.as_str()).collect();
    let mut out = form_urlencoded::Serializer::new(String::new());
    out.append_pair("topics", &topics.join(","));
    if let Some(since) = &query.since {
        out.append_pair("since", &since.to_string());
    }
    if query.envelope == EnvelopeFormat::Binary {
        out.append_pair("envelope", "binary");
    }
    out.finish()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(query) = SubscribeQuery::parse(Some(text)) {
        let again = SubscribeQuery::parse(Some(&write_back(&query))).expect("written back parses");
        assert_eq!(again, query);
    }
    let bounds = QueryBounds {
        default_timeout: Duration::from_secs(25),
        max_timeout: Duration::from_secs(60),
        max_events: 100,
    };
    if let Ok(poll) = PollQuery::parse(Some(text), &bounds) {
        assert!(!poll.topics.is_empty());
        assert!(poll.timeout <= bounds.max_timeout);
        assert!((1..=bounds.max_events).contains(&poll.max_events));
    }
    if let Ok(session) = SessionParams::parse(text) {
        assert!(!session.query.topics.is_empty());
    }
});
