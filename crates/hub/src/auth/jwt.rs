//! HMAC-signed JSON Web Tokens (feature `jwt`).

use std::{
    collections::BTreeMap,
    fmt,
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Access, AuthError, Identity, Permissions, Verifier};

/// The name of the claim that carries channel permissions.
pub const CHANNELS_CLAIM: &str = "channels";

/// The clock leeway a new [`JwtVerifier`] allows on `exp` and `nbf`.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// An HMAC signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Hmac {
    /// HMAC with SHA-256 (`HS256`), the default.
    #[default]
    Hs256,
    /// HMAC with SHA-384 (`HS384`).
    Hs384,
    /// HMAC with SHA-512 (`HS512`).
    Hs512,
}

impl Hmac {
    /// The name in a JWT header: `HS256`, `HS384` or `HS512`.
    pub const fn name(self) -> &'static str {
        match self {
            Hmac::Hs256 => "HS256",
            Hmac::Hs384 => "HS384",
            Hmac::Hs512 => "HS512",
        }
    }

    const fn algorithm(self) -> Algorithm {
        match self {
            Hmac::Hs256 => Algorithm::HS256,
            Hmac::Hs384 => Algorithm::HS384,
            Hmac::Hs512 => Algorithm::HS512,
        }
    }
}

impl fmt::Display for Hmac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses `HS256`, `HS384` or `HS512` (in any case).
impl FromStr for Hmac {
    type Err = JwtError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [Hmac::Hs256, Hmac::Hs384, Hmac::Hs512]
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| JwtError::UnknownAlgorithm(name.to_owned()))
    }
}

/// Why a JWT signer or verifier could not be made, or a token not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The HMAC secret is empty.
    #[error("the JWT secret is empty")]
    EmptySecret,
    /// An algorithm name other than HS256, HS384 or HS512.
    #[error("unknown JWT algorithm `{0}` (expected HS256, HS384 or HS512)")]
    UnknownAlgorithm(String),
    /// Signing failed.
    #[error("cannot sign the JWT: {0}")]
    Sign(String),
}

/// The claims of a token to sign with [`JwtSigner::sign`] (for tests,
/// tools and token-issuing services), in the shape [`JwtVerifier`] reads
/// (see there).
///
/// ```
/// use std::time::Duration;
/// use gotalk_hub::auth::{Access, Claims};
///
/// let claims = Claims::new("alice")
///     .expires_in(Duration::from_secs(3600))
///     .allow("chat:*", Access::READ | Access::WRITE)
///     .allow("news", Access::READ);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    user: String,
    expires: Option<u64>,
    not_before: Option<u64>,
    issued_at: Option<u64>,
    issuer: Option<String>,
    audience: Option<String>,
    permissions: Permissions,
    scopes: Vec<String>,
}

impl Claims {
    /// Claims for `user` (`sub`), with no expiry and no channel access yet.
    pub fn new(user: impl Into<String>) -> Self {
        Claims {
            user: user.into(),
            expires: None,
            not_before: None,
            issued_at: None,
            issuer: None,
            audience: None,
            permissions: Permissions::none(),
            scopes: Vec::new(),
        }
    }

    /// Expires `ttl` from now (`exp`), issued now (`iat`).
    pub fn expires_in(mut self, ttl: Duration) -> Self {
        let now = unix_seconds(SystemTime::now());
        self.issued_at = Some(now);
        self.expires = Some(now.saturating_add(ttl.as_secs()));
        self
    }

