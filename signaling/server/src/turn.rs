//! TURN credentials the way operators run TURN: coturn's `use-auth-secret` (the "TURN REST
//! API" of draft-uberti-behave-turn-rest). The TURN server and this server share a secret;
//! for each connection this server mints a time-limited credential:
//!
//! - user name `EXPIRY:UID`, `EXPIRY` the Unix time (seconds) at which it stops working;
//! - password `base64(HMAC-SHA1(secret, user name))`.
//!
//! coturn recomputes the password from the user name and refuses it once `EXPIRY` passed, so
//! nothing is stored and nothing needs revoking. A connection gets its credential in
//! `connack.iceServers`; a forwarded `call` gets the callee's in `turnCredential` (and in the
//! TURN entries of the caller's `iceServers` that it carries), minted when it is forwarded.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use wilddog_protocol::{AcceptMsg, CallMsg, IceServer, TurnCredential, Urls};

/// Default lifetime of a minted credential: a day, as coturn's documentation suggests. A
/// connection older than this gets fresh ones by reconnecting, and a callee with every call.
pub const DEFAULT_TURN_TTL: Duration = Duration::from_secs(24 * 3600);

/// The credential for `uid` that a TURN server sharing `secret` accepts until `expiry`
/// (Unix seconds).
pub fn rest_credential(secret: &str, uid: &str, expiry: u64) -> TurnCredential {
    let username = format!("{expiry}:{uid}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    TurnCredential { username, credential }
}

/// The clock credentials are minted against (a test may fix it).
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// TURN servers that share a secret with this server (the config's `[turn]`).
#[derive(Clone)]
pub struct RestTurn {
    /// `turn:` / `turns:` URLs, with `?transport=` when the operator says which.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`.
    pub secret: String,
    /// Lifetime of each credential.
    pub ttl: Duration,
    /// Now.
    pub clock: WallClock,
}

impl std::fmt::Debug for RestTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestTurn")
            .field("urls", &self.urls)
            .field("secret", &"<hidden>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl RestTurn {
    /// The credential for `uid`, valid for the TTL from now.
    pub fn credential(&self, uid: &str) -> TurnCredential {
        let now = (self.clock)().duration_since(UNIX_EPOCH).unwrap_or_default();
        rest_credential(&self.secret, uid, (now + self.ttl).as_secs())
    }

    /// The `connack` entry for `uid`: every URL in one entry with its fresh credential.
    pub fn ice_server(&self, uid: &str) -> IceServer {
        let cred = self.credential(uid);
        IceServer {
            url: self.urls.first().cloned(),
            urls: Some(Urls::Many(self.urls.clone())),
            username: Some(cred.username),
            credential: Some(cred.credential),
            kind: Some("turn".to_owned()),
            extra: Default::default(),
        }
    }

    /// Whether `server` is one of ours (shares a URL with `[turn]`).
    fn is_ours(&self, server: &IceServer) -> bool {
        server.all_urls().iter().any(|u| self.urls.contains(u))
    }
}

/// Where the `turnCredential` of forwarded calls comes from.
#[derive(Debug, Clone)]
pub enum TurnCredentials {
    /// One credential for everybody (a static `[[ice_servers]]` entry's, or empty strings:
    /// the original callee only needs the field to be present).
    Fixed(TurnCredential),
    /// Minted per callee from a shared secret.
    Rest(RestTurn),
}

impl From<TurnCredential> for TurnCredentials {
    fn from(c: TurnCredential) -> Self {
        TurnCredentials::Fixed(c)
    }
}

impl TurnCredentials {
    /// Fills a `call` forwarded to `callee`: `turnCredential`, and for minted credentials
    /// also the TURN entries of ours among the caller's `iceServers` (they carry the caller's
    /// credential, minted at its `connack`, maybe long ago).
    pub fn fill_call(&self, msg: &mut CallMsg, callee: &str) {
        match self {
            TurnCredentials::Fixed(c) => msg.turn_credential = Some(c.clone()),
            TurnCredentials::Rest(rest) => {
                let cred = rest.credential(callee);
                for server in msg.ice_servers.iter_mut().flatten() {
                    if rest.is_ours(server) {
                        server.username = Some(cred.username.clone());
                        server.credential = Some(cred.credential.clone());
                    }
                }
                msg.turn_credential = Some(cred);
            }
        }
    }

    /// Fills an `accept` forwarded to `caller`: with minted credentials, one minted for the
    /// caller now (`turnCredential`, our extension). The caller's own came with its
    /// `connack`, which a client connected for longer than the TTL got too long ago: its
    /// TURN allocation would be refused. Fixed credentials do not age: nothing is added.
    pub fn fill_accept(&self, msg: &mut AcceptMsg, caller: &str) {
        if let TurnCredentials::Rest(rest) = self {
            msg.turn_credential = Some(rest.credential(caller));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_is_coturns() {
        // As `printf 1595345487:alice | openssl dgst -sha1 -hmac north -binary | base64`.
        let c = rest_credential("north", "alice", 1_595_345_487);
        assert_eq!(c.username, "1595345487:alice");
        assert_eq!(c.credential, "xctZxwt84bFCc0roo8cL5I/F15o=");
    }

    fn rest(at: u64) -> RestTurn {
        RestTurn {
            urls: vec!["turn:t.example:3478".into(), "turns:t.example:5349".into()],
            secret: "s".into(),
            ttl: Duration::from_secs(600),
            clock: Arc::new(move || UNIX_EPOCH + Duration::from_secs(at)),
        }
    }

    #[test]
    fn minted_for_the_ttl_from_now() {
        let r = rest(1000);
        let s = r.ice_server("bob");
        assert_eq!(s.username.as_deref(), Some("1600:bob"));
        assert_eq!(s.credential, Some(rest_credential("s", "bob", 1600).credential));
        assert_eq!(s.url.as_deref(), Some("turn:t.example:3478"));
        assert_eq!(s.kind.as_deref(), Some("turn"));
    }

    #[test]
    fn forwarded_accept_gets_the_callers_fresh_credential() {
        let mut msg = AcceptMsg::default();
        TurnCredentials::Rest(rest(5000)).fill_accept(&mut msg, "alice");
        assert_eq!(msg.turn_credential, Some(rest_credential("s", "alice", 5600)));
        let mut fixed = AcceptMsg::default();
        let cred = TurnCredential { username: "u".into(), credential: "p".into() };
        TurnCredentials::Fixed(cred).fill_accept(&mut fixed, "alice");
        assert_eq!(fixed.turn_credential, None);
    }

    #[test]
    fn forwarded_call_gets_the_callees_fresh_credential() {
        let caller = rest(1000).ice_server("alice");
        let other = IceServer {
            urls: Some(Urls::One("turn:other.example".into())),
            username: Some("u".into()),
            credential: Some("p".into()),
            ..Default::default()
        };
        let mut msg = CallMsg { ice_servers: Some(vec![caller, other]), ..Default::default() };
        TurnCredentials::Rest(rest(5000)).fill_call(&mut msg, "bob");
        let fresh = rest_credential("s", "bob", 5600);
        assert_eq!(msg.turn_credential.as_ref(), Some(&fresh));
        let servers = msg.ice_servers.unwrap_or_default();
        assert_eq!(servers[0].username.as_deref(), Some("5600:bob"));
        assert_eq!(servers[0].credential.as_deref(), Some(fresh.credential.as_str()));
        assert_eq!(servers[1].username.as_deref(), Some("u"), "not ours: untouched");
    }
}
