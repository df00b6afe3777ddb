//! JWT (JWS compact) verification on `ring`: HS256, RS256 and ES256 against the JWKS keys.
//!
//! Built on `ring`, already the proxy's crypto, rather than a JWT crate: the three algorithms
//! are one `ring` call each, and the JWT crates either pull a second crypto stack
//! (aws-lc-sys, RustCrypto) or hide which keys may verify which algorithm. Here a key is typed
//! by its algorithm when the JWKS is read, so an RSA public key can never be taken for an HMAC
//! secret, and `alg: none` or any other algorithm is refused before any key is looked at.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, UnparsedPublicKey};

use crate::config::auth::{AuthConfig, Jwk, JwkKey};

use super::oauth::IssuerKeys;

/// Why a token was refused; the message says what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts with JSON header and claims.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is none or not one of the accepted ones.
    #[error("token algorithm {0:?} is not accepted; sign with HS256, RS256 or ES256")]
    Algorithm(String),
    /// The header names a key none of the key sets holds.
    #[error("token names key id {0:?}, which none of the proxy's keys has (jwks_file, or the trusted issuers' JWKS); if the issuer just rotated its keys, retry in a few seconds")]
    UnknownKid(String),
    /// No configured key of the token's algorithm verifies the signature.
    #[error("token signature is invalid (forged, altered, or signed with a key the proxy does not know)")]
    Signature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired {0} s ago; get a fresh token")]
    Expired(u64),
    /// No `exp` claim.
    #[error("token has no exp claim; the proxy only accepts tokens that expire")]
    NoExpiry,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid yet (nbf is {0} s from now); check the clocks")]
    NotYetValid(u64),
    /// `iss` is not an accepted issuer.
    #[error("token issuer {got:?} is not accepted; expected {expected}")]
    Issuer {
        /// The token's `iss`.
        got: String,
        /// The accepted ones.
        expected: String,
    },
    /// `aud` names none of the accepted audiences.
    #[error("token audience {got} is not this proxy; expected {expected}")]
    Audience {
        /// The token's `aud`.
        got: String,
        /// The accepted ones.
        expected: String,
    },
    /// No `sub` claim.
    #[error("token has no sub claim, which names the client")]
    NoSubject,
}

impl JwtError {
    /// The bounded metric label for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::Expired(_) => "expired",
            JwtError::Signature | JwtError::UnknownKid(_) | JwtError::Algorithm(_) => "forged",
            JwtError::Issuer { .. } | JwtError::Audience { .. } => "wrong_audience",
            _ => "invalid",
        }
    }
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `iss`, empty when absent.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `exp`, seconds since the epoch.
    pub expires: u64,
    /// The scopes granted (`scope`, space-separated, or `scp`, a list).
    pub scopes: Vec<String>,
}

fn part(text: &str, what: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JwtError::Malformed(format!("the {what} is not base64url")))
}