    /// Expires at `at` (`exp`, whole seconds).
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires = Some(unix_seconds(at));
        self
    }

    /// Not valid before `at` (`nbf`, whole seconds).
    pub fn not_before(mut self, at: SystemTime) -> Self {
        self.not_before = Some(unix_seconds(at));
        self
    }

    /// The issuer (`iss`).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// The audience (`aud`).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Adds `access` on channels matching `pattern` (the `channels` claim).
    pub fn allow(mut self, pattern: impl Into<String>, access: Access) -> Self {
        self.permissions = self.permissions.allow(pattern, access);
        self
    }

    /// Adds a scope (the `scope` claim, space-separated): a grant of the
    /// connection's identity once it authenticates (see
    /// [`Identity::scopes`]).
    ///
    /// # Panics
    /// If `scope` is empty or contains whitespace (it could not be read back).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        let scope = scope.into();
        assert!(
            !scope.is_empty() && !scope.contains(char::is_whitespace),
            "Claims::scope: {scope:?} must be one non-empty word"
        );
        self.scopes.push(scope);
        self
    }

    /// Adds every rule of `permissions` (the `channels` claim).
    pub fn permissions(mut self, permissions: &Permissions) -> Self {
        for (pattern, access) in permissions.rules() {
            self.permissions = self.permissions.allow(pattern, access);
        }
        self
    }
}

/// The JSON form of [`Claims`].
#[derive(Serialize)]
struct WireClaims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    channels: BTreeMap<&'a str, Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

impl<'a> From<&'a Claims> for WireClaims<'a> {
    fn from(c: &'a Claims) -> Self {
        // One entry per pattern: a pattern given twice gets the union.
        let mut merged: BTreeMap<&str, Access> = BTreeMap::new();
        for (pattern, access) in c.permissions.rules() {
            let entry = merged.entry(pattern).or_default();
            *entry = entry.union(access);
        }
        WireClaims {
            sub: &c.user,
            exp: c.expires,
            nbf: c.not_before,
            iat: c.issued_at,
            iss: c.issuer.as_deref(),
            aud: c.audience.as_deref(),
            channels: merged
                .into_iter()
                .map(|(p, a)| (p, a.level_names().collect()))
                .collect(),
            scope: (!c.scopes.is_empty()).then(|| c.scopes.join(" ")),
        }
    }
}

/// Makes HMAC-signed tokens that a [`JwtVerifier`] with the same secret
/// accepts.
///
/// ```
/// use std::time::Duration;
/// use gotalk_hub::auth::{Claims, Hmac, JwtSigner};
///
/// let signer = JwtSigner::new("s3cret")?.algorithm(Hmac::Hs512);
/// let token = signer.sign(&Claims::new("alice").expires_in(Duration::from_secs(60)))?;
/// assert_eq!(token.split('.').count(), 3);
/// # Ok::<(), gotalk_hub::auth::JwtError>(())
/// ```
#[derive(Clone)]
pub struct JwtSigner {
    key: EncodingKey,
    algorithm: Hmac,
}

impl JwtSigner {
    /// A signer with `secret`, signing with HS256.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, JwtError> {
        let key = EncodingKey::from_secret(secret.as_ref()).map_err(|_| JwtError::EmptySecret)?;
        Ok(JwtSigner {
            key,
            algorithm: Hmac::default(),
        })
    }

    /// Signs with `algorithm` instead.
    pub fn algorithm(mut self, algorithm: Hmac) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The signed token (`header.claims.signature`).
    pub fn sign(&self, claims: &Claims) -> Result<String, JwtError> {
        let header = Header::new(self.algorithm.algorithm());
        jsonwebtoken::encode(&header, &WireClaims::from(claims), &self.key)
            .map_err(|e| JwtError::Sign(e.to_string()))
    }
}

