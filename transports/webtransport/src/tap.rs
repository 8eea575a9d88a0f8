//! The lab's view of a session: QUIC packets are encrypted, so a tap records what this layer
//! sees — the session request (credentials masked), its acceptance, each stream opened and the
//! bytes handed to it, each datagram, the close. Apart so that the session code reads as the
//! protocol, with one call where the lab looks.

use std::sync::Arc;

use streamgate_core::{
    mask_credential_params, mask_header_value, tap_id_from_query, Direction, RecordKind, Tap,
    TapConnection, TapRegistry,
};

/// Records a session-level event (a small JSON object) when the session is tapped.
pub(crate) fn tap_session(tap: Option<&Tap>, direction: Direction, event: serde_json::Value) {
    if let Some(tap) = tap {
        tap.record(
            direction,
            RecordKind::WtSession,
            event.to_string().as_bytes(),
        );
    }
}

/// Records bytes handed to (or read from) a stream when the session is tapped.
pub(crate) fn tap_stream(
    tap: Option<&Tap>,
    direction: Direction,
    stream_id: u64,
    fin: bool,
    bytes: &[u8],
) {
    if let Some(tap) = tap {
        tap.record(direction, RecordKind::WtStream { stream_id, fin }, bytes);
    }
}

/// A tap for this session when its URL names one the gateway's lab issued to this client
/// (`lab=<tap id>`), with the session request (the extended CONNECT) as its first record.
/// Credentials in the URL and the headers are masked before they are recorded.
///
/// # Errors
/// The reason to give when the tap belongs to another client (the session is then closed
/// `4403`).
pub(crate) fn open_tap(
    taps: Option<(Arc<dyn TapRegistry>, u64)>,
    request: &wtransport::endpoint::SessionRequest,
) -> Result<Option<Tap>, String> {
    let Some((taps, session_number)) = taps else {
        return Ok(None);
    };
    let Some(id) = request
        .path()
        .split_once('?')
        .and_then(|(_, query)| tap_id_from_query(query))
    else {
        return Ok(None);
    };
    let opened = taps.open(
        id,
        TapConnection {
            transport: "webtransport",
            peer: request.remote_address(),
            conn_id: session_number,
        },
    );
    let tap = match opened {
        Ok(Some(tap)) => tap,
        Ok(None) => return Ok(None),
        Err(refused) => return Err(format!("forbidden: {refused}")),
    };
    let mut headers: Vec<(&String, &String)> = request.headers().iter().collect();
    headers.sort();
    tap_session(
        Some(&tap),
        Direction::In,
        serde_json::json!({
            "event": "connect",
            "authority": request.authority(),
            "path": mask_credential_params(request.path()),
            "origin": request.origin(),
            "user_agent": request.user_agent(),
            "headers": headers
                .into_iter()
                .map(|(name, value)| {
                    let value = mask_header_value(name, value.as_bytes())
                        .unwrap_or_else(|| value.clone());
                    (name.clone(), serde_json::Value::from(value))
                })
                .collect::<serde_json::Map<_, _>>(),
        }),
    );
    Ok(Some(tap))
}