/// Verifies `token` at `now` (seconds since the epoch) against `auth`'s `jwks_file` keys, with
/// its `issuer` and `audience` rules, and against the keys of the trusted OAuth issuers
/// (`issuers`): a token one of those verifies must carry that issuer as `iss` (a key speaks for
/// its own issuer only) and the proxy's canonical URL or a configured audience as `aud`.
pub fn verify(
    auth: &AuthConfig,
    issuers: &[IssuerKeys],
    token: &str,
    now: u64,
) -> Result<Verified, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "a JWT has three dot-separated parts".into(),
        ));
    };
    let header: serde_json::Value = serde_json::from_slice(&part(h, "header")?)
        .map_err(|_| JwtError::Malformed("the header is not JSON".into()))?;
    // RFC 7515 4.1.11: extensions the verifier does not understand must not be ignored.
    if header.get("crit").is_some() {
        return Err(JwtError::Malformed(
            "the header lists crit extensions, which this proxy does not support".into(),
        ));
    }
    let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("");
    if !matches!(alg, "HS256" | "RS256" | "ES256") {
        return Err(JwtError::Algorithm(alg.to_owned()));
    }
    let kid = header.get("kid").and_then(|k| k.as_str());
    // Every key with the issuer it speaks for (`None`: a jwks_file key, under [auth]'s rules).
    let all = auth.keys.iter().map(|k| (k, None)).chain(
        issuers
            .iter()
            .flat_map(|i| i.keys.iter().map(move |k| (k, Some(i.issuer.as_str())))),
    );
    let all: Vec<(&Jwk, Option<&str>)> = all.collect();
    if let Some(kid) = kid {
        if !all.iter().any(|(k, _)| k.kid.as_deref() == Some(kid)) {
            return Err(JwtError::UnknownKid(kid.to_owned()));
        }
    }
    let signature = part(s, "signature")?;
    let signed = &token.as_bytes()[..h.len() + 1 + c.len()];
    let candidates = all
        .iter()
        .filter(|(k, _)| k.key.alg() == alg)
        .filter(|(k, _)| kid.is_none() || k.kid.as_deref() == kid);
    let mut verified_by: Option<Option<&str>> = None;
    for (k, issuer) in candidates {
        let ok = match &k.key {
            JwkKey::Hs256(secret) => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                ring::hmac::verify(&key, signed, &signature).is_ok()
            }
            JwkKey::Rs256 { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &signature)
                .is_ok(),
            JwkKey::Es256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, &signature)
                    .is_ok()
            }
        };
        if ok {
            verified_by = Some(*issuer);
            break;
        }
    }
    let Some(verified_by) = verified_by else {
        return Err(JwtError::Signature);
    };
    // Claims are only read once the signature holds: nothing unauthenticated is interpreted.
    let claims: serde_json::Value = serde_json::from_slice(&part(c, "claims")?)
        .map_err(|_| JwtError::Malformed("the claims are not JSON".into()))?;
    let leeway = auth.leeway.as_secs();
    let seconds = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_f64())
            .map(|f| f.max(0.0) as u64)
    };
    let exp = seconds("exp").ok_or(JwtError::NoExpiry)?;
    if now > exp.saturating_add(leeway) {
        return Err(JwtError::Expired(now - exp));
    }
    if let Some(nbf) = seconds("nbf") {
        if nbf > now.saturating_add(leeway) {
            return Err(JwtError::NotYetValid(nbf - now));
        }
    }
    let issuer = claims
        .get("iss")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_owned();
    let aud: Vec<&str> = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.as_str()],
        Some(serde_json::Value::Array(list)) => list.iter().filter_map(|a| a.as_str()).collect(),
        _ => Vec::new(),
    };
    let wrong_audience = |expected: String| JwtError::Audience {
        got: if aud.is_empty() {
            "(none)".into()
        } else {
            format!("{aud:?}")
        },
        expected,
    };
    match (verified_by, &auth.oauth) {
        (Some(trusted), Some(oauth)) => {
            if issuer != trusted {
                return Err(JwtError::Issuer {
                    got: issuer,
                    expected: trusted.to_owned(),
                });
            }
            // RFC 8707 / MCP authorization: a token meant for another resource is refused,
            // never accepted or passed on.
            if !aud.iter().any(|a| oauth.accepts_audience(a)) {
                let mut expected = vec![oauth.public_url.clone()];
                expected.extend(oauth.audiences.iter().cloned());
                return Err(wrong_audience(expected.join(" or ")));
            }
        }
        _ => {
            if !auth.issuers.is_empty() && !auth.issuers.contains(&issuer) {
                return Err(JwtError::Issuer {
                    got: issuer,
                    expected: auth.issuers.join(" or "),
                });
            }
            if !auth.audiences.is_empty()
                && !aud.iter().any(|a| auth.audiences.iter().any(|x| x == a))
            {
                return Err(wrong_audience(auth.audiences.join(" or ")));
            }
        }
    }
    let scopes = match (claims.get("scope"), claims.get("scp")) {
        (Some(serde_json::Value::String(s)), _) => {
            s.split_whitespace().map(str::to_owned).collect()
        }
        (_, Some(serde_json::Value::Array(list))) => list
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let subject = claims
        .get("sub")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or(JwtError::NoSubject)?
        .to_owned();
    Ok(Verified {
        issuer,
        subject,
        expires: exp,
        scopes,
    })
}

