//! Access levels per channel pattern.

use std::{fmt, ops::BitOr, str::FromStr};

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

    /// Parses a comma-separated list of level names (`read,write`), as
    /// written in token files and on the command line, or `none` alone
    /// (what [`Display`](fmt::Display) writes for no level). Also [`FromStr`].
    ///
    /// ```
    /// use gotalk_hub::auth::Access;
    ///
    /// assert_eq!(Access::parse_levels("read,presence")?, Access::READ | Access::PRESENCE);
    /// assert!(Access::parse_levels("read,admin").is_err());
    /// # Ok::<(), gotalk_hub::auth::ParsePermissionsError>(())
    /// ```
    pub fn parse_levels(list: &str) -> Result<Access, ParsePermissionsError> {
        if list.trim() == "none" {
            return Ok(Access::NONE);
        }
        list.split(',').try_fold(Access::NONE, |acc, name| {
            let name = name.trim();
            match Access::parse_level(name) {
                Some(level) => Ok(acc.union(level)),
                None if name.is_empty() => Err(ParsePermissionsError::EmptyLevel),
                None => Err(ParsePermissionsError::UnknownLevel(name.to_owned())),
            }
        })
    }

    /// Whether no level is granted.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names of the granted levels, in the order read, write, presence.
    pub fn level_names(self) -> impl Iterator<Item = &'static str> {
        [
            (Access::READ, "read"),
            (Access::WRITE, "write"),
            (Access::PRESENCE, "presence"),
        ]
        .into_iter()
        .filter(move |(a, _)| self.contains(*a))
        .map(|(_, n)| n)
    }
}

impl BitOr for Access {
    type Output = Access;

    fn bitor(self, other: Access) -> Access {
        self.union(other)
    }
}

impl FromStr for Access {
    type Err = ParsePermissionsError;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        Access::parse_levels(list)
    }
}

/// The levels as a comma-separated list (`read,write`), the form
/// [`Access::parse_levels`] reads back; nothing at all prints as `none`.
impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.level_names().collect();
        f.write_str(&names.join(","))
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.level_names().collect();
        write!(f, "Access({})", names.join("|"))
    }
}

/// Why a permission rule, pattern or level list does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParsePermissionsError {
    /// A level name other than `read`, `write`, `presence` or `all`.
    #[error("unknown access level `{0}` (expected read, write, presence or all)")]
    UnknownLevel(String),
    /// An empty level name (`read,,write`, or nothing after `=`).
    #[error("empty access level (expected read, write, presence or all)")]
    EmptyLevel,
    /// A rule without `=` between the pattern and its levels.
    #[error("`{0}` is not a rule of the form PATTERN=LEVELS (e.g. `chat:*=read,write`)")]
    MissingEquals(String),
    /// An empty channel pattern.
    #[error("empty channel pattern")]
    EmptyPattern,
    /// A `*` anywhere but at the end of a pattern.
    #[error("invalid channel pattern `{0}`: `*` may only end a pattern")]
    MisplacedWildcard(String),
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

    /// Adds the rule `PATTERN=LEVELS` (`chat:*=read,write`), checking the
    /// pattern (see [`Permissions::check_pattern`]) and the level names.
    ///
    /// ```
    /// use gotalk_hub::auth::{Access, Permissions};
    ///
    /// let p = Permissions::none().allow_rule("chat:*=read,write")?;
    /// assert_eq!(p.access("chat:lobby"), Access::READ | Access::WRITE);
    /// assert!(Permissions::none().allow_rule("chat:*").is_err());
    /// # Ok::<(), gotalk_hub::auth::ParsePermissionsError>(())
    /// ```
    pub fn allow_rule(self, rule: &str) -> Result<Self, ParsePermissionsError> {
        let (pattern, levels) = rule
            .split_once('=')
            .ok_or_else(|| ParsePermissionsError::MissingEquals(rule.to_owned()))?;
        let pattern = pattern.trim();
        Permissions::check_pattern(pattern)?;
        Ok(self.allow(pattern, Access::parse_levels(levels)?))
    }

    /// Checks that `pattern` is a valid channel pattern: not empty, and
    /// with `*` at most once, at its end.
    pub fn check_pattern(pattern: &str) -> Result<(), ParsePermissionsError> {
        if pattern.is_empty() {
            return Err(ParsePermissionsError::EmptyPattern);
        }
        let body = pattern.strip_suffix('*').unwrap_or(pattern);
        if body.contains('*') {
            return Err(ParsePermissionsError::MisplacedWildcard(pattern.to_owned()));
        }
        Ok(())
    }

    /// The rules, in the order they were added.
    pub fn rules(&self) -> impl Iterator<Item = (&str, Access)> {
        self.rules.iter().map(|(p, a)| (p.as_str(), *a))
    }

    /// Whether there is no rule at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Whitespace-separated rules, each `PATTERN=LEVELS`:
