//! Which close code ends a connection after which failure (RFC 6455 §7.4.1).

use hyper_tungstenite::tungstenite::error::{CapacityError, Error, ProtocolError};
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The close frame to send after a read error, or `None` when the connection is already gone
/// (nothing can be sent).
///
/// | failure | code |
/// | --- | --- |
/// | text message that is not UTF-8 | 1007 Invalid frame payload data |
/// | message over the size limit | 1009 Message too big |
/// | any other framing violation (unmasked frame, reserved bits, bad opcode, fragmented or oversized control frame, bad continuation) | 1002 Protocol error |
/// | anything else unexpected | 1011 Internal error |
/// | the peer closed TCP without a closing handshake, or the connection is gone | none |
pub fn close_for_error(error: &Error) -> Option<(CloseCode, String)> {
    match error {
        // A peer that closed TCP without a close frame (a tab closed, a client dropped) is
        // gone, not in breach of anything: no frame to send, no rejection to count.
        Error::ConnectionClosed
        | Error::AlreadyClosed
        | Error::Io(_)
        | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        Error::Utf8(_) => Some((
            CloseCode::Invalid,
            "text message is not valid UTF-8".to_owned(),
        )),
        Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => Some((
            CloseCode::Size,
            format!("message of {size} bytes is over the limit of {max_size}"),
        )),
        Error::Protocol(violation) => Some((CloseCode::Protocol, truncate(violation.to_string()))),
        other => Some((
            CloseCode::Error,
            truncate(format!("internal error: {other}")),
        )),
    }
}

/// A close reason must fit a control frame: 125 bytes minus the 2-byte code.
pub(crate) fn truncate(mut reason: String) -> String {
    const MAX: usize = 123;
    if reason.len() > MAX {
        let mut end = MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let code = |e: Error| close_for_error(&e).map(|(c, _)| u16::from(c));
        assert_eq!(code(Error::Utf8("x".into())), Some(1007));
        assert_eq!(
            code(Error::Capacity(CapacityError::MessageTooLong {
                size: 2,
                max_size: 1
            })),
            Some(1009)
        );
        assert_eq!(
            code(Error::Protocol(ProtocolError::UnmaskedFrameFromClient)),
            Some(1002)
        );
        assert_eq!(
            code(Error::Protocol(ProtocolError::InvalidOpcode(7))),
            Some(1002)
        );
        assert_eq!(code(Error::ConnectionClosed), None);
        assert_eq!(
            code(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)),
            None
        );
    }

    #[test]
    fn reasons_fit_a_control_frame() {
        assert_eq!(truncate("é".repeat(100)).len(), 122);
        assert_eq!(truncate("ok".to_owned()), "ok");
    }
}