impl fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSigner")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Verifies HMAC-signed JWTs.
///
/// # Claims
///
/// | claim      | required                  | meaning                                              |
/// |------------|---------------------------|------------------------------------------------------|
/// | `sub`      | yes                       | the user: a non-empty string                         |
/// | `exp`      | yes, unless relaxed       | expiry, seconds since the Unix epoch                 |
/// | `nbf`      | no                        | not valid before, seconds since the Unix epoch       |
/// | `iss`      | if an issuer is set       | must be the configured issuer                        |
/// | `aud`      | if an audience is set     | must be (or, as an array, contain) the audience      |
/// | `channels` | no                        | access per channel pattern, see below                |
/// | `scope`    | no                        | space-separated scopes: [`Identity::scopes`]         |
///
/// `channels` ([`CHANNELS_CLAIM`]) is an object from channel pattern (a
/// name, a prefix ending in `*`, or `*`) to an array of access level names
/// (`read`, `write`, `presence`, `all`):
///
/// ```json
/// {"sub": "alice", "exp": 1767225600,
///  "channels": {"chat:*": ["read", "write", "presence"], "news": ["read"]}}
/// ```
///
/// Without the claim the identity gets [`JwtVerifier::default_permissions`]
/// (no access, unless configured). Other claims (`iat`, `jti`, ...) are
/// ignored. The identity's `expires` is `exp` itself, without the leeway.
///
/// # Defaults
///
/// HS256 only, `exp` required, 30 seconds of clock leeway, no issuer or
/// audience check (`aud` is then ignored), no channel access without a
/// `channels` claim. The builder methods below change each.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use gotalk_hub::auth::{Access, AuthError, Claims, JwtVerifier};
///
/// let verifier = JwtVerifier::new("s3cret")?.issuer("https://auth.example");
/// let token = verifier.sign(
///     &Claims::new("alice")
///         .issuer("https://auth.example")
///         .expires_in(Duration::from_secs(3600))
///         .allow("chat:*", Access::READ | Access::WRITE),
/// )?;
///
/// let identity = verifier.verify_token(&token).unwrap();
/// assert_eq!(identity.user, "alice");
/// assert!(identity.expires.is_some());
/// assert!(identity.permissions.allows("chat:lobby", Access::WRITE));
/// assert!(!identity.permissions.allows("news", Access::READ));
///
/// let other = JwtVerifier::new("another secret")?;
/// assert_eq!(other.verify_token(&token), Err(AuthError::BadSignature));
/// # Ok::<(), gotalk_hub::auth::JwtError>(())
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    signer: JwtSigner,
    algorithms: Vec<Hmac>,
    leeway: Duration,
    require_expiry: bool,
    issuer: Option<String>,
    audience: Option<String>,
    default_permissions: Permissions,
    validation: Validation,
}

impl JwtVerifier {
    /// A verifier for tokens signed with `secret` (the raw bytes of the
    /// shared HMAC key).
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, JwtError> {
        let secret = secret.as_ref();
        let key = DecodingKey::from_secret(secret).map_err(|_| JwtError::EmptySecret)?;
        let mut verifier = JwtVerifier {
            key,
            signer: JwtSigner::new(secret)?,
            algorithms: vec![Hmac::Hs256],
            leeway: DEFAULT_LEEWAY,
            require_expiry: true,
            issuer: None,
            audience: None,
            default_permissions: Permissions::none(),
            validation: Validation::new(Algorithm::HS256),
        };
        verifier.rebuild_validation();
        Ok(verifier)
    }

