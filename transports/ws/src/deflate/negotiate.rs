//! Negotiating permessage-deflate (RFC 7692 §5 and §7.1) as a pure function of the request
//! headers.
//!
//! A client lists what it can do in one or more `Sec-WebSocket-Extensions` headers: a
//! comma-separated list of *offers*, in its order of preference, each an extension name
//! followed by `;`-separated parameters:
//!
//! ```text
//! Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits,
//!                           permessage-deflate; server_max_window_bits="10", x-webkit-deflate-frame
//! ```
//!
//! The server accepts at most one offer and answers with the parameters both ends will use.
//! An offer it cannot parse, or one RFC 7692 §7 says to decline (unknown parameter, bad value,
//! a parameter given twice), is skipped: a bad offer costs the client compression, never the
//! connection.
//!
//! What this server answers, and why:
//!
//! - always `server_no_context_takeover` (allowed even when not offered, §7.1.1.1): every
//!   message we send is compressed on its own, so an event's compressed bytes are the same for
//!   every subscriber and are produced once per event, not once per connection;
//! - `client_no_context_takeover` when the client offered it (then the server drops its
//!   inflater between messages);
//! - `server_max_window_bits=N` when the client asked for it, with its value: we compress with
//!   a 512-byte window (windowBits 9), which honours any N ≥ 9; for N = 8 the connection is
//!   accepted and our messages simply go uncompressed (RSV1 clear is legal per message);
//! - `client_max_window_bits=N` when the offer had a value (the client will use at most that);
//!   a bare `client_max_window_bits` gets no answer, which leaves the client on 15 — our
//!   inflater always has the full 32 KiB window, so any client window decodes.

use std::fmt::Write as _;

use http::{header, HeaderMap};

/// The extension's registered name.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// Window (log2 of bytes) every compressed message we send is made with. zlib cannot make
/// raw deflate with windowBits 8, and 9 keeps the shared compressed bytes valid for every
/// client whatever `server_max_window_bits` ≥ 9 it asked for.
pub const SERVER_WINDOW_BITS: u8 = 9;

/// What the server and one client agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The client resets its compressor after every message, so the server need not keep its
    /// inflater (and its 32 KiB window) between messages.
    pub client_no_context_takeover: bool,
    /// The `server_max_window_bits` the client asked for, if it did.
    pub server_max_window_bits: Option<u8>,
    /// The `client_max_window_bits` value the client offered, echoed in the answer.
    pub client_max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// Whether our messages may be compressed on this connection: only if the client's
    /// window limit admits our 512-byte window.
    pub fn server_compresses(&self) -> bool {
        self.server_max_window_bits
            .is_none_or(|bits| bits >= SERVER_WINDOW_BITS)
    }

    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub fn response_header(&self) -> String {
        let mut value = format!("{PERMESSAGE_DEFLATE}; server_no_context_takeover");
        if self.client_no_context_takeover {
            value.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            let _ = write!(value, "; server_max_window_bits={bits}");
        }
        if let Some(bits) = self.client_max_window_bits {
            let _ = write!(value, "; client_max_window_bits={bits}");
        }
        value
    }
}

/// The first acceptable permessage-deflate offer in `headers`, or `None` (no offer, or none
/// acceptable: the connection then runs uncompressed).
pub fn negotiate(headers: &HeaderMap) -> Option<DeflateParams> {
    negotiate_values(
        headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .map(|value| value.as_bytes()),
    )
}

/// [`negotiate`] over raw header values, in order (several headers read as one list).
pub fn negotiate_values<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<DeflateParams> {
    values
        .into_iter()
        // A value that is not even ASCII holds no offer we could read.
        .filter_map(|value| std::str::from_utf8(value).ok())
        .flat_map(parse_list)
        .filter_map(Result::ok)
        .filter(|offer| offer.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
        .find_map(|offer| accept(&offer))
}

/// One element of the extension list: a name and its parameters, values unquoted.
#[derive(Debug, PartialEq, Eq)]
struct Offer<'a> {
    name: &'a str,
    params: Vec<(&'a str, Option<String>)>,
}

/// Checks a permessage-deflate offer against RFC 7692 §7: every parameter known, valid and
/// given once. Every valid combination is one this server supports.
fn accept(offer: &Offer<'_>) -> Option<DeflateParams> {
    let mut server_no_context_takeover = false;
    let mut client_no_context_takeover = false;
    let mut server_max_window_bits = None;
    let mut client_max_window_bits: Option<Option<u8>> = None;
    for (name, value) in &offer.params {
        let name = name.to_ascii_lowercase();
        let value = value.as_deref();
        match name.as_str() {
            "server_no_context_takeover" if !server_no_context_takeover && value.is_none() => {
                server_no_context_takeover = true;
            }
            "client_no_context_takeover" if !client_no_context_takeover && value.is_none() => {
                client_no_context_takeover = true;
            }
            "server_max_window_bits" if server_max_window_bits.is_none() => {
                server_max_window_bits = Some(window_bits(value?)?);
            }
            "client_max_window_bits" if client_max_window_bits.is_none() => {
                client_max_window_bits = Some(match value {
                    None => None,
                    Some(value) => Some(window_bits(value)?),
                });
            }
            // Unknown, duplicated, or a value where none belongs: decline this offer.
            _ => return None,
        }
    }
    Some(DeflateParams {
        client_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits: client_max_window_bits.flatten(),
    })
}

/// A window size: a decimal 8 to 15 without leading zeros (RFC 7692 §7.1.2.1).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

// ---------------------------------------------------------------------------------------------
// The header grammar (RFC 6455 §9.1 on RFC 7230's list and token rules):
//
//   extension-list = 1#extension
//   extension      = token *( OWS ";" OWS token [ "=" ( token / quoted-string ) ] )
//
// with the extra rule that a quoted value, once unquoted, must itself be a token.

/// `tchar` of RFC 7230 §3.2.6.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses one header value into its list elements; a malformed element is an `Err` in its
/// place, so the elements after it are still read.
fn parse_list(value: &str) -> Vec<Result<Offer<'_>, ()>> {
    let mut parser = Parser { s: value, at: 0 };
    let mut offers = Vec::new();
    loop {
        parser.skip_ows();
        match parser.peek() {
            None => return offers,
            // Empty list elements are allowed and mean nothing (RFC 7230 §7).
            Some(b',') => {
                parser.at += 1;
                continue;
            }
            Some(_) => {}
        }
        let offer = parser.offer();
        if offer.is_err() {
            parser.skip_element();
        }
        offers.push(offer);
    }
}

