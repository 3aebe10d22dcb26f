//! Console authentication: salted PBKDF2-HMAC-SHA256 password hashes (PHC string format, so the
//! Python standard library can produce them), constant-time comparisons, random session and CSRF
//! tokens, and an in-memory session store with absolute and idle expiry (failed-login throttling
//! is [`super::lockout`]).
//!
//! PBKDF2, the constant-time comparison and the random bytes come from aws-lc (`aws-lc-rs`), the
//! library the gateway's TLS and token signatures already run on: no hand-written cryptography
//! (a 600,000-iteration hash takes ≈ 0.1 s, as the hand-written one did). Published test vectors
//! check the PBKDF2 we call. Sessions live in this process only: a restart logs everyone out,
//! which is the safe direction.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::pbkdf2;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha2::{Digest, Sha256};

/// Name of the session cookie.
pub const COOKIE: &str = "tollbu_console";
/// Iterations new hashes get (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// Fewest iterations a configured hash may have.
pub const MIN_ITERATIONS: u32 = 100_000;
/// Sessions held at most; the oldest go first.
const MAX_SESSIONS: usize = 1024;

/// A parsed `$pbkdf2-sha256$i=N,l=32$salt$hash` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub hash: [u8; 32],
}

impl PasswordHash {
    /// Parses a PHC string; the message says what is wrong (never the hash itself).
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        let bad = |why: &str| {
            format!(
                "`password_hash` must be `$pbkdf2-sha256$i=<iterations>,l=32$<base64 salt>$<base64 hash>`: {why}"
            )
        };
        let mut parts = text.split('$');
        if parts.next() != Some("") || parts.next() != Some("pbkdf2-sha256") {
            return Err(bad("unknown scheme"));
        }
        let params = parts.next().ok_or_else(|| bad("no parameters"))?;
        let mut iterations = None;
        for param in params.split(',') {
            match param.split_once('=') {
                Some(("i", n)) => iterations = n.parse::<u32>().ok(),
                Some(("l", "32")) => {}
                _ => return Err(bad("parameters are `i` and `l=32`")),
            }
        }
        let iterations = iterations.ok_or_else(|| bad("no iteration count"))?;
        if iterations < MIN_ITERATIONS {
            return Err(bad(&format!("at least {MIN_ITERATIONS} iterations")));
        }
        let decode =
            |s: Option<&str>| s.and_then(|s| STANDARD_NO_PAD.decode(s.trim_end_matches('=')).ok());
        let salt = decode(parts.next()).ok_or_else(|| bad("salt is not base64"))?;
        if salt.len() < 8 {
            return Err(bad("salt shorter than 8 bytes"));
        }
        let hash = decode(parts.next())
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(|| bad("hash is not 32 bytes of base64"))?;
        if parts.next().is_some() {
            return Err(bad("trailing fields"));
        }
        Ok(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }

    /// The PHC string.
    pub fn to_phc(&self) -> String {
        format!(
            "$pbkdf2-sha256$i={},l=32${}${}",
            self.iterations,
            STANDARD_NO_PAD.encode(&self.salt),
            STANDARD_NO_PAD.encode(self.hash)
        )
    }

    /// Hashes `password` with a fresh random salt.
    pub fn new(password: &str, iterations: u32) -> Option<PasswordHash> {
        let mut salt = [0u8; 16];
        fill_random(&mut salt)?;
        Some(PasswordHash {
            iterations,
            salt: salt.to_vec(),
            hash: pbkdf2_sha256(password.as_bytes(), &salt, NonZeroU32::new(iterations)?),
        })
    }

    /// True when `password` hashes to this; the comparison is constant-time.
    pub fn verify(&self, password: &str) -> bool {
        let Some(iterations) = NonZeroU32::new(self.iterations) else {
            return false;
        };
        pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &self.salt,
            password.as_bytes(),
            &self.hash,
        )
        .is_ok()
    }
}

/// Identifies the password hash a session was opened with (its PHC string, hashed), so that
/// changing an officer's password ends the sessions opened with the old one.
pub fn credential_id(password_hash: &str) -> [u8; 32] {
    Sha256::digest(password_hash.as_bytes()).into()
}

/// Runs PBKDF2 for `iterations` and discards the result: a login with an unknown name, or with a
/// hash of fewer iterations than another user's, takes as long as the dearest one, so the time
/// does not tell which names exist.
pub fn spend_iterations(iterations: u32) {
    if let Some(iterations) = NonZeroU32::new(iterations) {
        // `verify` rather than `derive`: the same work, and no panic path on a login.
        let _ = pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            b"tollbu-console-padding",
            b"",
            &[0; 32],
        );
    }
}

