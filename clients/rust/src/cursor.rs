//! Where a subscription is: the last delivered id, and which notices were already surfaced.

use std::collections::{HashSet, VecDeque};

use crate::{EventId, Notice};

/// How many surfaced notices (and, for unordered delivery, ids) are remembered.
const REMEMBERED: usize = 256;

/// Every transport's messages go through one `Cursor`, so overlapping transports (during a
/// switch) deliver each id once and in order: an event is delivered only when its seq is above
/// the last one of the same epoch (§2). That is lossless because each transport delivers a
/// complete suffix of the same ordered stream from a `since` no later than the cursor. The
/// JavaScript client's `Cursor`, the same rules.
///
/// ```
/// use streamgate_client::{Cursor, Notice};
///
/// let mut cursor = Cursor::new(Some("e:5".parse()?));
/// assert!(!cursor.event(&"e:5".parse()?)); // a duplicate
/// assert!(cursor.event(&"e:7".parse()?));
/// let reset = Notice::Reset { requested: "e:7".into(), epoch: "f".into(), implicit: false };
/// assert!(cursor.notice(&reset));
/// assert_eq!(cursor.last_id().map(ToString::to_string).as_deref(), Some("f:0"));
/// assert!(!cursor.notice(&reset)); // the second transport's copy
/// # Ok::<(), streamgate_client::InvalidId>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct Cursor {
    last: Option<EventId>,
    unavailable: bool,
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Cursor {
    /// A cursor at `since` (nothing delivered yet when `None`).
    pub fn new(since: Option<EventId>) -> Self {
        Self {
            last: since,
            ..Self::default()
        }
    }

    /// The last id delivered (or skipped as undecodable, or `<epoch>:0` after a reset): where
    /// a resume starts.
    pub fn last_id(&self) -> Option<&EventId> {
        self.last.as_ref()
    }

    /// Moves the cursor to `id` whatever it was.
    pub fn set(&mut self, id: EventId) {
        self.last = Some(id);
    }

    /// Whether the event with this id is new; if so the cursor moves to it.
    pub fn event(&mut self, id: &EventId) -> bool {
        if self.last.as_ref().and_then(|last| id.is_after(last)) == Some(false) {
            return false;
        }
        self.set(id.clone());
        true
    }

    /// For transports that may deliver out of id order (WebTransport `stream-per-event` and
    /// `datagram` modes): whether this id was not delivered yet (among the last
    /// [`REMEMBERED`]); the cursor keeps the highest id. An event still in flight when a
    /// connection drops can be missed after a resume: only ordered delivery is lossless.
    pub fn event_unordered(&mut self, id: &EventId) -> bool {
        if !self.remember(format!("event {id}")) {
            return false;
        }
        if self.last.as_ref().and_then(|last| id.is_after(last)) != Some(false) {
            self.set(id.clone());
        }
        true
    }

    /// Whether a notice is news to the application. Overlapping transports each send their
    /// own copy of a `gap` or `reset`; it is surfaced once.
    pub fn notice(&mut self, notice: &Notice) -> bool {
        match notice {
            Notice::Reset { epoch, .. } => {
                if self.last.as_ref().is_some_and(|last| last.epoch() == epoch) {
                    return false;
                }
                // `<epoch>:0` is a valid cursor (the long-poll one after a reset), so a
                // reconnect now resumes in the new epoch instead of being reset again.
                if let Ok(zero) = EventId::new(epoch, 0) {
                    self.set(zero);
                }
                true
            }
            Notice::Gap {
                topic,
                after,
                lost_through,
            } => {
                // Lost for that transport, but another one already delivered past it.
                let lost: Option<EventId> = lost_through.parse().ok();
                let delivered = match (&lost, &self.last) {
                    (Some(lost), Some(last)) => lost.is_after(last) == Some(false),
                    _ => false,
                };
                !delivered && self.remember(format!("gap {topic} {after} {lost_through}"))
            }
            Notice::Lagged { last_delivered } => self.remember(format!(
                "lagged {}",
                last_delivered.as_deref().unwrap_or("null")
            )),
            Notice::Unavailable { .. } | Notice::Available => {
                let down = matches!(notice, Notice::Unavailable { .. });
                if down == self.unavailable {
                    return false;
                }
                self.unavailable = down;
                true
            }
            _ => true,
        }
    }

    fn remember(&mut self, key: String) -> bool {
        if !self.seen.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        true
    }
}