    /// Accepts exactly these algorithms; [`JwtVerifier::sign`] uses the
    /// first.
    ///
    /// # Panics
    ///
    /// If `algorithms` is empty.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Hmac>) -> Self {
        let mut list: Vec<Hmac> = Vec::new();
        for a in algorithms {
            if !list.contains(&a) {
                list.push(a);
            }
        }
        assert!(
            !list.is_empty(),
            "JwtVerifier::algorithms: the list is empty"
        );
        self.signer = self.signer.algorithm(list[0]);
        self.algorithms = list;
        self.rebuild_validation();
        self
    }

    /// The clock leeway allowed on `exp` and `nbf`, in whole seconds
    /// (rounded up); 30 seconds by default.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self.rebuild_validation();
        self
    }

    /// Whether tokens must have `exp` (true by default). Tokens without one
    /// then stand for identities that never expire.
    pub fn require_expiry(mut self, require: bool) -> Self {
        self.require_expiry = require;
        self.rebuild_validation();
        self
    }

    /// Requires `iss` to be `issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self.rebuild_validation();
        self
    }

    /// Requires `aud` to be (or contain) `audience`. Without it, `aud` is
    /// not checked.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self.rebuild_validation();
        self
    }

    /// The permissions of tokens without a `channels` claim (none by
    /// default).
    pub fn default_permissions(mut self, permissions: Permissions) -> Self {
        self.default_permissions = permissions;
        self
    }

    /// Signs `claims` with this verifier's secret and first algorithm.
    pub fn sign(&self, claims: &Claims) -> Result<String, JwtError> {
        self.signer.sign(claims)
    }

    /// A signer with this verifier's secret and first algorithm.
    pub fn signer(&self) -> &JwtSigner {
        &self.signer
    }

    /// Checks `token` now; [`Verifier::verify`] without the future.
    pub fn verify_token(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidToken => not_a_jwt(),
            _ => AuthError::Invalid(format!("malformed header: {e}")),
        })?;
        if !self.algorithms.iter().any(|a| a.algorithm() == header.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted (expected {})",
                header.alg,
                self.algorithms
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation)
            .map_err(|e| map_error(e, token))?;
        let claims = data.claims;

        let user = match claims.sub {
            None | Some(Value::Null) => {
                return Err(AuthError::Invalid("missing `sub` claim (the user)".into()));
            }
            Some(Value::String(s)) if s.is_empty() => {
                return Err(AuthError::Invalid("empty `sub` claim".into()));
            }
            Some(Value::String(s)) => s,
            Some(_) => {
                return Err(AuthError::Invalid(
                    "the `sub` claim must be a string".into(),
                ));
            }
        };
        // `decode` checked that `exp`, when present, is a number of seconds.
        let expires = claims
            .exp
            .as_ref()
            .and_then(Value::as_u64)
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
        let permissions = match claims.channels {
            None | Some(Value::Null) => self.default_permissions.clone(),
            Some(value) => parse_channels(value)?,
        };
        let scopes = match claims.scope {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(_) => {
                return Err(AuthError::Invalid(
                    "the `scope` claim must be a string of space-separated scopes".into(),
                ));
            }
        };
        Ok(Identity {
            user,
            expires,
            permissions,
            scopes,
        })
    }

    fn rebuild_validation(&mut self) {
        let mut v = Validation::new(self.algorithms[0].algorithm());
        v.algorithms = self.algorithms.iter().map(|a| a.algorithm()).collect();
        v.leeway = self.leeway.as_secs() + u64::from(self.leeway.subsec_nanos() > 0);
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = Vec::new();
        if self.require_expiry {
            required.push("exp");
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        self.validation = v;
    }
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.algorithms)
            .field("leeway", &self.leeway)
            .field("require_expiry", &self.require_expiry)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("default_permissions", &self.default_permissions)
            .finish_non_exhaustive()
    }
}

impl Verifier for JwtVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(std::future::ready(self.verify_token(token)))
    }
}

/// The claims the verifier reads, loosely typed so that it can say what is
/// wrong with them.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<Value>,
    exp: Option<Value>,
    channels: Option<Value>,
    scope: Option<Value>,
}

fn parse_channels(value: Value) -> Result<Permissions, AuthError> {
    let shape = || {
        AuthError::Invalid(format!(
            "the `{CHANNELS_CLAIM}` claim must map channel patterns to arrays of access levels"
        ))
    };
    let Value::Object(map) = value else {
        return Err(shape());
    };
    let mut permissions = Permissions::none();
    for (pattern, levels) in map {
        Permissions::check_pattern(&pattern)
            .map_err(|e| AuthError::Invalid(format!("`{CHANNELS_CLAIM}` claim: {e}")))?;
        let Value::Array(levels) = levels else {
            return Err(shape());
        };
        let mut access = Access::NONE;
        for level in levels {
            let name = level.as_str().ok_or_else(shape)?;
            let level = Access::parse_level(name).ok_or_else(|| {
                AuthError::Invalid(format!(
                    "`{CHANNELS_CLAIM}` claim: unknown access level `{name}` for `{pattern}` \
                     (expected read, write, presence or all)"
                ))
            })?;
            access = access.union(level);
        }
        permissions = permissions.allow(pattern, access);
    }
    Ok(permissions)
}

fn not_a_jwt() -> AuthError {
    AuthError::Invalid("not a JWT (expected three base64url parts separated by dots)".into())
}

