//! Keepalive of a connection: when to ping and when to give up on a silent peer.
//!
//! A state machine on a clock it is given: the driver calls [`Keepalive::poll_timeout`] to know
//! when to wake, [`Keepalive::handle_timeout`] when it does, and [`Keepalive::handle_activity`]
//! whenever anything arrives from the peer. Any inbound frame proves the peer alive (not only
//! a pong), so a busy connection is never pinged needlessly.
//!
//! States (Call / Next):
//! - *Idle*: waiting for `next_ping`. `handle_timeout` at or after it → returns
//!   [`KeepaliveAction::SendPing`], next *AwaitingPong*.
//! - *AwaitingPong*: `handle_activity` → *Idle* with a fresh `next_ping`; `handle_timeout` at
//!   or after the deadline → [`KeepaliveAction::PeerDead`].

use std::time::{Duration, Instant};

/// What the driver must do after [`Keepalive::handle_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepaliveAction {
    /// Nothing yet.
    Wait,
    /// Send a ping now.
    SendPing,
    /// The peer did not answer in time: drop the connection.
    PeerDead,
}

/// Ping scheduling for one connection.
#[derive(Debug, Clone)]
pub struct Keepalive {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
    pong_deadline: Option<Instant>,
}

impl Keepalive {
    /// Pings after `interval` of silence; declares the peer dead `timeout` after a ping.
    pub fn new(now: Instant, interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            next_ping: now + interval,
            pong_deadline: None,
        }
    }

    /// When the driver must call [`Keepalive::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Instant {
        self.pong_deadline.unwrap_or(self.next_ping)
    }

    /// Something arrived from the peer.
    pub fn handle_activity(&mut self, now: Instant) {
        self.pong_deadline = None;
        self.next_ping = now + self.interval;
    }

    /// The clock reached [`Keepalive::poll_timeout`] (or later).
    pub fn handle_timeout(&mut self, now: Instant) -> KeepaliveAction {
        match self.pong_deadline {
            Some(deadline) if now >= deadline => KeepaliveAction::PeerDead,
            Some(_) => KeepaliveAction::Wait,
            None if now >= self.next_ping => {
                self.pong_deadline = Some(now + self.timeout);
                KeepaliveAction::SendPing
            }
            None => KeepaliveAction::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn silent_peer_is_pinged_then_declared_dead() {
        let start = Instant::now();
        let mut k = Keepalive::new(start, 10 * S, 5 * S);
        assert_eq!(k.poll_timeout(), start + 10 * S);
        assert_eq!(k.handle_timeout(start + 9 * S), KeepaliveAction::Wait);
        assert_eq!(k.handle_timeout(start + 10 * S), KeepaliveAction::SendPing);
        assert_eq!(k.poll_timeout(), start + 15 * S);
        assert_eq!(k.handle_timeout(start + 14 * S), KeepaliveAction::Wait);
        assert_eq!(k.handle_timeout(start + 15 * S), KeepaliveAction::PeerDead);
    }

    #[test]
    fn any_activity_answers_and_postpones_the_ping() {
        let start = Instant::now();
        let mut k = Keepalive::new(start, 10 * S, 5 * S);
        assert_eq!(k.handle_timeout(start + 10 * S), KeepaliveAction::SendPing);
        k.handle_activity(start + 12 * S);
        assert_eq!(k.poll_timeout(), start + 22 * S);
        assert_eq!(k.handle_timeout(start + 20 * S), KeepaliveAction::Wait);
        k.handle_activity(start + 21 * S);
        assert_eq!(k.handle_timeout(start + 30 * S), KeepaliveAction::Wait);
        assert_eq!(k.handle_timeout(start + 31 * S), KeepaliveAction::SendPing);
    }
}