/// PBKDF2-HMAC-SHA256 with a 32-byte output (RFC 8018 §5.2), for new hashes (`tollbu console
/// hash-password`); logins check with [`PasswordHash::verify`].
pub fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: NonZeroU32) -> [u8; 32] {
    let mut out = [0; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password,
        &mut out,
    );
    out
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Fills `buf` from the TLS library's CSPRNG (aws-lc); `None` if it failed.
pub fn fill_random(buf: &mut [u8]) -> Option<()> {
    aws_lc_rs::rand::fill(buf).ok()
}

/// 32 random bytes as 64 hex characters.
pub fn random_token() -> Option<String> {
    let mut buf = [0u8; 32];
    fill_random(&mut buf)?;
    Some(hex::encode(buf))
}

/// A logged-in officer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    /// Echoed in every form and checked on every POST.
    pub csrf: String,
    /// The audit directory of the gateway that issued it (one process may run several).
    pub scope: PathBuf,
    /// [`credential_id`] of the password hash the officer logged in with: a new password (or the
    /// name given to someone else) ends the session at its next request.
    credential: [u8; 32],
    created: Instant,
    last_seen: Instant,
}

/// Session lifetimes, from `[console]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub ttl: Duration,
    pub idle: Duration,
}

/// Sessions keyed by SHA-256 of their token (the token itself is never stored).
#[derive(Default)]
pub struct Sessions {
    by_token: HashMap<[u8; 32], Session>,
}

fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    /// Starts a session; returns its (token, session), or `None` if no randomness was available.
    pub fn create(
        &mut self,
        user: &str,
        credential: [u8; 32],
        scope: PathBuf,
        now: Instant,
    ) -> Option<(String, Session)> {
        let token = random_token()?;
        let session = Session {
            user: user.to_owned(),
            csrf: random_token()?,
            scope,
            credential,
            created: now,
            last_seen: now,
        };
        if self.by_token.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .by_token
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k)
        {
            self.by_token.remove(&oldest);
        }
        self.by_token.insert(token_key(&token), session.clone());
        Some((token, session))
    }

    /// The live session for `token`, refreshed; expired sessions are removed.
    pub fn get(&mut self, token: &str, life: Lifetimes, now: Instant) -> Option<Session> {
        let key = token_key(token);
        let session = self.by_token.get_mut(&key)?;
        let expired = now.saturating_duration_since(session.created) >= life.ttl
            || now.saturating_duration_since(session.last_seen) >= life.idle;
        if expired {
            self.by_token.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    pub fn remove(&mut self, token: &str) {
        self.by_token.remove(&token_key(token));
    }
}

/// The process's sessions.
pub static SESSIONS: LazyLock<Mutex<Sessions>> = LazyLock::new(Mutex::default);

/// Runs `f` on the session store, even if a panic poisoned it.
pub fn with_sessions<T>(f: impl FnOnce(&mut Sessions) -> T) -> T {
    match SESSIONS.lock() {
        Ok(mut guard) => f(&mut guard),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` value for a new session.
pub fn session_cookie(token: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// What a request without a valid session gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// A logged-in officer.
    Pass(Session),
    /// A page: 303 to the login form.
    Login,
    /// The JSON API: 401.
    Unauthorized,
}

/// Checks the session cookie; pages and the API differ only in how they refuse.
pub fn gate(
    sessions: &mut Sessions,
    headers: &http::HeaderMap,
    path: &str,
    life: Lifetimes,
    users: &[(&str, [u8; 32])],
    scope: &std::path::Path,
    now: Instant,
) -> Gate {
    let refuse = if path.starts_with("/console/api/") {
        Gate::Unauthorized
    } else {
        Gate::Login
    };
    let Some(token) = cookie(headers, COOKIE) else {
        return refuse;
    };
    match sessions.get(token, life, now) {
        // A user removed from the config (and reloaded), or given a new password, loses its
        // sessions at their next request.
        Some(s) if users.contains(&(s.user.as_str(), s.credential)) && s.scope == scope => {
            Gate::Pass(s)
        }
        Some(_) => {
            sessions.remove(token);
            refuse
        }
        None => refuse,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn pbkdf2_matches_published_vectors() {
        // RFC 7914 §11 (first 32 of 64 bytes).
        let rounds = |n| NonZeroU32::new(n).unwrap();
        assert_eq!(
            hex::encode(pbkdf2_sha256(b"passwd", b"salt", rounds(1))),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        assert_eq!(
            hex::encode(pbkdf2_sha256(b"password", b"salt", rounds(4096))),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn hashes_round_trip_and_check_passwords() {
        let h = PasswordHash::new("correct horse", MIN_ITERATIONS).unwrap();
        let parsed = PasswordHash::parse(&h.to_phc()).unwrap();
        assert_eq!(parsed, h);
        assert!(parsed.verify("correct horse"));
        assert!(!parsed.verify("correct horse "));
        assert!(!parsed.verify(""));
        let other = PasswordHash::new("correct horse", MIN_ITERATIONS).unwrap();
        assert_ne!(other.salt, h.salt, "salts are random");
    }

    #[test]
    fn malformed_or_weak_hashes_are_refused() {
        let good = PasswordHash::new("x", MIN_ITERATIONS).unwrap().to_phc();
        assert!(PasswordHash::parse(&good).is_ok());
        for bad in [
            "",
            "plaintext",
            &good.replace("pbkdf2-sha256", "pbkdf2-sha1"),
            &good.replace("i=100000", "i=1000"),
            &good.replace("l=32", "l=64"),
            &format!("{good}$extra"),
            "$pbkdf2-sha256$i=100000,l=32$c2FsdHNhbHQ$c2hvcnQ",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad}");
        }
        let error = PasswordHash::parse("$pbkdf2-sha256$i=5,l=32$x$y").unwrap_err();
        assert!(error.contains("at least 100000 iterations"), "{error}");
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    fn headers(cookie_value: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(v) = cookie_value {
            h.insert(http::header::COOKIE, v.parse().unwrap());
        }
        h
    }

    const LIFE: Lifetimes = Lifetimes {
        ttl: Duration::from_secs(3600),
        idle: Duration::from_secs(600),
    };

    #[test]
    fn sessions_expire_absolutely_and_when_idle() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let scope = PathBuf::from("/a");
        let (token, session) = s.create("so", [1; 32], scope.clone(), t0).unwrap();
        assert_eq!(token.len(), 64);
        assert_ne!(token, session.csrf);
        // Active use keeps it alive until the absolute limit.
        let mut t = t0;
        for _ in 0..6 {
            t += Duration::from_secs(500);
            assert!(s.get(&token, LIFE, t).is_some());
        }
        t += Duration::from_secs(600);
        assert!(s.get(&token, LIFE, t).is_none(), "past the absolute ttl");
        assert!(s.get(&token, LIFE, t0).is_none(), "removed once expired");
        // Idle expiry.
        let (token, _) = s.create("so", [1; 32], scope, t0).unwrap();
        assert!(s.get(&token, LIFE, t0 + Duration::from_secs(599)).is_some());
        assert!(
            s.get(&token, LIFE, t0 + Duration::from_secs(1199))
                .is_none()
        );
    }

    #[test]
    fn unauthenticated_pages_redirect_and_the_api_refuses() {
        let mut s = Sessions::default();
        let now = Instant::now();
        let scope = PathBuf::from("/a");
        let gate_for =
            |s: &mut Sessions, cookie: Option<&str>, path: &str, users: &[(&str, [u8; 32])]| {
                gate(s, &headers(cookie), path, LIFE, users, &scope, now)
            };
        let so = [("so", [1u8; 32])];
        assert_eq!(gate_for(&mut s, None, "/console/records", &so), Gate::Login);
        assert_eq!(
            gate_for(&mut s, None, "/console/api/records", &so),
            Gate::Unauthorized
        );
        let forged = format!("{COOKIE}={}", "0".repeat(64));
        assert_eq!(
            gate_for(&mut s, Some(&forged), "/console/verify", &so),
            Gate::Login
        );
        let (token, _) = s.create("so", [1; 32], scope.clone(), now).unwrap();
        let good = format!("other=1; {COOKIE}={token}");
        assert!(matches!(
            gate_for(&mut s, Some(&good), "/console/api/verify", &so),
            Gate::Pass(ref session) if session.user == "so"
        ));
        // Another gateway in the same process does not accept it.
        assert_eq!(
            gate(
                &mut s,
                &headers(Some(&good)),
                "/console/x",
                LIFE,
                &so,
                std::path::Path::new("/b"),
                now
            ),
            Gate::Login
        );
        // A user removed from the config loses the session.
        let (token, _) = s.create("gone", [1; 32], scope.clone(), now).unwrap();
        let cookie = format!("{COOKIE}={token}");
        assert_eq!(
            gate_for(&mut s, Some(&cookie), "/console/api/x", &so),
            Gate::Unauthorized
        );
        // So does one whose password was changed: the session was opened with the old one, and it
        // does not come back when the old password does.
        let (token, _) = s.create("so", [1; 32], scope.clone(), now).unwrap();
        let cookie = format!("{COOKIE}={token}");
        assert_eq!(
            gate_for(&mut s, Some(&cookie), "/console/api/x", &[("so", [2; 32])]),
            Gate::Unauthorized
        );
        assert_eq!(
            gate_for(&mut s, Some(&cookie), "/console/api/x", &so),
            Gate::Unauthorized
        );
    }

    #[test]
    fn cookies_are_strict_and_http_only() {
        let c = session_cookie("abc", Duration::from_secs(60), false);
        assert_eq!(
            c,
            "tollbu_console=abc; Path=/console; HttpOnly; SameSite=Strict; Max-Age=60"
        );
        assert!(session_cookie("abc", Duration::from_secs(60), true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
