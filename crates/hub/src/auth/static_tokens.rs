//! Fixed tokens, from a token file or built in code.

use std::{
    collections::{HashMap, hash_map::Entry},
    fmt, fs, io,
    path::{Path, PathBuf},
    str::FromStr,
};

use futures::future::BoxFuture;

use super::{AuthError, Identity, Permissions, Verifier};

/// A [`Verifier`] with a fixed set of tokens, from a token file or built in
/// code.
///
/// # Token file format
///
/// One token per line: the token, the user, then any number of channel
/// rules `PATTERN=LEVELS`, separated by spaces or tabs. LEVELS is a
/// comma-separated list of `read`, `write`, `presence` and `all` (or
/// `none`); a
/// PATTERN is a channel name, a prefix ending in `*`, or `*`. Blank lines
/// are ignored, and a field starting with `#` starts a comment that runs to
/// the end of the line.
///
/// ```text
/// # token              user   rules
/// 4f9c0d1e8a7b         alice  chat:*=read,write,presence news=read
/// b3e2a1c0ffee         bot    news=read,write   # the news feed
/// 7d6c5b4a3210         admin  *=all
/// ```
///
/// Tokens must be unique. A token stands for a user who never expires.
///
/// Lookups go through a hash map with randomly keyed SipHash: a guess is
/// compared with a real token only when their keyed hashes collide, which
/// leaves nothing practical for a timing attack. Neither `Debug` output nor
/// error messages show whole tokens.
///
/// ```
/// use gotalk_hub::auth::{Access, AuthError, Permissions, StaticTokens};
///
/// let tokens: StaticTokens = "
///     ## token  user   rules
///     t0k3n    alice  chat:*=read,write news=read
/// ".parse()?;
/// let tokens = tokens.with("s3cr3t", "bot", Permissions::all());
///
/// let alice = tokens.identity("t0k3n").unwrap();
/// assert_eq!(alice.user, "alice");
/// assert!(alice.permissions.allows("chat:lobby", Access::READ | Access::WRITE));
/// assert_eq!(tokens.identity("guess"), Err(AuthError::Unknown));
/// # Ok::<(), gotalk_hub::auth::TokenFileError>(())
/// ```
#[derive(Clone, Default)]
pub struct StaticTokens {
    tokens: HashMap<String, Grant>,
}

#[derive(Clone)]
struct Grant {
    user: String,
    permissions: Permissions,
    line: Option<usize>,
}

/// Why a token file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("cannot read token file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// A line is not valid.
    #[error("{}line {line}: {message}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Syntax {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

impl StaticTokens {
    /// No tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) `token`, standing for `user` with `permissions`.
    pub fn with(
        mut self,
        token: impl Into<String>,
        user: impl Into<String>,
        permissions: Permissions,
    ) -> Self {
        self.insert(token, user, permissions);
        self
    }

    /// Adds (or replaces) `token`, standing for `user` with `permissions`.
    pub fn insert(
        &mut self,
        token: impl Into<String>,
        user: impl Into<String>,
        permissions: Permissions,
    ) {
        self.tokens.insert(
            token.into(),
            Grant {
                user: user.into(),
                permissions,
                line: None,
            },
        );
    }

    /// Parses a token file's text (see [`StaticTokens`]).
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let mut tokens = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let syntax = |message: String| TokenFileError::Syntax {
                path: None,
                line: number,
                message,
            };
            let mut fields = line
                .split_whitespace()
                .take_while(|field| !field.starts_with('#'));
            let Some(token) = fields.next() else {
                continue;
            };
            let user = fields
                .next()
                .ok_or_else(|| syntax(format!("token `{}` has no user", redact(token))))?;
            let permissions = fields
                .try_fold(Permissions::none(), Permissions::allow_rule)
                .map_err(|e| syntax(e.to_string()))?;
            match tokens.entry(token.to_owned()) {
                Entry::Occupied(first) => {
                    let first: &Grant = first.get();
                    return Err(syntax(format!(
                        "duplicate token (first on line {})",
                        first.line.unwrap_or(0)
                    )));
                }
                Entry::Vacant(slot) => {
                    slot.insert(Grant {
                        user: user.to_owned(),
                        permissions,
                        line: Some(number),
                    });
                }
            }
        }
        Ok(StaticTokens { tokens })
    }

    /// Loads a token file (see [`StaticTokens`]); syntax errors name
    /// the file and the line.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenFileError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|source| TokenFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            TokenFileError::Syntax { line, message, .. } => TokenFileError::Syntax {
                path: Some(path.to_owned()),
                line,
                message,
            },
            other => other,
        })
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there is no token.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The identity `token` stands for; [`Verifier::verify`] without the
    /// future.
    pub fn identity(&self, token: &str) -> Result<Identity, AuthError> {
        let entry = self.tokens.get(token).ok_or(AuthError::Unknown)?;
        Ok(Identity {
            user: entry.user.clone(),
            expires: None,
            permissions: entry.permissions.clone(),
            scopes: Vec::new(),
        })
    }
}

impl FromStr for StaticTokens {
    type Err = TokenFileError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticTokens")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl Verifier for StaticTokens {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(std::future::ready(self.identity(token)))
    }
}