/// The `iss` a token claims, read without verifying anything: only to choose which trusted
/// issuer's keys to fetch again when the token names an unknown `kid`.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let claims = part(token.split('.').nth(1)?, "claims").ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// An HS256 token over `header` and `claims`, for the tests of every module that verifies them.
#[cfg(test)]
pub(crate) fn sign(header: &str, claims: &str, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::auth::Jwk;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn auth() -> AuthConfig {
        AuthConfig {
            enabled: true,
            leeway: std::time::Duration::from_secs(30),
            issuers: vec!["https://issuer".into()],
            audiences: vec!["mcp-proxy".into()],
            keys: vec![Jwk {
                kid: Some("k1".into()),
                key: JwkKey::Hs256(SECRET.to_vec()),
            }],
            clients: Vec::new(),
            oauth: None,
            ..AuthConfig::default()
        }
    }

    const GOOD: &str =
        r#"{"iss":"https://issuer","aud":["x","mcp-proxy"],"sub":"alice","exp":2000}"#;

    #[test]
    fn a_good_token_verifies() {
        let t = sign(r#"{"alg":"HS256","kid":"k1"}"#, GOOD, SECRET);
        let v = verify(&auth(), &[], &t, 1000).expect("valid");
        assert_eq!(v.subject, "alice");
        let t = sign(r#"{"alg":"HS256"}"#, GOOD, SECRET);
        assert!(
            verify(&auth(), &[], &t, 1000).is_ok(),
            "no kid: every HS256 key is tried"
        );
    }

    #[test]
    fn bad_tokens_are_refused_with_their_reason() {
        let a = auth();
        let t = sign(
            r#"{"alg":"HS256"}"#,
            GOOD,
            b"another secret of thirty-two b!!",
        );
        assert_eq!(verify(&a, &[], &t, 1000), Err(JwtError::Signature));
        let t = sign(r#"{"alg":"none"}"#, GOOD, SECRET);
        assert!(matches!(
            verify(&a, &[], &t, 1000),
            Err(JwtError::Algorithm(_))
        ));
        let t = sign(r#"{"alg":"HS256","kid":"k9"}"#, GOOD, SECRET);
        assert!(matches!(
            verify(&a, &[], &t, 1000),
            Err(JwtError::UnknownKid(_))
        ));
        let t = sign(r#"{"alg":"HS256"}"#, GOOD, SECRET);
        assert_eq!(verify(&a, &[], &t, 2031), Err(JwtError::Expired(31)));
        assert!(verify(&a, &[], &t, 2029).is_ok(), "within the leeway");
        let t = sign(
            r#"{"alg":"HS256"}"#,
            r#"{"iss":"https://issuer","aud":"other","sub":"a","exp":2000}"#,
            SECRET,
        );
        assert!(matches!(
            verify(&a, &[], &t, 1000),
            Err(JwtError::Audience { .. })
        ));
        let t = sign(
            r#"{"alg":"HS256"}"#,
            r#"{"iss":"evil","aud":"mcp-proxy","sub":"a","exp":2000}"#,
            SECRET,
        );
        assert!(matches!(
            verify(&a, &[], &t, 1000),
            Err(JwtError::Issuer { .. })
        ));
        let t = sign(
            r#"{"alg":"HS256"}"#,
            r#"{"iss":"https://issuer","aud":"mcp-proxy","sub":"a"}"#,
            SECRET,
        );
        assert_eq!(verify(&a, &[], &t, 1000), Err(JwtError::NoExpiry));
        let t = sign(r#"{"alg":"RS256"}"#, GOOD, SECRET);
        assert_eq!(
            verify(&a, &[], &t, 1000),
            Err(JwtError::Signature),
            "an HMAC key never verifies RS256"
        );
        assert!(matches!(
            verify(&a, &[], "a.b", 1000),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            verify(&a, &[], "!!.!!.!!", 1000),
            Err(JwtError::Malformed(_))
        ));
    }

    /// An ES256 key pair as a trusted issuer would hold it, and a signer with it.
    fn es256_issuer(issuer: &str) -> (IssuerKeys, impl Fn(&str) -> String) {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("pair");
        let keys = IssuerKeys {
            issuer: issuer.to_owned(),
            keys: vec![Jwk {
                kid: Some("e1".into()),
                key: JwkKey::Es256(pair.public_key().as_ref().to_vec()),
            }],
        };
        let sign = move |claims: &str| {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"e1"}"#),
                URL_SAFE_NO_PAD.encode(claims)
            );
            let sig = pair.sign(&rng, input.as_bytes()).expect("sign");
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        };
        (keys, sign)
    }

    #[test]
    fn a_trusted_issuers_key_vouches_for_its_own_issuer_and_this_proxys_audience_only() {
        let mut a = auth();
        a.oauth = Some(crate::config::oauth::OAuthConfig {
            public_url: "https://mcp.example.com/mcp".into(),
            issuers: vec!["https://login.example.com".into()],
            audiences: Vec::new(),
            scopes_supported: Vec::new(),
            ca_file: None,
            refresh: std::time::Duration::from_secs(60),
            kid_refresh: std::time::Duration::from_secs(5),
            upstreams: Vec::new(),
        });
        let (keys, sign) = es256_issuer("https://login.example.com");
        let good = sign(
            r#"{"iss":"https://login.example.com","aud":"https://mcp.example.com/mcp","sub":"alice","exp":2000,"scope":"mcp:tools mcp:admin"}"#,
        );
        let v = verify(&a, std::slice::from_ref(&keys), &good, 1000).expect("valid");
        assert_eq!(v.scopes, ["mcp:tools", "mcp:admin"]);
        // The same key signing for another issuer (one whose own keys the proxy may not have).
        let other = sign(
            r#"{"iss":"https://evil.example.com","aud":"https://mcp.example.com/mcp","sub":"alice","exp":2000}"#,
        );
        assert!(matches!(
            verify(&a, std::slice::from_ref(&keys), &other, 1000),
            Err(JwtError::Issuer { .. })
        ));
        // A token of the trusted issuer meant for another resource, or with [auth]'s audience.
        for aud in [
            r#""https://other.example.com/mcp""#,
            r#""mcp-proxy""#,
            "null",
        ] {
            let t = sign(&format!(
                r#"{{"iss":"https://login.example.com","aud":{aud},"sub":"alice","exp":2000}}"#
            ));
            assert!(
                matches!(
                    verify(&a, std::slice::from_ref(&keys), &t, 1000),
                    Err(JwtError::Audience { .. })
                ),
                "{aud}"
            );
        }
    }
}
