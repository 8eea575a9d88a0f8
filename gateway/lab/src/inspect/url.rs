//! The URLs `inspect` understands, parsed by hand: the few forms it accepts are simpler to
//! check here than to explain through a general URL type, and the error messages can say
//! what to type instead.

/// Which client `inspect` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `ws://…`
    WebSocket,
    /// `http://…/sse`
    Sse,
    /// `http://…/poll`
    Poll,
    /// `https://…/wt`, `wt://…` or `wt`
    WebTransport,
}

/// A parsed `inspect` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The client to run.
    pub transport: Transport,
    /// Host as written (an IPv6 address without its brackets).
    pub host: String,
    /// Port, or the scheme's default.
    pub port: u16,
    /// The path, without the query.
    pub path: String,
    /// Query parameters as written (not percent-decoded), in order.
    pub query: Vec<(String, String)>,
    /// `false` for a bare `wt`: the session URL is to come from `/wt/cert-hash`.
    pub explicit: bool,
}

impl Target {
    /// Parses an `inspect` URL.
    ///
    /// # Errors
    /// A message saying what is wrong and what would work.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if url == "wt" || url.starts_with("wt?") {
            return Ok(Self {
                transport: Transport::WebTransport,
                host: "127.0.0.1".to_owned(),
                port: 4433,
                path: "/wt".to_owned(),
                query: parse_query(url.strip_prefix("wt?").unwrap_or("")),
                explicit: false,
            });
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "{url:?} is not a URL; try ws://127.0.0.1:8080/ws?topics=demo, http://127.0.0.1:8080/sse?topics=demo, http://127.0.0.1:8080/poll?topics=demo or wt?topics=demo"
            ));
        };
        let (authority, path_and_query) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let path = if path.is_empty() { "/" } else { path };
        let scheme = scheme.to_ascii_lowercase();
        let (transport, default_port) = match scheme.as_str() {
            "ws" => (Transport::WebSocket, 80),
            "http" if path == "/sse" => (Transport::Sse, 80),
            "http" if path == "/poll" => (Transport::Poll, 80),
            "http" => {
                return Err(format!(
                    "inspect shows /sse and /poll over http:// (and /ws over ws://); {path:?} is neither"
                ))
            }
            "https" | "wt" if path == "/wt" || (scheme == "wt" && path == "/") => {
                (Transport::WebTransport, if scheme == "wt" { 4433 } else { 443 })
            }
            "https" => {
                return Err(
                    "over https:// inspect only opens WebTransport sessions (/wt); for /sse and /poll use the gateway's http:// listener, where the bytes are not hidden by TLS"
                        .to_owned(),
                )
            }
            "wss" => {
                return Err(
                    "wss:// would hide every byte in TLS; inspect the same gateway over ws:// to see the frames"
                        .to_owned(),
                )
            }
            other => return Err(format!("unknown scheme {other:?}; use ws, http, https or wt")),
        };
        let (host, port) = split_authority(authority, default_port)?;
        Ok(Self {
            transport,
            host,
            port,
            path: if transport == Transport::WebTransport {
                "/wt".to_owned()
            } else {
                path.to_owned()
            },
            query: parse_query(query),
            explicit: true,
        })
    }

    /// `host:port`, with brackets around an IPv6 host.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The path and query, as on a request line.
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        format!("{}?{}", self.path, self.query_string())
    }

    /// The query without its `?`.
    pub fn query_string(&self) -> String {
        self.query
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// A parameter's value as written.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` to `value`, replacing it where it is or adding it at the end.
    pub fn set_param(&mut self, name: &str, value: &str) {
        match self.query.iter_mut().find(|(n, _)| n == name) {
            Some(pair) => pair.1 = value.to_owned(),
            None => self.query.push((name.to_owned(), value.to_owned())),
        }
    }

    /// Removes `name`, returning its value.
    pub fn take_param(&mut self, name: &str) -> Option<String> {
        let at = self.query.iter().position(|(n, _)| n == name)?;
        Some(self.query.remove(at).1)
    }
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

fn split_authority(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    if authority.contains('@') {
        return Err("credentials in the URL are not supported".to_owned());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed [ in {authority:?}"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host".to_owned());
    }
    let port = match port {
        Some(port) => port
            .parse()
            .map_err(|_| format!("{port:?} is not a port number"))?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accepted_forms() {
        let ws = Target::parse("ws://127.0.0.1:8080/ws?topics=a,b&since=e:1").unwrap();
        assert_eq!(ws.transport, Transport::WebSocket);
        assert_eq!(ws.authority(), "127.0.0.1:8080");
        assert_eq!(ws.path_and_query(), "/ws?topics=a,b&since=e:1");
        assert_eq!(ws.param("since"), Some("e:1"));
        let sse = Target::parse("http://localhost/sse?topics=a").unwrap();
        assert_eq!((sse.transport, sse.port), (Transport::Sse, 80));
        let poll = Target::parse("http://[::1]:9000/poll?topics=a").unwrap();
        assert_eq!(poll.transport, Transport::Poll);
        assert_eq!(poll.authority(), "[::1]:9000");
        let wt = Target::parse("https://127.0.0.1:4433/wt?topics=a").unwrap();
        assert_eq!((wt.transport, wt.explicit), (Transport::WebTransport, true));
        let wt = Target::parse("wt://127.0.0.1/wt").unwrap();
        assert_eq!(wt.port, 4433);
        let bare = Target::parse("wt?topics=a&mode=datagram").unwrap();
        assert!(!bare.explicit);
        assert_eq!(bare.param("mode"), Some("datagram"));
        let mut target = Target::parse("ws://h:1/ws").unwrap();
        target.set_param("since", "x:1");
        assert_eq!(target.path_and_query(), "/ws?since=x:1");
        assert_eq!(target.take_param("since").as_deref(), Some("x:1"));
    }

    #[test]
    fn the_refused_forms_say_what_to_do() {
        assert!(Target::parse("wss://h/ws").unwrap_err().contains("ws://"));
        assert!(Target::parse("http://h/topics")
            .unwrap_err()
            .contains("/sse"));
        assert!(Target::parse("https://h/sse")
            .unwrap_err()
            .contains("http://"));
        assert!(Target::parse("localhost:8080")
            .unwrap_err()
            .contains("ws://"));
        assert!(Target::parse("ws://h:x/ws").unwrap_err().contains("port"));
    }
}
