//! Tokens: HS256 JWTs signed with the app's secret, carrying `uid`, `appId`, `iat`, `exp`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use wilddog_protocol::connack_code;

use crate::config::ServerConfig;

/// The claims of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user the token proves.
    pub uid: String,
    /// The app the user belongs to.
    #[serde(rename = "appId")]
    pub app_id: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The app id is not in the configuration.
    #[error("app `{0}` is not configured")]
    UnknownApp(String),
    /// The uid is empty.
    #[error("uid is empty")]
    EmptyUid,
    /// The signing library failed.
    #[error("cannot sign token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Why a `connect` was refused; maps to a `connack` code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Bad signature, malformed token, token of another app: code 1.
    #[error("token invalid: {0}")]
    Invalid(String),
    /// The `connect`'s app id is not configured: code 1 with `appIdInvalid` (41008).
    #[error("app id `{0}` is not an app of this server")]
    UnknownApp(String),
    /// Good signature, but past its `exp`: code 2.
    #[error("token expired")]
    Expired,
}

impl AuthError {
    /// The `connack.code` for this failure.
    pub fn connack_code(&self) -> i64 {
        match self {
            AuthError::Invalid(_) | AuthError::UnknownApp(_) => connack_code::TOKEN_INVALID,
            AuthError::Expired => connack_code::TOKEN_EXPIRED,
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Signs `claims` with the secret of `claims.app_id`.
pub fn sign_claims(config: &ServerConfig, claims: &Claims) -> Result<String, TokenError> {
    let secret = config
        .app_secret(&claims.app_id)
        .ok_or_else(|| TokenError::UnknownApp(claims.app_id.clone()))?;
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Mints a token for `uid` in `app_id`, valid for `ttl` from now.
pub fn mint_token(
    config: &ServerConfig,
    app_id: &str,
    uid: &str,
    ttl: Duration,
) -> Result<String, TokenError> {
    if uid.is_empty() {
        return Err(TokenError::EmptyUid);
    }
    let iat = now_secs();
    sign_claims(
        config,
        &Claims {
            uid: uid.to_owned(),
            app_id: app_id.to_owned(),
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
        },
    )
}

/// Checks the token of a `connect` for `app_id` and returns its claims.
pub fn verify_token(config: &ServerConfig, app_id: &str, token: &str) -> Result<Claims, AuthError> {
    let secret =
        config.app_secret(app_id).ok_or_else(|| AuthError::UnknownApp(app_id.to_owned()))?;
    let mut validation = Validation::new(Algorithm::HS256);
    // The server that checks is the one whose config minted: no clock skew to allow for.
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp"]);
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
        _ => AuthError::Invalid(format!("malformed token: {e}")),
    })?;
    let claims = data.claims;
    if claims.app_id != app_id {
        return Err(AuthError::Invalid(format!(
            "token is for app `{}`, not `{app_id}`",
            claims.app_id
        )));
    }
    if claims.uid.is_empty() {
        return Err(AuthError::Invalid("token has an empty uid".into()));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppConfig, DEV_APP_ID};

    /// Changes the first character of the signature (the last one may only hold padding
    /// bits that a decoder ignores).
    fn tamper_signature(token: &str) -> String {
        let (head, sig) = token.rsplit_once('.').unwrap();
        let first = if sig.starts_with('A') { 'B' } else { 'A' };
        format!("{head}.{first}{}", &sig[1..])
    }

    fn two_apps() -> ServerConfig {
        let mut c = ServerConfig::development();
        c.apps.push(AppConfig { id: "other".into(), secret: "other-secret".into() });
        c
    }

    #[test]
    fn minted_token_verifies() {
        let c = two_apps();
        let t = mint_token(&c, DEV_APP_ID, "alice", Duration::from_secs(60)).unwrap();
        let claims = verify_token(&c, DEV_APP_ID, &t).unwrap();
        assert_eq!(claims.uid, "alice");
        assert_eq!(claims.app_id, DEV_APP_ID);
        assert_eq!(claims.exp, claims.iat + 60);
    }

    #[test]
    fn bad_tokens_get_code_1_and_expired_code_2() {
        let c = two_apps();
        let t = mint_token(&c, DEV_APP_ID, "alice", Duration::from_secs(60)).unwrap();
        let e = verify_token(&c, "other", &t).unwrap_err();
        assert_eq!(e.connack_code(), 1, "{e}");
        let e = verify_token(&c, "nope", &t).unwrap_err();
        assert_eq!(e, AuthError::UnknownApp("nope".into()));
        assert_eq!(e.connack_code(), 1, "{e}");
        let e = verify_token(&c, DEV_APP_ID, "not.a.token").unwrap_err();
        assert_eq!(e.connack_code(), 1, "{e}");
        let tampered = tamper_signature(&t);
        let e = verify_token(&c, DEV_APP_ID, &tampered).unwrap_err();
        assert_eq!(e, AuthError::Invalid("bad signature".into()));
        // Signed by `other` but claiming the dev app.
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims { uid: "x".into(), app_id: DEV_APP_ID.into(), iat: 0, exp: now_secs() + 60 },
            &EncodingKey::from_secret(b"other-secret"),
        )
        .unwrap();
        assert_eq!(verify_token(&c, DEV_APP_ID, &forged).unwrap_err().connack_code(), 1);
        let old = Claims { uid: "a".into(), app_id: DEV_APP_ID.into(), iat: 0, exp: 1000 };
        let expired = sign_claims(&c, &old).unwrap();
        assert_eq!(verify_token(&c, DEV_APP_ID, &expired).unwrap_err(), AuthError::Expired);
        assert!(matches!(
            mint_token(&c, "nope", "a", Duration::from_secs(1)),
            Err(TokenError::UnknownApp(_))
        ));
        assert!(matches!(
            mint_token(&c, DEV_APP_ID, "", Duration::from_secs(1)),
            Err(TokenError::EmptyUid)
        ));
    }
}