/// A token as error messages show it: its first characters only.
fn redact(token: &str) -> String {
    match token.char_indices().nth(4) {
        Some((end, _)) => format!("{}…", &token[..end]),
        None => token.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Access;

    fn syntax_error(text: &str) -> (usize, String) {
        match StaticTokens::parse(text) {
            Err(TokenFileError::Syntax {
                path: None,
                line,
                message,
            }) => (line, message),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn a_token_file_parses_with_comments_blank_lines_and_rules() {
        let tokens: StaticTokens = "# tokens for the hub\n\
             \n\
             tok-a\talice   chat:*=read,write,presence news=read\n\
             \x20\x20tok-b bot news=read,write # the feed\n\
             tok-c nobody\n\
             tok#d admin *=all\n"
            .parse()
            .unwrap();
        assert_eq!(tokens.len(), 4);

        let alice = tokens.identity("tok-a").unwrap();
        assert_eq!(alice.user, "alice");
        assert_eq!(alice.expires, None);
        assert_eq!(alice.permissions.access("chat:lobby"), Access::ALL);
        assert_eq!(alice.permissions.access("news"), Access::READ);

        let bot = tokens.identity("tok-b").unwrap();
        assert_eq!(bot.permissions.access("news"), Access::READ | Access::WRITE);
        assert_eq!(bot.permissions.rules().count(), 1, "the comment is no rule");

        assert!(tokens.identity("tok-c").unwrap().permissions.is_empty());
        // `#` inside a field is part of it; only a field starting with it comments.
        assert!(
            tokens
                .identity("tok#d")
                .unwrap()
                .permissions
                .allows("x", Access::ALL)
        );
    }

    #[test]
    fn unknown_tokens_are_refused() {
        let tokens = StaticTokens::new().with("right", "alice", Permissions::all());
        assert_eq!(tokens.identity("wrong"), Err(AuthError::Unknown));
        assert_eq!(tokens.identity(""), Err(AuthError::Unknown));
        assert_eq!(tokens.identity("righ"), Err(AuthError::Unknown));
        assert_eq!(tokens.identity("right").unwrap().user, "alice");
        assert_eq!(StaticTokens::new().identity("x"), Err(AuthError::Unknown));
    }

    #[test]
    fn tokens_built_in_code_replace_earlier_ones() {
        let mut tokens = StaticTokens::parse("t alice\n").unwrap();
        tokens.insert("t", "bob", Permissions::none().allow("news", Access::READ));
        assert_eq!(tokens.len(), 1);
        let id = tokens.identity("t").unwrap();
        assert_eq!(id.user, "bob");
        assert!(id.permissions.allows("news", Access::READ));
        assert!(StaticTokens::new().is_empty());
    }

    #[test]
    fn syntax_errors_name_the_line_and_the_problem() {
        assert_eq!(
            syntax_error("ok alice\n\n# c\nlonely-token\n"),
            (4, "token `lone…` has no user".into())
        );
        assert_eq!(
            syntax_error("t alice chat:*=read,admin\n"),
            (
                1,
                "unknown access level `admin` (expected read, write, presence or all)".into()
            )
        );
        let (line, message) = syntax_error("a u\nb u chat:*\n");
        assert_eq!(line, 2);
        assert!(message.contains("PATTERN=LEVELS"), "{message}");
        assert_eq!(
            syntax_error("t u x*y=read").1,
            "invalid channel pattern `x*y`: `*` may only end a pattern"
        );
        assert_eq!(
            syntax_error("t u news=").1,
            "empty access level (expected read, write, presence or all)"
        );
        assert_eq!(
            syntax_error("same alice\nother bob\nsame carol\n"),
            (3, "duplicate token (first on line 1)".into())
        );
    }

    #[test]
    fn loading_a_file_reports_io_and_syntax_errors_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        fs::write(&path, "t1 alice chat:*=read\nt2 bob news=fly\n").unwrap();
        let err = StaticTokens::from_file(&path).unwrap_err();
        assert!(
            matches!(&err, TokenFileError::Syntax { path: Some(p), line: 2, .. } if p == &path),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{}: line 2: unknown access level `fly` (expected read, write, presence or all)",
                path.display()
            )
        );

        fs::write(&path, "t1 alice chat:*=read\n").unwrap();
        let tokens = StaticTokens::from_file(&path).unwrap();
        assert!(
            tokens
                .identity("t1")
                .unwrap()
                .permissions
                .allows("chat:a", Access::READ)
        );

        let missing = dir.path().join("absent");
        let err = StaticTokens::from_file(&missing).unwrap_err();
        match &err {
            TokenFileError::Io { path, source } => {
                assert_eq!(path, &missing);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
        assert!(err.to_string().starts_with("cannot read token file "));
    }

    #[test]
    fn debug_output_shows_no_token() {
        let tokens = StaticTokens::new().with("very-secret", "alice", Permissions::all());
        assert_eq!(format!("{tokens:?}"), "StaticTokens { tokens: 1 }");
    }

    #[tokio::test]
    async fn the_verifier_trait_gives_the_same_answer() {
        let tokens = StaticTokens::new().with("t", "alice", Permissions::all());
        assert_eq!(Verifier::verify(&tokens, "t").await, tokens.identity("t"));
        assert_eq!(
            Verifier::verify(&tokens, "u").await,
            Err(AuthError::Unknown)
        );
    }
}
