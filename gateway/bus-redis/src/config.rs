//! What a [`RedisBroker`](crate::RedisBroker) needs to know, and how its address is shown.

/// Settings of a [`RedisBroker`](crate::RedisBroker).
///
/// Every node sharing one log must use the same `prefix`, `history_events` and `fanout`: the
/// prefix names the log, each append trims its topic to the bound of the node that appends,
/// and a node only hears the appends of nodes that fan out the way it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisBrokerConfig {
    /// Server URL: `redis://[user:password@]host:port[/db]` (or `rediss://`, `redis+unix://`).
    /// Default: `redis://127.0.0.1:6379`.
    pub url: String,
    /// Prefix of every key and channel, so several logs (or tests) can share one Redis.
    /// A prefix wrapped in braces, like `{streamgate}`, puts every key in one Redis Cluster
    /// hash slot, which the append script needs there. Default: `streamgate`.
    pub prefix: String,
    /// Events kept per topic (the `MAXLEN` of its stream). Default: 1000.
    pub history_events: usize,
    /// How appends reach the nodes. Default: [`Fanout::PubSub`].
    pub fanout: Fanout,
}

impl RedisBrokerConfig {
    /// The defaults, with the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Sets [`RedisBrokerConfig::prefix`].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`RedisBrokerConfig::history_events`].
    pub fn history_events(mut self, history_events: usize) -> Self {
        self.history_events = history_events;
        self
    }

    /// Sets [`RedisBrokerConfig::fanout`].
    pub fn fanout(mut self, fanout: Fanout) -> Self {
        self.fanout = fanout;
        self
    }
}

impl Default for RedisBrokerConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "streamgate".to_owned(),
            history_events: 1000,
            fanout: Fanout::default(),
        }
    }
}

/// How an appended event travels from Redis to every node's feed.
///
/// Both carry the same encoded event and both are caught up from the topic streams after a
/// hole, so they differ only in cost and in how a slow node is treated. Pub/Sub is the
/// default because it measured faster on every figure (append acknowledgement, arrival in
/// the feeds, saturated append rate: about 1.6 times Xread's); `docs/SCALE_OUT.md` has the
/// figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fanout {
    /// The append script `PUBLISH`es the event on the channel `{prefix}:events`; every node
    /// holds one subscription. Redis pushes each event once per node and keeps nothing: a
    /// node that was not subscribed, or whose connection Redis dropped for lagging past its
    /// output buffer limit, catches up from the topic streams.
    #[default]
    PubSub,
    /// The append script also adds the event to one stream of every event, `{prefix}:log`
    /// (trimmed to about [`LOG_EVENTS`](crate::LOG_EVENTS)), which every node reads with a
    /// blocking `XREAD`. A node reads at its own pace and Redis never drops it; one that fell
    /// behind the trimming catches up from the topic streams.
    Xread,
}

impl Fanout {
    /// The name used in configuration and figures: `pubsub` or `xread`.
    pub fn name(self) -> &'static str {
        match self {
            Self::PubSub => "pubsub",
            Self::Xread => "xread",
        }
    }
}

/// `url` with any password replaced by `***`, fit for logs and `/healthz`.
///
/// Both places a Redis URL can carry a password are covered: the userinfo
/// (`redis://user:secret@host`, `redis://:secret@host`) and a `password` or `pass` query
/// parameter (`redis+unix:///run/redis.sock?pass=secret`).
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    // The userinfo ends at the last '@' of the authority (a password may itself hold '@').
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let mut redacted = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        redacted.push_str(scheme);
        redacted.push_str("://");
    }
    redacted.push_str(&authority);
    redacted.push_str(path);
    if let Some(query) = query {
        redacted.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if matches!(name, "password" | "pass") => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        redacted.push_str(&pairs.join("&"));
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis://user:s3cret@host:6379/2"),
            "redis://user:***@host:6379/2"
        );
        assert_eq!(redact_url("redis://:s3cret@host"), "redis://:***@host");
        assert_eq!(redact_url("rediss://a:b@c@host"), "rediss://a:***@host");
        assert_eq!(redact_url("redis://user@host"), "redis://user@host");
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=1&pass=s3cret"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(
            redact_url("redis://host/0?password=x"),
            "redis://host/0?password=***"
        );
    }

    #[test]
    fn builder_sets_fields() {
        let config = RedisBrokerConfig::new("redis://h:1")
            .prefix("p")
            .history_events(5)
            .fanout(Fanout::Xread);
        assert_eq!(config.url, "redis://h:1");
        assert_eq!(config.prefix, "p");
        assert_eq!(config.history_events, 5);
        assert_eq!(config.fanout, Fanout::Xread);
    }
}
