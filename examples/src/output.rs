//! What the clients print, and the resume point they keep.

use std::io::{self, Write};

use crate::message::{describe_notice, Event, ServerMessage, Undecodable};
use crate::EventId;

/// Whether events can arrive out of id order on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// WebSocket, SSE, long polling and WebTransport's `stream` mode deliver in id order, so
    /// an id not above the last one is a duplicate and is dropped (§2 allows exactly this).
    Ordered,
    /// WebTransport's `stream-per-event` and `datagram` modes: each event travels alone and
    /// may overtake an earlier one, so nothing can be dropped by comparing ids.
    Unordered,
}

/// Whether the client should keep reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    More,
    /// Done: `--count` events printed, or nobody reads stdout any more.
    Done,
}

/// Prints events to stdout as `<id> <topic> <data>`, one per line, and everything else
/// (notices, connection news) to stderr, so `client | while read id topic data` sees events
/// only. Keeps the id to resume from and counts towards `--count`.
#[derive(Debug)]
pub struct Output {
    name: &'static str,
    order: Order,
    last: Option<EventId>,
    printed: u64,
    count: Option<u64>,
}

impl Output {
    /// Output for the client `name`, resuming after `since` (if given), stopping after `count`
    /// events (if given).
    pub fn new(
        name: &'static str,
        order: Order,
        since: Option<EventId>,
        count: Option<u64>,
    ) -> Self {
        Self {
            name,
            order,
            last: since,
            printed: 0,
            count,
        }
    }

    /// Where to resume: the last event printed, else `--since`. In an unordered mode this is
    /// the highest id seen, so an event still in flight when the connection dropped may be
    /// lost; `stream` mode has no such hole.
    pub fn resume_from(&self) -> Option<&EventId> {
        self.last.as_ref()
    }

    /// Sets the resume point without printing anything: a long-poll `cursor` moves even when no
    /// event came (to the head of the stream, or to `<epoch>:0` after a reset).
    pub fn set_resume_from(&mut self, id: EventId) {
        self.last = Some(id);
    }

    /// Events printed so far.
    pub fn printed(&self) -> u64 {
        self.printed
    }

    /// Events still wanted before `--count` is reached (`None`: no limit).
    pub fn remaining(&self) -> Option<u64> {
        self.count.map(|count| count.saturating_sub(self.printed))
    }

    /// Handles one message from the gateway: prints events and notices, reports the rest.
    pub fn handle(&mut self, message: ServerMessage) -> Flow {
        match message {
            ServerMessage::Event(event) => return self.event(&event),
            ServerMessage::Notice(notice) => {
                self.status(format_args!("notice: {}", describe_notice(&notice)))
            }
            ServerMessage::Subscribed(subscribed) => {
                let topics: Vec<&str> = subscribed["topics"]
                    .as_array()
                    .map(|topics| topics.iter().filter_map(|t| t.as_str()).collect())
                    .unwrap_or_default();
                self.status(format_args!(
                    "subscribed to {} (epoch {})",
                    topics.join(","),
                    subscribed["epoch"].as_str().unwrap_or("?")
                ));
            }
            ServerMessage::Error { code, reason } => {
                self.status(format_args!("error from the gateway: {code}: {reason}"));
            }
            ServerMessage::Other(other) => self.status(format_args!("ignored: {other}")),
        }
        Flow::More
    }

    fn event(&mut self, event: &Event) -> Flow {
        if self.order == Order::Ordered {
            let repeated =
                self.last.as_ref().and_then(|last| event.id.is_after(last)) == Some(false);
            if repeated {
                return Flow::More;
            }
        }
        let line = writeln!(io::stdout(), "{} {} {}", event.id, event.topic, event.data);
        if line.is_err() {
            // Stdout closed (`| head -3`): nobody is listening; end quietly.
            return Flow::Done;
        }
        self.move_past(&event.id);
        self.printed += 1;
        if self.remaining() == Some(0) {
            Flow::Done
        } else {
            Flow::More
        }
    }

    /// Skips a message that cannot be decoded, with a warning on stderr. An event's id still
    /// moves the resume point past it: asking for it again would only get the same bytes.
    pub fn skip(&mut self, undecodable: &Undecodable) {
        self.status(format_args!("warning: skipped {undecodable}"));
        if let Some(id) = &undecodable.id {
            let repeated = self.order == Order::Ordered
                && self.last.as_ref().and_then(|last| id.is_after(last)) == Some(false);
            if !repeated {
                self.move_past(id);
            }
        }
    }

    fn move_past(&mut self, id: &EventId) {
        let newer = match &self.last {
            // Unordered: keep the highest id, the only sensible resume point we have.
            Some(last) if self.order == Order::Unordered => id.is_after(last).unwrap_or(true),
            _ => true,
        };
        if newer {
            self.last = Some(id.clone());
        }
    }

    /// One line of connection news on stderr, prefixed with the client's name.
    pub fn status(&self, message: std::fmt::Arguments<'_>) {
        eprintln!("{}: {message}", self.name);
    }
}
