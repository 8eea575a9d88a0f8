//! `Last-Event-ID` headers and the ids in `since=`/`cursor=`: `EventId::from_str`,
//! `parse_last_event_id`, and the `Topic`/`Epoch` validators.
//!
//! Properties: never panics; parse → display → parse gives the same id; a displayed id is
//! `epoch:seq` with an alphanumeric epoch of at most 32 bytes; a valid topic displays as
//! itself; a header value parses as its trimmed text does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate_core::{Epoch, EventId, Topic, MAX_EPOCH_LEN, MAX_TOPIC_LEN};
use streamgate_proto::parse_last_event_id;

fuzz_target!(|data: &[u8]| {
    let header = parse_last_event_id(data);
    let Ok(text) = std::str::from_utf8(data) else {
        assert_eq!(header.unwrap_err().code, "bad_cursor");
        return;
    };
    match &header {
        Ok(Some(id)) => assert_eq!(&text.trim().parse::<EventId>().unwrap(), id),
        Ok(None) => assert!(text.trim().is_empty()),
        Err(e) => assert_eq!(e.code, "bad_cursor"),
    }
    if let Ok(id) = text.parse::<EventId>() {
        let shown = id.to_string();
        assert_eq!(shown.parse::<EventId>().unwrap(), id);
        let (epoch, seq) = shown.split_once(':').unwrap();
        assert!(epoch.len() <= MAX_EPOCH_LEN && epoch.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(seq.parse::<u64>().unwrap(), id.seq);
        assert_eq!(Epoch::new(epoch).unwrap(), id.epoch);
        assert_eq!(header.as_ref().unwrap().as_ref(), Some(&id));
    }
    if let Ok(topic) = Topic::new(text) {
        assert_eq!(topic.to_string(), text);
        assert!(text.len() <= MAX_TOPIC_LEN);
        assert_eq!(text.parse::<Topic>().unwrap(), topic);
    }
});
