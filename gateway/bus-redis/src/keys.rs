//! The names of the keys and the channel one log uses, all under its prefix (the layout is
//! described in the [crate documentation](crate)).

/// Every key name of one log, computed once.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
    /// The epoch, a string.
    pub(crate) epoch: String,
    /// The sequence counter, a string holding an integer.
    pub(crate) seq: String,
    /// The set of topic names that ever had an event.
    pub(crate) topics: String,
    /// A hash from topic name to the highest sequence trimmed from its stream.
    pub(crate) evicted: String,
    /// The Pub/Sub channel ([`Fanout::PubSub`](crate::Fanout::PubSub)).
    pub(crate) channel: String,
    /// The stream of every event ([`Fanout::Xread`](crate::Fanout::Xread)).
    pub(crate) log: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            epoch: format!("{prefix}:epoch"),
            seq: format!("{prefix}:seq"),
            topics: format!("{prefix}:topics"),
            evicted: format!("{prefix}:evicted"),
            channel: format!("{prefix}:events"),
            log: format!("{prefix}:log"),
        }
    }

    /// The prefix every name starts with.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream holding `topic`'s history. Topic names need no escaping: their alphabet
    /// (`[A-Za-z0-9_.-]`) has no `:` and nothing Redis treats specially.
    pub(crate) fn topic(&self, topic: &str) -> String {
        format!("{}:t:{topic}", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every key of this log, with the glob characters of the
    /// prefix escaped so that a prefix like `a*` matches only itself.
    pub(crate) fn scan_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 3);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":*");
        pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let keys = Keys::new("sg");
        assert_eq!(keys.epoch, "sg:epoch");
        assert_eq!(keys.seq, "sg:seq");
        assert_eq!(keys.topics, "sg:topics");
        assert_eq!(keys.evicted, "sg:evicted");
        assert_eq!(keys.channel, "sg:events");
        assert_eq!(keys.log, "sg:log");
        assert_eq!(keys.topic("a.b"), "sg:t:a.b");
        assert_eq!(Keys::new("{x}*").scan_pattern(), "{x}\\*:*");
    }
}