/// The [`AuthError`] for an error of [`jsonwebtoken::decode`] on `token`.
fn map_error(e: jsonwebtoken::errors::Error, token: &str) -> AuthError {
    match e.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidToken => not_a_jwt(),
        ErrorKind::MissingRequiredClaim(claim) => {
            // Also said of a claim that is there with the wrong type. The
            // signature has been checked by now, so the claims can be read.
            let present = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token)
                .is_ok_and(|claims| claims.get(claim).is_some_and(|v| !v.is_null()));
            AuthError::Invalid(match (present, claim.as_str()) {
                (true, "exp" | "nbf") => format!("the `{claim}` claim must be a number of seconds"),
                (true, _) => format!("the `{claim}` claim has the wrong type"),
                (false, _) => format!("missing `{claim}` claim"),
            })
        }
        ErrorKind::InvalidClaimFormat(claim) => AuthError::Invalid(match claim.as_str() {
            "exp" | "nbf" => format!("the `{claim}` claim must be a number of seconds"),
            _ => format!("the `{claim}` claim has the wrong type"),
        }),
        ErrorKind::ImmatureSignature => {
            AuthError::Invalid("not valid yet (`nbf` is in the future)".into())
        }
        ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer (`iss`)".into()),
        ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience (`aud`)".into()),
        ErrorKind::Base64(_) => AuthError::Invalid(format!("malformed base64url: {e}")),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            AuthError::Invalid(format!("malformed claims: {e}"))
        }
        _ => AuthError::Invalid(e.to_string()),
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &str = "test secret, long enough for HS512 too";

    fn now() -> u64 {
        unix_seconds(SystemTime::now())
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(SECRET).unwrap()
    }

    /// Signs any JSON as the claims, with `alg`.
    fn raw_token(alg: Algorithm, claims: &Value) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(alg), claims, &key).unwrap()
    }

    fn invalid(result: Result<Identity, AuthError>) -> String {
        match result {
            Err(AuthError::Invalid(message)) => message,
            other => panic!("expected AuthError::Invalid, got {other:?}"),
        }
    }

    #[test]
    fn scopes_round_trip_and_a_malformed_scope_claim_is_refused() {
        let v = verifier();
        let token = v
            .sign(
                &Claims::new("alice")
                    .expires_in(Duration::from_secs(60))
                    .scope("admin")
                    .scope("billing:read"),
            )
            .unwrap();
        let identity = v.verify_token(&token).unwrap();
        assert_eq!(identity.scopes, ["admin", "billing:read"]);
        let peer = identity.to_peer_identity();
        assert_eq!(peer.subject(), "alice");
        assert!(peer.has("admin") && peer.has("billing:read") && !peer.has("billing"));
        // Without the claim: no scopes.
        let plain = v
            .sign(&Claims::new("bob").expires_in(Duration::from_secs(60)))
            .unwrap();
        assert!(v.verify_token(&plain).unwrap().scopes.is_empty());
        let bad = raw_token(
            Algorithm::HS256,
            &json!({"sub": "eve", "exp": now() + 60, "scope": ["admin"]}),
        );
        assert!(invalid(v.verify_token(&bad)).contains("`scope` claim"));
    }

    #[test]
    fn a_signed_token_yields_user_expiry_and_permissions() {
        let v = verifier();
        let exp = now() + 3600;
        let token = raw_token(
            Algorithm::HS256,
            &json!({
                "sub": "alice",
                "exp": exp,
                "channels": {"chat:*": ["read", "write", "presence"], "news": ["read"], "ops": []},
            }),
        );
        let id = v.verify_token(&token).unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.expires, Some(UNIX_EPOCH + Duration::from_secs(exp)));
        assert_eq!(id.permissions.access("chat:lobby"), Access::ALL);
        assert_eq!(id.permissions.access("news"), Access::READ);
        assert_eq!(id.permissions.access("ops"), Access::NONE);
        assert_eq!(id.permissions.access("newsroom"), Access::NONE);
    }

    #[test]
    fn claims_built_in_code_round_trip_through_sign_and_verify() {
        let v = verifier().issuer("iss").audience("hub");
        let claims = Claims::new("bob")
            .issuer("iss")
            .audience("hub")
            .expires_in(Duration::from_secs(60))
            .allow("chat:*", Access::READ)
            .allow("chat:*", Access::WRITE)
            .permissions(&"news=all".parse().unwrap());
        let id = v.verify_token(&v.sign(&claims).unwrap()).unwrap();
        assert_eq!(id.user, "bob");
        let expires = id.expires.unwrap().duration_since(UNIX_EPOCH).unwrap();
        assert!(expires.as_secs().abs_diff(now() + 60) <= 1);
        assert_eq!(
            id.permissions.access("chat:x"),
            Access::READ | Access::WRITE
        );
        assert_eq!(id.permissions.access("news"), Access::ALL);

        // The wire form: merged patterns, level names, no empty fields.
        let token = JwtSigner::new(SECRET)
            .unwrap()
            .sign(
                &Claims::new("carol")
                    .allow("a", Access::READ)
                    .allow("a", Access::PRESENCE),
            )
            .unwrap();
        let payload: Value = jsonwebtoken::dangerous::insecure_decode_claims(&token).unwrap();
        assert_eq!(
            payload,
            json!({"sub": "carol", "channels": {"a": ["read", "presence"]}})
        );
    }

    #[test]
    fn an_expired_token_is_refused_after_the_signature_check() {
        let v = verifier();
        let token = raw_token(Algorithm::HS256, &json!({"sub": "a", "exp": now() - 3600}));
        assert_eq!(v.verify_token(&token), Err(AuthError::Expired));

        let forged = JwtVerifier::new("other").unwrap();
        assert_eq!(forged.verify_token(&token), Err(AuthError::BadSignature));
    }

    #[test]
    fn leeway_accepts_a_slightly_late_clock_and_is_configurable() {
        let token = raw_token(Algorithm::HS256, &json!({"sub": "a", "exp": now() - 10}));
        assert!(
            verifier().verify_token(&token).is_ok(),
            "default leeway 30 s"
        );
        let strict = verifier().leeway(Duration::ZERO);
        assert_eq!(strict.verify_token(&token), Err(AuthError::Expired));
        let wide = verifier().leeway(Duration::from_secs(120));
        let older = raw_token(Algorithm::HS256, &json!({"sub": "a", "exp": now() - 100}));
        assert!(wide.verify_token(&older).is_ok());
        assert_eq!(verifier().verify_token(&older), Err(AuthError::Expired));

        // nbf in the near future: inside the leeway, fine; beyond, refused.
        let soon = raw_token(
            Algorithm::HS256,
            &json!({"sub": "a", "exp": now() + 600, "nbf": now() + 10}),
        );
        assert!(verifier().verify_token(&soon).is_ok());
        assert!(invalid(strict.verify_token(&soon)).contains("nbf"));
    }

    #[test]
    fn a_wrong_signature_is_bad_signature() {
        let token = JwtSigner::new("someone else's secret")
            .unwrap()
            .sign(&Claims::new("a").expires_in(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(
            verifier().verify_token(&token),
            Err(AuthError::BadSignature)
        );

        // A valid token with one character of its claims changed.
        let good = verifier()
            .sign(&Claims::new("alice").expires_in(Duration::from_secs(60)))
            .unwrap();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(&good).unwrap();
        let tampered = raw_token(
            Algorithm::HS256,
            &json!({"sub": "mallory", "exp": claims["exp"]}),
        );
        parts[1] = tampered.split('.').nth(1).unwrap().to_owned();
        assert_eq!(
            verifier().verify_token(&parts.join(".")),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn only_the_configured_algorithms_are_accepted() {
        let claims = json!({"sub": "a", "exp": now() + 60});
        let hs512 = raw_token(Algorithm::HS512, &claims);
        let message = invalid(verifier().verify_token(&hs512));
        assert!(
            message.contains("HS512") && message.contains("expected HS256"),
            "{message}"
        );

        let both = verifier().algorithms([Hmac::Hs512, Hmac::Hs256]);
        assert!(both.verify_token(&hs512).is_ok());
        assert!(
            both.verify_token(&raw_token(Algorithm::HS256, &claims))
                .is_ok()
        );
        assert_eq!(both.signer().algorithm, Hmac::Hs512);
        assert_eq!(
            jsonwebtoken::decode_header(both.sign(&Claims::new("a")).unwrap())
                .unwrap()
                .alg,
            Algorithm::HS512
        );

        // An asymmetric algorithm, or none, in the header: refused outright.
        let body_and_sig = hs512.split_once('.').unwrap().1;
        let rs256 = format!("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.{body_and_sig}");
        assert!(invalid(verifier().verify_token(&rs256)).contains("RS256"));
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{body_and_sig}");
        assert!(invalid(verifier().verify_token(&none)).contains("malformed header"));
        let unsigned = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            hs512.split('.').nth(1).unwrap()
        );
        assert!(matches!(
            verifier().verify_token(&unsigned),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn algorithm_names_parse() {
        assert_eq!("hs384".parse::<Hmac>(), Ok(Hmac::Hs384));
        assert_eq!(Hmac::Hs512.to_string(), "HS512");
        assert_eq!(
            "RS256".parse::<Hmac>(),
            Err(JwtError::UnknownAlgorithm("RS256".into()))
        );
    }

    #[test]
    fn sub_is_required_and_must_be_a_non_empty_string() {
        let v = verifier();
        let exp = now() + 60;
        let missing = invalid(v.verify_token(&raw_token(Algorithm::HS256, &json!({"exp": exp}))));
        assert!(missing.contains("missing `sub`"), "{missing}");
        let number =
            invalid(v.verify_token(&raw_token(Algorithm::HS256, &json!({"sub": 7, "exp": exp}))));
        assert!(number.contains("`sub` claim must be a string"), "{number}");
        let empty = invalid(v.verify_token(&raw_token(
            Algorithm::HS256,
            &json!({"sub": "", "exp": exp}),
        )));
        assert!(empty.contains("empty `sub`"), "{empty}");
    }

    #[test]
    fn exp_is_required_unless_relaxed_and_must_be_a_number() {
        let token = raw_token(Algorithm::HS256, &json!({"sub": "a"}));
        assert!(invalid(verifier().verify_token(&token)).contains("missing `exp`"));
        let id = verifier()
            .require_expiry(false)
            .verify_token(&token)
            .unwrap();
        assert_eq!(id.expires, None);

        let text = raw_token(Algorithm::HS256, &json!({"sub": "a", "exp": "tomorrow"}));
        let message = invalid(verifier().verify_token(&text));
        assert!(
            message.contains("`exp` claim must be a number"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_channels_claim_is_refused_with_the_reason() {
        let v = verifier();
        let exp = now() + 60;
        let check = |channels: Value, expected: &str| {
            let token = raw_token(
                Algorithm::HS256,
                &json!({"sub": "a", "exp": exp, "channels": channels}),
            );
            let message = invalid(v.verify_token(&token));
            assert!(
                message.contains(expected),
                "{message:?} should contain {expected:?}"
            );
        };
        check(
            json!(["chat:*"]),
            "must map channel patterns to arrays of access levels",
        );
        check(json!({"chat:*": "read"}), "must map channel patterns");
        check(json!({"chat:*": [1]}), "must map channel patterns");
        check(
            json!({"chat:*": ["read", "admin"]}),
            "unknown access level `admin` for `chat:*`",
        );
        check(json!({"a*b": ["read"]}), "`*` may only end a pattern");
        check(json!({"": ["read"]}), "empty channel pattern");
    }

    #[test]
    fn without_channels_the_default_permissions_apply() {
        let token = raw_token(Algorithm::HS256, &json!({"sub": "a", "exp": now() + 60}));
        assert!(
            verifier()
                .verify_token(&token)
                .unwrap()
                .permissions
                .is_empty()
        );
        let open =
            verifier().default_permissions(Permissions::none().allow("public:*", Access::READ));
        assert!(
            open.verify_token(&token)
                .unwrap()
                .permissions
                .allows("public:x", Access::READ)
        );
        let null = raw_token(
            Algorithm::HS256,
            &json!({"sub": "a", "exp": now() + 60, "channels": null}),
        );
        assert!(
            open.verify_token(&null)
                .unwrap()
                .permissions
                .allows("public:x", Access::READ)
        );
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let exp = now() + 60;
        let v = verifier().issuer("https://auth").audience("hub");
        let token = |claims: Value| raw_token(Algorithm::HS256, &claims);
        assert!(
            v.verify_token(&token(
                json!({"sub": "a", "exp": exp, "iss": "https://auth", "aud": "hub"})
            ))
            .is_ok()
        );
        assert!(
            v.verify_token(&token(
                json!({"sub": "a", "exp": exp, "iss": "https://auth", "aud": ["x", "hub"]})
            ))
            .is_ok()
        );
        let cases = [
            (
                json!({"sub": "a", "exp": exp, "iss": "https://evil", "aud": "hub"}),
                "wrong issuer",
            ),
            (
                json!({"sub": "a", "exp": exp, "aud": "hub"}),
                "missing `iss`",
            ),
            (
                json!({"sub": "a", "exp": exp, "iss": "https://auth", "aud": "other"}),
                "wrong audience",
            ),
            (
                json!({"sub": "a", "exp": exp, "iss": "https://auth"}),
                "missing `aud`",
            ),
        ];
        for (claims, expected) in cases {
            let message = invalid(v.verify_token(&token(claims)));
            assert!(
                message.contains(expected),
                "{message:?} should contain {expected:?}"
            );
        }
        // Without a configured audience, `aud` is ignored.
        assert!(
            verifier()
                .verify_token(&token(json!({"sub": "a", "exp": exp, "aud": "x"})))
                .is_ok()
        );
    }

    #[test]
    fn malformed_tokens_are_invalid_with_a_useful_message() {
        let v = verifier();
        for token in ["", "abc", "a.b", "a.b.c.d"] {
            let message = invalid(v.verify_token(token));
            assert!(
                message.contains("not a JWT") || message.contains("malformed"),
                "{token:?}: {message}"
            );
        }
        let good = v
            .sign(&Claims::new("a").expires_in(Duration::from_secs(60)))
            .unwrap();
        let (header, rest) = good.split_once('.').unwrap();
        // Claims that are not base64url, correctly signed.
        let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        let message = format!("{header}.!!!");
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
        let message = invalid(v.verify_token(&format!("{message}.{signature}")));
        assert!(message.contains("malformed base64url"), "{message}");
        // Tampering with the claims breaks the signature first.
        let signature = rest.split_once('.').unwrap().1;
        assert_eq!(
            v.verify_token(&format!("{header}.e30.{signature}")),
            Err(AuthError::BadSignature)
        );
        assert!(invalid(v.verify_token(&format!("e30.{rest}"))).contains("malformed header"));
        // Claims that are not a JSON object, correctly signed.
        let array = raw_token(Algorithm::HS256, &json!([1, 2]));
        assert!(invalid(v.verify_token(&array)).contains("malformed claims"));
    }

    #[test]
    fn empty_secrets_are_refused_and_secrets_are_not_printed() {
        assert_eq!(JwtVerifier::new("").unwrap_err(), JwtError::EmptySecret);
        assert_eq!(JwtSigner::new(b"").unwrap_err(), JwtError::EmptySecret);
        let printed = format!("{:?} {:?}", verifier(), verifier().signer());
        assert!(!printed.contains("test secret"), "{printed}");
    }

    #[test]
    #[should_panic(expected = "the list is empty")]
    fn an_empty_algorithm_list_panics() {
        let _ = verifier().algorithms([]);
    }

    #[tokio::test]
    async fn the_verifier_trait_gives_the_same_answer() {
        let v = verifier();
        let token = v
            .sign(&Claims::new("a").expires_in(Duration::from_secs(60)))
            .unwrap();
        let id = Verifier::verify(&v, &token).await;
        assert_eq!(id, v.verify_token(&token));
        assert_eq!(id.unwrap().user, "a");
    }
}