struct Parser<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.at).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn token(&mut self) -> Result<&'a str, ()> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        if self.at == start {
            return Err(());
        }
        Ok(&self.s[start..self.at])
    }

    /// A quoted-string, unescaped; the opening quote is at `self.at`.
    fn quoted(&mut self) -> Result<String, ()> {
        self.at += 1;
        let mut out = String::new();
        loop {
            match self.peek().ok_or(())? {
                b'"' => {
                    self.at += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.at += 1;
                    out.push(char::from(self.peek().ok_or(())?));
                    self.at += 1;
                }
                b => {
                    out.push(char::from(b));
                    self.at += 1;
                }
            }
        }
    }

    /// One list element; on success the parser is at its end (a `,` or the end of input).
    fn offer(&mut self) -> Result<Offer<'a>, ()> {
        let name = self.token()?;
        let mut params = Vec::new();
        loop {
            self.skip_ows();
            match self.peek() {
                None | Some(b',') => return Ok(Offer { name, params }),
                Some(b';') => self.at += 1,
                Some(_) => return Err(()),
            }
            self.skip_ows();
            let param = self.token()?;
            self.skip_ows();
            let value = if self.peek() == Some(b'=') {
                self.at += 1;
                self.skip_ows();
                if self.peek() == Some(b'"') {
                    let value = self.quoted()?;
                    // RFC 6455 §9.1: an unquoted value must be a token.
                    if value.is_empty() || !value.bytes().all(is_tchar) {
                        return Err(());
                    }
                    Some(value)
                } else {
                    Some(self.token()?.to_owned())
                }
            } else {
                None
            };
            params.push((param, value));
        }
    }

    /// Skips the rest of a malformed element, up to the next comma outside quotes.
    fn skip_element(&mut self) {
        let mut quoted = false;
        while let Some(b) = self.peek() {
            match b {
                b'"' => quoted = !quoted,
                b'\\' if quoted => self.at += 1,
                b',' if !quoted => return,
                _ => {}
            }
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(values: &[&str]) -> Option<DeflateParams> {
        negotiate_values(values.iter().map(|v| v.as_bytes()))
    }

    fn answer(values: &[&str]) -> Option<String> {
        pick(values).map(|p| p.response_header())
    }

    const PLAIN: DeflateParams = DeflateParams {
        client_no_context_takeover: false,
        server_max_window_bits: None,
        client_max_window_bits: None,
    };

    #[test]
    fn no_offer_no_compression() {
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[""]), None);
        assert_eq!(pick(&["x-webkit-deflate-frame"]), None);
    }

    #[test]
    fn a_bare_offer_is_answered_with_server_no_context_takeover() {
        assert_eq!(pick(&["permessage-deflate"]), Some(PLAIN));
        assert_eq!(
            answer(&["permessage-deflate"]).as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
    }

    #[test]
    fn what_browsers_send() {
        // Chrome and Firefox: a bare client_max_window_bits, which needs no answer.
        let offer = "permessage-deflate; client_max_window_bits";
        assert_eq!(pick(&[offer]), Some(PLAIN));
        assert_eq!(
            answer(&[offer]).as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
    }

    #[test]
    fn parameters_are_echoed() {
        let offer = "permessage-deflate; client_no_context_takeover; server_no_context_takeover; \
                     server_max_window_bits=10; client_max_window_bits=12";
        assert_eq!(
            pick(&[offer]),
            Some(DeflateParams {
                client_no_context_takeover: true,
                server_max_window_bits: Some(10),
                client_max_window_bits: Some(12),
            })
        );
        assert_eq!(
            answer(&[offer]).as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10; client_max_window_bits=12"
            )
        );
    }

    #[test]
    fn rfc7692_section_5_example_picks_the_first_acceptable_offer() {
        // RFC 7692 §5.1's example: the first offer asks for a window the server may not want,
        // the second is the fallback. Both are acceptable here, so the first wins.
        let offers = "permessage-deflate; client_max_window_bits; server_max_window_bits=10, \
                      permessage-deflate; client_max_window_bits";
        assert_eq!(
            pick(&[offers]),
            Some(DeflateParams {
                server_max_window_bits: Some(10),
                ..PLAIN
            })
        );
    }

    #[test]
    fn server_window_8_is_accepted_but_not_compressed() {
        let params = pick(&["permessage-deflate; server_max_window_bits=8"]).unwrap();
        assert!(!params.server_compresses());
        assert!(params
            .response_header()
            .ends_with("server_max_window_bits=8"));
        for bits in 9..=15 {
            let offer = format!("permessage-deflate; server_max_window_bits={bits}");
            assert!(pick(&[&offer]).unwrap().server_compresses(), "{bits}");
        }
        assert!(PLAIN.server_compresses());
    }

    #[test]
    fn quoted_values_are_unquoted() {
        assert_eq!(
            pick(&[r#"permessage-deflate; server_max_window_bits="10""#]),
            Some(DeflateParams {
                server_max_window_bits: Some(10),
                ..PLAIN
            })
        );
        // A quoted comma does not split the list; the offer is malformed (not a token) and
        // the next one is taken.
        assert_eq!(
            pick(&[r#"permessage-deflate; client_max_window_bits="1,0", permessage-deflate"#]),
            Some(PLAIN)
        );
    }

    #[test]
    fn several_headers_read_as_one_list() {
        assert_eq!(
            pick(&[
                "x-foo",
                "permessage-deflate; server_max_window_bits=20",
                "permessage-deflate; client_no_context_takeover"
            ]),
            Some(DeflateParams {
                client_no_context_takeover: true,
                ..PLAIN
            })
        );
    }

    #[test]
    fn invalid_offers_are_declined_one_by_one() {
        for bad in [
            "permessage-deflate; server_max_window_bits", // value required
            "permessage-deflate; server_max_window_bits=7", // below 8
            "permessage-deflate; server_max_window_bits=16", // above 15
            "permessage-deflate; server_max_window_bits=09", // leading zero
            "permessage-deflate; client_max_window_bits=abc", // not a number
            "permessage-deflate; client_max_window_bits=\"\"", // empty quoted value
            "permessage-deflate; server_no_context_takeover=1", // no value allowed
            "permessage-deflate; client_no_context_takeover=yes", // no value allowed
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; mystery", // unknown parameter
            "permessage-deflate; ",        // dangling separator
            "permessage-deflate client_max_window_bits", // missing separator
            "permessage-deflate; =10",     // no parameter name
        ] {
            assert_eq!(pick(&[bad]), None, "{bad}");
            // Declined alone, and followed by a good offer the good one is taken.
            assert_eq!(
                pick(&[&format!("{bad}, permessage-deflate")]),
                Some(PLAIN),
                "{bad} then a good offer"
            );
        }
        // An unterminated quote leaves the rest of the header unreadable.
        assert_eq!(
            pick(&["permessage-deflate; client_max_window_bits=\"10, permessage-deflate"]),
            None
        );
        assert_eq!(
            pick(&[
                "permessage-deflate; client_max_window_bits=\"10",
                "permessage-deflate"
            ]),
            Some(PLAIN)
        );
    }

    #[test]
    fn autobahn_13_7_style_offer_lists() {
        // wstest 13.7.x: several offers in one header, most specific first.
        let offers = "permessage-deflate; client_no_context_takeover; client_max_window_bits=9, \
                      permessage-deflate; client_no_context_takeover, permessage-deflate";
        assert_eq!(
            answer(&[offers]).as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 client_max_window_bits=9"
            )
        );
        let offers = "permessage-deflate; server_no_context_takeover; server_max_window_bits=8, \
                      permessage-deflate";
        assert_eq!(
            answer(&[offers]).as_deref(),
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=8")
        );
    }

    #[test]
    fn names_are_case_insensitive_and_whitespace_is_optional() {
        assert_eq!(
            pick(&["Permessage-Deflate;Client_No_Context_Takeover ;\tserver_max_window_bits = 12"]),
            Some(DeflateParams {
                client_no_context_takeover: true,
                server_max_window_bits: Some(12),
                ..PLAIN
            })
        );
    }

    #[test]
    fn non_ascii_header_values_hold_no_offer() {
        let values: [&[u8]; 2] = [b"permessage-deflate; \xff", b"permessage-deflate"];
        assert_eq!(negotiate_values(values), Some(PLAIN));
        assert_eq!(negotiate_values([&b"permessage-deflate\xff"[..]]), None);
    }

    #[test]
    fn window_bits_values() {
        assert_eq!(window_bits("8"), Some(8));
        assert_eq!(window_bits("15"), Some(15));
        for bad in ["", "0", "08", "7", "16", "+9", "9 ", "99999999999999999999"] {
            assert_eq!(window_bits(bad), None, "{bad:?}");
        }
    }
}