/// `"chat:*=read,write news=read"`.
impl FromStr for Permissions {
    type Err = ParsePermissionsError;

    fn from_str(rules: &str) -> Result<Self, Self::Err> {
        rules
            .split_whitespace()
            .try_fold(Permissions::none(), Permissions::allow_rule)
    }
}

/// The rules in the form [`FromStr`] reads back: `chat:*=read,write news=read`.
impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (pattern, access)) in self.rules().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{pattern}={access}")?;
        }
        Ok(())
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

    #[test]
    fn level_lists_parse_with_typed_errors() {
        assert_eq!(
            "read, write".parse::<Access>(),
            Ok(Access::READ | Access::WRITE)
        );
        assert_eq!(Access::parse_levels("all"), Ok(Access::ALL));
        assert_eq!(
            Access::parse_levels("read,admin"),
            Err(ParsePermissionsError::UnknownLevel("admin".into()))
        );
        assert_eq!(
            Access::parse_levels("Read"),
            Err(ParsePermissionsError::UnknownLevel("Read".into()))
        );
        assert_eq!(
            Access::parse_levels("read,,write"),
            Err(ParsePermissionsError::EmptyLevel)
        );
        assert_eq!(
            Access::parse_levels(""),
            Err(ParsePermissionsError::EmptyLevel)
        );
        assert_eq!(Access::NONE.to_string(), "none");
        assert_eq!("none".parse::<Access>(), Ok(Access::NONE));
        assert_eq!(
            Access::parse_levels("none,read"),
            Err(ParsePermissionsError::UnknownLevel("none".into()))
        );
        assert_eq!(
            (Access::READ | Access::PRESENCE).to_string(),
            "read,presence"
        );
        assert!(Access::NONE.is_empty() && !Access::READ.is_empty());
    }

    #[test]
    fn rules_parse_check_patterns_and_print_back() {
        let p: Permissions = " chat:*=read,write\tnews=read  ".parse().unwrap();
        assert_eq!(
            p.rules().collect::<Vec<_>>(),
            vec![
                ("chat:*", Access::READ | Access::WRITE),
                ("news", Access::READ)
            ]
        );
        assert_eq!(p.to_string(), "chat:*=read,write news=read");
        assert_eq!(p.to_string().parse::<Permissions>().unwrap(), p);
        assert_eq!("".parse::<Permissions>().unwrap(), Permissions::none());
        let closed = Permissions::none().allow("ops", Access::NONE);
        assert_eq!(closed.to_string(), "ops=none");
        assert_eq!(closed.to_string().parse::<Permissions>().unwrap(), closed);
        assert!(Permissions::none().is_empty() && !p.is_empty());

        assert_eq!(
            "chat:*".parse::<Permissions>(),
            Err(ParsePermissionsError::MissingEquals("chat:*".into()))
        );
        assert_eq!(
            "=read".parse::<Permissions>(),
            Err(ParsePermissionsError::EmptyPattern)
        );
        assert_eq!(
            "chat:*:x=read".parse::<Permissions>(),
            Err(ParsePermissionsError::MisplacedWildcard("chat:*:x".into()))
        );
        assert_eq!(
            "a**=read".parse::<Permissions>(),
            Err(ParsePermissionsError::MisplacedWildcard("a**".into()))
        );
        assert_eq!(
            "news=".parse::<Permissions>(),
            Err(ParsePermissionsError::EmptyLevel)
        );
        assert_eq!(
            "news=read,root".parse::<Permissions>(),
            Err(ParsePermissionsError::UnknownLevel("root".into()))
        );
        assert!(Permissions::check_pattern("*").is_ok());
    }
}
