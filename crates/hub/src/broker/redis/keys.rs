//! The names of a channel's keys and pub/sub channel.

/// Builds names from the configured prefix. Every name is
/// `PREFIX KIND ":" CHANNEL`; kinds contain no `:`, so two channels never
/// share a name.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
    /// `PREFIX "pub:"`, the start of every pub/sub channel name.
    pubsub_prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            pubsub_prefix: format!("{prefix}pub:"),
        }
    }

    fn name(&self, kind: &str, channel: &str) -> String {
        let mut name = String::with_capacity(self.prefix.len() + kind.len() + 1 + channel.len());
        name.push_str(&self.prefix);
        name.push_str(kind);
        name.push(':');
        name.push_str(channel);
        name
    }

    /// Hash `{e: epoch, o: offset}`: the channel's position.
    pub(super) fn meta(&self, channel: &str) -> String {
        self.name("meta", channel)
    }

    /// Stream of the kept publications; entry id `OFFSET-0`.
    pub(super) fn stream(&self, channel: &str) -> String {
        self.name("history", channel)
    }

    /// Hash client -> user: the presence entries.
    pub(super) fn presence(&self, channel: &str) -> String {
        self.name("presence", channel)
    }

    /// Sorted set client -> expiry (ms since the Unix epoch, Redis clock).
    pub(super) fn presence_expiry(&self, channel: &str) -> String {
        self.name("presence-expiry", channel)
    }

    /// The pub/sub channel carrying the channel's deliveries.
    pub(super) fn pubsub(&self, channel: &str) -> String {
        self.name("pub", channel)
    }

    /// The hub channel a pub/sub channel name belongs to, if it is one of
    /// this prefix's.
    pub(super) fn channel_of<'a>(&self, pubsub: &'a str) -> Option<&'a str> {
        pubsub.strip_prefix(&self.pubsub_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn names() {
        let keys = Keys::new("hub:");
        assert_eq!(keys.meta("a:b"), "hub:meta:a:b");
        assert_eq!(keys.stream("a"), "hub:history:a");
        assert_eq!(keys.presence("a"), "hub:presence:a");
        assert_eq!(keys.presence_expiry("a"), "hub:presence-expiry:a");
        assert_eq!(keys.pubsub("x:y"), "hub:pub:x:y");
        assert_eq!(keys.channel_of("hub:pub:x:y"), Some("x:y"));
        assert_eq!(keys.channel_of("hub:pub:"), Some(""));
        assert_eq!(keys.channel_of("other:pub:x"), None);
        assert_eq!(keys.channel_of("hub:meta:x"), None);
    }
}
