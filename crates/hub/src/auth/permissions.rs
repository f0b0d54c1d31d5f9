//! Access levels per channel pattern.

use std::fmt;

/// What a connection may do on a channel: any combination of read
/// (subscribe and history), write (publish) and presence.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Access(u8);

impl Access {
    /// Nothing.
    pub const NONE: Access = Access(0);
    /// Subscribe, and read history.
    pub const READ: Access = Access(1);
    /// Publish.
    pub const WRITE: Access = Access(2);
    /// See who is in the channel, and be announced in it.
    pub const PRESENCE: Access = Access(4);
    /// Everything.
    pub const ALL: Access = Access(7);

    /// Whether every level in `other` is in `self`.
    pub const fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets of levels.
    pub const fn union(self, other: Access) -> Access {
        Access(self.0 | other.0)
    }

    /// Parses one level name: `read`, `write` or `presence`.
    pub fn parse_level(name: &str) -> Option<Access> {
        match name {
            "read" => Some(Access::READ),
            "write" => Some(Access::WRITE),
            "presence" => Some(Access::PRESENCE),
            "all" => Some(Access::ALL),
            _ => None,
        }
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (Access::READ, "read"),
            (Access::WRITE, "write"),
            (Access::PRESENCE, "presence"),
        ]
        .into_iter()
        .filter(|(a, _)| self.contains(*a))
        .map(|(_, n)| n)
        .collect();
        write!(f, "Access({})", names.join("|"))
    }
}

/// Access levels per channel pattern. A pattern is a channel name, or a
/// prefix followed by `*` (`chat:*` matches `chat:lobby`), or `*` alone.
/// A channel's access is the union of every matching pattern's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    rules: Vec<(String, Access)>,
}

impl Permissions {
    /// No access anywhere.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every level on every channel.
    pub fn all() -> Self {
        Self::none().allow("*", Access::ALL)
    }

    /// Adds `access` on channels matching `pattern`.
    pub fn allow(mut self, pattern: impl Into<String>, access: Access) -> Self {
        self.rules.push((pattern.into(), access));
        self
    }

    /// The access granted on `channel`.
    pub fn access(&self, channel: &str) -> Access {
        self.rules
            .iter()
            .filter(|(pattern, _)| matches(pattern, channel))
            .fold(Access::NONE, |acc, (_, a)| acc.union(*a))
    }

    /// Whether `channel` allows every level in `access`.
    pub fn allows(&self, channel: &str, access: Access) -> bool {
        self.access(channel).contains(access)
    }
}

fn matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exactly_or_by_prefix_and_accumulate() {
        let p = Permissions::none()
            .allow("chat:*", Access::READ)
            .allow("chat:lobby", Access::WRITE)
            .allow("news", Access::READ.union(Access::PRESENCE));
        assert_eq!(p.access("chat:lobby"), Access::READ.union(Access::WRITE));
        assert_eq!(p.access("chat:other"), Access::READ);
        assert!(p.allows("news", Access::PRESENCE));
        assert!(!p.allows("news", Access::WRITE));
        assert_eq!(p.access("newsroom"), Access::NONE);
        assert_eq!(p.access("chat"), Access::NONE);
        assert!(Permissions::all().allows("anything", Access::ALL));
        assert!(!Permissions::none().allows("x", Access::READ));
    }

    #[test]
    fn levels_parse_and_print() {
        assert_eq!(Access::parse_level("write"), Some(Access::WRITE));
        assert_eq!(Access::parse_level("admin"), None);
        assert_eq!(format!("{:?}", Access::ALL), "Access(read|write|presence)");
    }
}
