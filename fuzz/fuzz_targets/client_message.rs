//! What a WebSocket, WebTransport or long-poll client sends: `ClientMessage::parse`
//! (docs/PROTOCOL.md §3.2), and the envelopes the gateway builds from an accepted publish.
//!
//! Properties: never panics; every topic and `since` it returns re-parses to itself; a `ref`
//! is at most `MAX_REF_LEN` bytes; a `json` payload is one valid JSON value (envelopes embed
//! it verbatim); the JSON envelope of a publish is valid JSON whose `data` gives the payload
//! back; errors have a code and encode as a valid JSON `error` message.
#![no_main]

use base64::Engine;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use streamgate_core::{ContentType, Epoch, Event, EventId, Topic};
use streamgate_proto::{
    encode_error, encode_event_binary, encode_event_json, ClientMessage, MAX_REF_LEN,
};

fn check_topics(topics: &[Topic]) {
    for topic in topics {
        assert_eq!(&Topic::new(topic.as_str()).expect("topic re-parses"), topic);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientMessage::parse(text) {
        Ok(ClientMessage::Subscribe {
            topics,
            since,
            reference,
        }) => {
            check_topics(&topics);
            if let Some(since) = since {
                assert_eq!(since.to_string().parse::<EventId>().unwrap(), since);
            }
            assert!(reference.is_none_or(|r| r.len() <= MAX_REF_LEN));
        }
        Ok(ClientMessage::Unsubscribe { topics, reference }) => {
            check_topics(&topics);
            assert!(reference.is_none_or(|r| r.len() <= MAX_REF_LEN));
        }
        Ok(ClientMessage::Publish(request)) => {
            assert!(request.reference.is_none_or(|r| r.len() <= MAX_REF_LEN));
            check_topics(std::slice::from_ref(&request.topic));
            if request.content_type == ContentType::Json {
                request
                    .content_type
                    .validate(&request.payload)
                    .expect("a json payload is one JSON value");
            }
            if request.content_type == ContentType::Text {
                assert!(std::str::from_utf8(&request.payload).is_ok());
            }
            let event = Event::new(
                request.topic.clone(),
                EventId::new(Epoch::new("fuzz").unwrap(), 1),
                1,
                request.content_type,
                request.payload.clone(),
            );
            let envelope = encode_event_json(&event);
            let value: serde_json::Value =
                serde_json::from_slice(&envelope).expect("the JSON envelope is JSON");
            assert_eq!(value["topic"], request.topic.as_str());
            let data = &value["data"];
            let back = match request.content_type {
                ContentType::Json => Bytes::from(serde_json::to_vec(data).unwrap()),
                ContentType::Text => Bytes::from(data.as_str().unwrap().to_owned()),
                ContentType::Binary => Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(data.as_str().unwrap())
                        .unwrap(),
                ),
            };
            if request.content_type == ContentType::Json {
                // Verbatim, so only equal as values.
                let sent: serde_json::Value = serde_json::from_slice(&request.payload).unwrap();
                assert_eq!(&sent, data);
            } else {
                assert_eq!(back, request.payload);
            }
            let binary = encode_event_binary(&event);
            assert!(binary.ends_with(&request.payload));
        }
        Err((error, reference)) => {
            assert!(!error.code.is_empty());
            assert!(reference.as_ref().is_none_or(|r| r.len() <= MAX_REF_LEN));
            let encoded = encode_error(&error, reference.as_deref());
            let value: serde_json::Value =
                serde_json::from_slice(&encoded).expect("the error message is JSON");
            assert_eq!(value["code"], error.code);
        }
    }
});
