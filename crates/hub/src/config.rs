//! [`Limits`], and history options per channel pattern.

use std::time::Duration;

use crate::broker::HistoryOptions;

/// The hub's bounds, each with what happens when it is reached.
///
/// ```
/// use std::time::Duration;
/// use gotalk_hub::Limits;
/// let limits = Limits { max_subscriptions: 16, presence_ttl: Duration::from_secs(30), ..Limits::default() };
/// # let _ = limits;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest channel name, in bytes; longer ones get `invalid channel`.
    /// Default 255; never more than 4095, the longest gotalk notification
    /// name (channels are delivered as notifications named by them).
    pub max_channel_len: usize,
    /// Subscriptions per connection; one more gets `too many
    /// subscriptions`. Default 256.
    pub max_subscriptions: usize,
    /// How long a presence entry lives unless refreshed. Default 60 s.
    pub presence_ttl: Duration,
    /// How often the hub refreshes the presence entries of its live
    /// connections; keep it well under `presence_ttl`. Default 25 s.
    pub presence_refresh: Duration,
    /// Most publications recovered in one go, by a `subscribe` with
    /// `since` (more missed than this: `recovered: false`) and by one
    /// history read of the node's own recovery. Default 1000.
    pub max_recover: usize,
    /// Most publications a `history` request returns (also its default
    /// `limit`). Default 1000.
    pub max_history: usize,
    /// Live publications held for one subscription while its `subscribe`
    /// reads history; past it the `subscribe` fails with `subscribe
    /// overrun` (the client may try again). Default 10 000.
    pub max_held_publications: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_channel_len: 255,
            max_subscriptions: 256,
            presence_ttl: Duration::from_secs(60),
            presence_refresh: Duration::from_secs(25),
            max_recover: 1000,
            max_history: 1000,
            max_held_publications: 10_000,
        }
    }
}

impl Limits {
    /// Whether `name` is a valid channel name: not empty, at most
    /// `max_channel_len` bytes, no control characters.
    pub fn valid_channel(&self, name: &str) -> bool {
        let max = self.max_channel_len.min(gotalk_peer::proto::MAX_NAME_LEN);
        !name.is_empty() && name.len() <= max && !name.chars().any(char::is_control)
    }
}

/// History options per channel pattern (`news`, `chat:*`, `*`): the most
/// specific pattern matching a channel wins (its exact name, else the
/// longest prefix); channels no pattern matches keep no history.
#[derive(Debug, Clone, Default)]
pub(crate) struct HistoryRules {
    rules: Vec<(String, HistoryOptions)>,
}

impl HistoryRules {
    pub(crate) fn add(&mut self, pattern: String, options: HistoryOptions) {
        self.rules.retain(|(p, _)| *p != pattern);
        self.rules.push((pattern, options));
    }

    pub(crate) fn for_channel(&self, channel: &str) -> HistoryOptions {
        let mut best: Option<(usize, HistoryOptions)> = None;
        for (pattern, options) in &self.rules {
            let specificity = match pattern.strip_suffix('*') {
                None if pattern == channel => usize::MAX,
                None => continue,
                Some(prefix) if channel.starts_with(prefix) => prefix.len(),
                Some(_) => continue,
            };
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, *options));
            }
        }
        best.map_or_else(HistoryOptions::default, |(_, o)| o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_pattern_wins() {
        let opts = |size| HistoryOptions {
            size,
            ttl: Duration::from_secs(1),
        };
        let mut rules = HistoryRules::default();
        rules.add("*".into(), opts(1));
        rules.add("chat:*".into(), opts(2));
        rules.add("chat:lobby".into(), opts(3));
        rules.add("chat:l*".into(), opts(4));
        assert_eq!(rules.for_channel("chat:lobby").size, 3);
        assert_eq!(rules.for_channel("chat:lounge").size, 4);
        assert_eq!(rules.for_channel("chat:x").size, 2);
        assert_eq!(rules.for_channel("news").size, 1);
        assert_eq!(HistoryRules::default().for_channel("x").size, 0);
    }

    #[test]
    fn channel_names() {
        let l = Limits {
            max_channel_len: 4,
            ..Limits::default()
        };
        assert!(l.valid_channel("abcd"));
        assert!(!l.valid_channel("abcde"));
        assert!(!l.valid_channel(""));
        assert!(!l.valid_channel("a\nb"));
        let huge = Limits {
            max_channel_len: usize::MAX,
            ..Limits::default()
        };
        assert!(!huge.valid_channel(&"x".repeat(4096)));
    }
}
