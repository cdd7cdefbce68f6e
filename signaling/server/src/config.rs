//! Server configuration: apps and their token secrets, ICE servers, TLS, limits.
//!
//! The file is TOML:
//!
//! ```toml
//! # Answer STUN binding requests on UDP at the server's own address and port, and hand out
//! # `stun:HOST:PORT` in every connack (default true).
//! builtin_stun = true
//!
//! [[apps]]
//! id = "my-app"
//! secret = "a long random string"      # HS256 key of this app's tokens
//!
//! [turn]                                # TURN with a shared secret (coturn use-auth-secret)
//! urls = ["turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349"]
//! secret = "coturn's static-auth-secret"
//! ttl_secs = 86400                      # lifetime of each minted credential
//!
//! [[ice_servers]]                       # fixed entries, e.g. a STUN server
//! urls = ["turn:turn.example.com:3478?transport=udp"]   # or one string
//! username = "user"
//! credential = "pass"
//!
//! [tls]                                 # optional: serve https:// and wss://
//! cert = "cert.pem"                     # relative to the config file
//! key = "key.pem"
//!
//! # Several nodes on one Redis (optional; without it the server is alone and needs none).
//! redis = "redis://127.0.0.1:6379/"
//!
//! [cluster]                             # only with `redis`; defaults shown
//! node_ttl_ms = 2000                    # a node silent this long is dead
//! drain_notice_ms = 1000                # SIGTERM: /readyz 503 this long before clients go
//! drain_deadline_secs = 30              # then exit when connections are gone, or at this
//!
//! [limits]
//! max_frame_bytes = 262144
//! rate_limit_per_sec = 100
//! rate_limit_burst = 200
//! idle_timeout_secs = 60
//! connect_timeout_secs = 10
//! reconnect_grace_secs = 10
//! takeover_probe_ms = 2000
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use wilddog_protocol::{IceServer, TurnCredential, Urls};

use crate::turn::{DEFAULT_TURN_TTL, RestTurn, TurnCredentials};

/// The app id of the development app that the server runs when it is given no config.
pub const DEV_APP_ID: &str = "wilddog-dev";

/// The token secret of the development app. It is public (it is written here and in the
/// README): anyone who can reach a server running the development app can mint tokens for
/// any uid. That is why `wilddog-runner serve` listens on loopback by default.
pub const DEV_APP_SECRET: &str = "wilddog-dev-secret-public-do-not-deploy";

/// Default of [`Limits::rate_limit_per_sec`]: frames per second a connection may sustain.
pub const DEFAULT_RATE_LIMIT_PER_SEC: u32 = 100;
/// Default of [`Limits::rate_limit_burst`]: frames a connection may send at once (a client
/// trickles a burst of ICE candidates right after its offer).
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 200;
/// Default of [`Limits::idle_timeout`]: a connection silent this long is closed. Clients send
/// a heartbeat every 30 s; the server pings a silent connection at half this time.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`Limits::connect_timeout`]: time a new socket has to authenticate.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`Limits::max_failed_auth`].
pub const DEFAULT_MAX_FAILED_AUTH: u32 = 3;
/// Default of [`Limits::outbound_queue_frames`].
pub const DEFAULT_OUTBOUND_QUEUE_FRAMES: usize = 256;
/// Default of [`Limits::reconnect_grace`]: clients reconnect within a few seconds (our SDKs'
/// first backoff step is 1 s at most).
pub const DEFAULT_RECONNECT_GRACE: Duration = Duration::from_secs(10);
/// Default of [`Limits::takeover_probe`]: a live client answers a ping in well under this,
/// even on a slow mobile link; a half-open socket never does.
pub const DEFAULT_TAKEOVER_PROBE: Duration = Duration::from_millis(2000);
/// Default of [`ClusterConfig::node_ttl`].
pub const DEFAULT_NODE_TTL: Duration = Duration::from_millis(2000);
/// Default of [`ClusterConfig::drain_notice`].
pub const DEFAULT_DRAIN_NOTICE: Duration = Duration::from_millis(1000);
/// Default of [`ClusterConfig::drain_deadline`].
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Several server nodes on one Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT/` (or `rediss://`, `redis+unix://`).
    pub redis_url: String,
    /// A node whose alive key was not refreshed for this long is dead: its calls are
    /// adopted by the nodes of their other parties. Refreshed every quarter of it.
    pub node_ttl: Duration,
    /// On SIGTERM, how long `/readyz` answers 503 before the node closes its clients'
    /// sockets (so that the load balancer sends them elsewhere).
    pub drain_notice: Duration,
    /// On SIGTERM, the node exits when its connections are gone, or after this.
    pub drain_deadline: Duration,
}

impl ClusterConfig {
    /// Defaults for a Redis at `redis_url`.
    pub fn new(redis_url: impl Into<String>) -> Self {
        ClusterConfig {
            redis_url: redis_url.into(),
            node_ttl: DEFAULT_NODE_TTL,
            drain_notice: DEFAULT_DRAIN_NOTICE,
            drain_deadline: DEFAULT_DRAIN_DEADLINE,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    node_ttl_ms: Option<u64>,
    drain_notice_ms: Option<u64>,
    drain_deadline_secs: Option<f64>,
}

/// Largest [`Limits::takeover_probe`] accepted: longer, and a rescued call waits too long.
pub const MAX_TAKEOVER_PROBE: Duration = Duration::from_secs(60);
/// Largest [`Limits::reconnect_grace`] accepted.
pub const MAX_RECONNECT_GRACE: Duration = Duration::from_secs(3600);
/// Largest [`Limits::max_frame_bytes`] accepted (16 MiB: its hard limit, 4 times it, is
/// 64 MiB). A frame header announcing up to the hard limit makes the server reserve that
/// much for the frame; without a ceiling a configured limit of 2^61 or more let a header
/// announcing 2^63 bytes through the check and the connection's task died on the
/// allocation ("capacity overflow"), and large ones let each client reserve gigabytes.
pub const MAX_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or keys of the wrong type.
    #[error("config is not valid: {0}")]
    Parse(#[from] toml::de::Error),
    /// Valid TOML, but not a usable configuration.
    #[error("config is not usable: {0}")]
    Invalid(String),
}

/// One app: its id and the secret its tokens are signed with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The app id clients send in `connect.appId`.
    pub id: String,
    /// The HS256 key of its tokens.
    pub secret: String,
}

/// An ICE server handed out in `connack` (in addition to the built-in STUN server).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServerConfig {
    /// One URL or several (`stun:`, `turn:`, `turns:`).
    pub urls: UrlList,
    /// TURN user name.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default)]
    pub credential: Option<String>,
}

/// `urls` of an [`IceServerConfig`]: one string or a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum UrlList {
    /// One URL.
    One(String),
    /// Several URLs.
    Many(Vec<String>),
}

impl UrlList {
    fn to_vec(&self) -> Vec<String> {
        match self {
            UrlList::One(u) => vec![u.clone()],
            UrlList::Many(v) => v.clone(),
        }
    }
}

impl IceServerConfig {
    /// The entry as sent in `connack`: `url` (what the original client reads) and `urls`.
    pub fn to_ice_server(&self) -> IceServer {
        let urls = self.urls.to_vec();
        let kind = urls
            .first()
            .map(|u| if u.starts_with("turn") { "turn".to_owned() } else { "stun".to_owned() });
        IceServer {
            url: urls.first().cloned(),
            urls: Some(if urls.len() == 1 { Urls::One(urls[0].clone()) } else { Urls::Many(urls) }),
            username: self.username.clone(),
            credential: self.credential.clone(),
            kind,
            extra: Default::default(),
        }
    }
}

/// TURN servers that share a secret with this server (`[turn]`): coturn's
/// `use-auth-secret` / `static-auth-secret`. Every connection gets its own time-limited
/// credential (see [`crate::turn`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnConfig {
    /// `turn:HOST:PORT[?transport=udp|tcp]` and `turns:HOST:PORT` URLs.
    pub urls: UrlList,
    /// The secret the TURN server checks credentials with.
    pub secret: String,
    /// Lifetime of each credential, seconds (default a day).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

impl TurnConfig {
    /// The lifetime of each credential.
    pub fn ttl(&self) -> Duration {
        self.ttl_secs.map(Duration::from_secs).unwrap_or(DEFAULT_TURN_TTL)
    }

    /// The minting side, on the system clock.
    pub fn minter(&self) -> RestTurn {
        RestTurn {
            urls: self.urls.to_vec(),
            secret: self.secret.clone(),
            ttl: self.ttl(),
            clock: Arc::new(SystemTime::now),
        }
    }
}

/// Certificate and key of the TLS listener (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// Limits that protect the server from clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest text frame accepted, in bytes (1024 to [`MAX_MAX_FRAME_BYTES`]; `connack`
    /// tells clients, `maxFrameBytes`). A larger one (up to 4 times this) is refused with an
    /// error frame `too_large`; anything larger still closes the socket (1009).
    pub max_frame_bytes: usize,
    /// Frames per second one connection may sustain.
    pub rate_limit_per_sec: u32,
    /// Frames one connection may send in a burst.
    pub rate_limit_burst: u32,
    /// A connection that sends nothing (not even a pong) this long is closed.
    pub idle_timeout: Duration,
    /// A socket that has not authenticated this long after opening is closed.
    pub connect_timeout: Duration,
    /// Failed `connect` attempts after which the socket is closed.
    pub max_failed_auth: u32,
    /// Frames queued for one slow client before it is disconnected.
    pub outbound_queue_frames: usize,
    /// How long the live conversations of a lost connection (no close frame: EOF, reset,
    /// ping timeout) wait for its uid to reconnect before the peer gets `bye`. Zero: the
    /// peer gets `bye` at once.
    pub reconnect_grace: Duration,
    /// When a new connection of a uid speaks on a live conversation whose party is an older,
    /// still registered connection of that uid, the older one is pinged; silent this long,
    /// it is treated as lost and the new one takes the conversation over.
    pub takeover_probe: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: wilddog_protocol::DEFAULT_MAX_FRAME_BYTES,
            rate_limit_per_sec: DEFAULT_RATE_LIMIT_PER_SEC,
            rate_limit_burst: DEFAULT_RATE_LIMIT_BURST,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_failed_auth: DEFAULT_MAX_FAILED_AUTH,
            outbound_queue_frames: DEFAULT_OUTBOUND_QUEUE_FRAMES,
            reconnect_grace: DEFAULT_RECONNECT_GRACE,
            takeover_probe: DEFAULT_TAKEOVER_PROBE,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_frame_bytes: Option<usize>,
    rate_limit_per_sec: Option<u32>,
    rate_limit_burst: Option<u32>,
    idle_timeout_secs: Option<f64>,
    connect_timeout_secs: Option<f64>,
    max_failed_auth: Option<u32>,
    outbound_queue_frames: Option<usize>,
    reconnect_grace_secs: Option<f64>,
    takeover_probe_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    apps: Vec<AppConfig>,
    #[serde(default)]
    ice_servers: Vec<IceServerConfig>,
    #[serde(default)]
    turn: Option<TurnConfig>,
    #[serde(default = "default_true")]
    builtin_stun: bool,
    #[serde(default)]
    tls: Option<TlsConfig>,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    redis: Option<String>,
    #[serde(default)]
    cluster: Option<ClusterFile>,
}

fn default_true() -> bool {
    true
}

/// Everything the server needs but its listening address.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Apps whose clients may connect.
    pub apps: Vec<AppConfig>,
    /// ICE servers handed out in `connack`, after the built-in STUN server if it is on.
    pub ice_servers: Vec<IceServerConfig>,
    /// TURN servers with a shared secret: handed out in `connack` after the built-in STUN
    /// server, each connection with its own credential.
    pub turn: Option<TurnConfig>,
    /// Answer STUN binding requests on UDP at the server's address and port, and hand out
    /// `stun:HOST:PORT`.
    pub builtin_stun: bool,
    /// Serve `https://` and `wss://` with this certificate.
    pub tls: Option<TlsConfig>,
    /// Limits.
    pub limits: Limits,
    /// Several nodes on one Redis; `None`: this server is alone (no Redis needed).
    pub cluster: Option<ClusterConfig>,
    /// Set only by [`ServerConfig::development`]: enables `GET /dev/token` for loopback peers.
    development: bool,
}

impl ServerConfig {
    /// The configuration used when none is given: one app, [`DEV_APP_ID`], whose secret is
    /// the public [`DEV_APP_SECRET`]; the built-in STUN server; no TLS; default limits.
    pub fn development() -> Self {
        ServerConfig {
            apps: vec![AppConfig { id: DEV_APP_ID.to_owned(), secret: DEV_APP_SECRET.to_owned() }],
            ice_servers: Vec::new(),
            turn: None,
            builtin_stun: true,
            tls: None,
            limits: Limits::default(),
            cluster: None,
            development: true,
        }
    }

    /// Whether this is the development configuration (made by [`ServerConfig::development`]).
    pub fn is_development(&self) -> bool {
        self.development
    }

    /// Reads a TOML configuration. Relative TLS paths are kept as they are.
    pub fn from_toml_str(s: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(s)?;
        let defaults = Limits::default();
        let secs = |v: Option<f64>, default: Duration, key: &str| match v {
            None => Ok(default),
            Some(s) if s > 0.0 => Duration::try_from_secs_f64(s).map_err(|e| {
                ConfigError::Invalid(format!("limits.{key} = {s} is not a duration: {e}"))
            }),
            Some(s) => Err(ConfigError::Invalid(format!("limits.{key} must be > 0, got {s}"))),
        };
        let limits = Limits {
            max_frame_bytes: file.limits.max_frame_bytes.unwrap_or(defaults.max_frame_bytes),
            rate_limit_per_sec: file
                .limits
                .rate_limit_per_sec
                .unwrap_or(defaults.rate_limit_per_sec),
            rate_limit_burst: file.limits.rate_limit_burst.unwrap_or(defaults.rate_limit_burst),
            idle_timeout: secs(
                file.limits.idle_timeout_secs,
                defaults.idle_timeout,
                "idle_timeout_secs",
            )?,
            connect_timeout: secs(
                file.limits.connect_timeout_secs,
                defaults.connect_timeout,
                "connect_timeout_secs",
            )?,
            max_failed_auth: file.limits.max_failed_auth.unwrap_or(defaults.max_failed_auth),
            outbound_queue_frames: file
                .limits
                .outbound_queue_frames
                .unwrap_or(defaults.outbound_queue_frames),
            reconnect_grace: match file.limits.reconnect_grace_secs {
                None => defaults.reconnect_grace,
                Some(s) => Duration::try_from_secs_f64(s).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "limits.reconnect_grace_secs must be >= 0, got {s}"
                    ))
                })?,
            },
            takeover_probe: file
                .limits
                .takeover_probe_ms
                .map_or(defaults.takeover_probe, Duration::from_millis),
        };
        let cluster = match (file.redis, file.cluster) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "[cluster] without redis = \"redis://HOST:PORT/\"".into(),
                ));
            }
            (Some(url), c) => {
                let c = c.unwrap_or_default();
                let mut cluster = ClusterConfig::new(url);
                if let Some(ms) = c.node_ttl_ms {
                    cluster.node_ttl = Duration::from_millis(ms);
                }
                if let Some(ms) = c.drain_notice_ms {
                    cluster.drain_notice = Duration::from_millis(ms);
                }
                if let Some(s) = c.drain_deadline_secs {
                    cluster.drain_deadline = Duration::try_from_secs_f64(s).map_err(|e| {
                        ConfigError::Invalid(format!("cluster.drain_deadline_secs = {s}: {e}"))
                    })?;
                }
                Some(cluster)
            }
        };
        let config = ServerConfig {
            apps: file.apps,
            ice_servers: file.ice_servers,
            turn: file.turn,
            builtin_stun: file.builtin_stun,
            tls: file.tls,
            limits,
            cluster,
            development: false,
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML configuration file; relative TLS paths are taken from the file's folder.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        let mut config = Self::from_toml_str(&text)?;
        if let (Some(tls), Some(dir)) = (config.tls.as_mut(), path.parent()) {
            tls.cert = dir.join(&tls.cert);
            tls.key = dir.join(&tls.key);
        }
        Ok(config)
    }

    /// Checks what the types cannot: at least one app, unique ids, non-empty secrets, some
    /// ICE server, sane limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.apps.is_empty() {
            return invalid("no [[apps]]: at least one app (id, secret) is needed".into());
        }
        for (i, app) in self.apps.iter().enumerate() {
            if app.id.is_empty() {
                return invalid(format!("apps[{i}].id is empty"));
            }
            if app.secret.is_empty() {
                return invalid(format!("app `{}` has an empty secret", app.id));
            }
            if self.apps[..i].iter().any(|a| a.id == app.id) {
                return invalid(format!("app `{}` is listed twice", app.id));
            }
        }
        for (i, ice) in self.ice_servers.iter().enumerate() {
            if ice.urls.to_vec().is_empty() {
                return invalid(format!("ice_servers[{i}].urls is empty"));
            }
        }
        if let Some(turn) = &self.turn {
            let urls = turn.urls.to_vec();
            if urls.is_empty() {
                return invalid("turn.urls is empty".into());
            }
            if let Some(bad) = urls.iter().find(|u| !is_turn_url(u)) {
                return invalid(format!(
                    "turn.urls: `{bad}` is not a turn:HOST:PORT or turns:HOST:PORT URL"
                ));
            }
            if turn.secret.is_empty() {
                return invalid("turn.secret is empty".into());
            }
            if turn.ttl_secs == Some(0) {
                return invalid("turn.ttl_secs must be > 0".into());
            }
        }
        if !self.builtin_stun && self.ice_servers.is_empty() && self.turn.is_none() {
            return invalid(
                "builtin_stun = false and no [[ice_servers]] or [turn]: connack.iceServers \
                 would be empty, and the original client refuses to call without one"
                    .into(),
            );
        }
        let l = &self.limits;
        if l.max_frame_bytes < 1024 {
            return invalid(format!(
                "limits.max_frame_bytes = {} is below 1024",
                l.max_frame_bytes
            ));
        }
        if l.max_frame_bytes > MAX_MAX_FRAME_BYTES {
            return invalid(format!(
                "limits.max_frame_bytes = {} is over {MAX_MAX_FRAME_BYTES} (16 MiB)",
                l.max_frame_bytes
            ));
        }
        if l.rate_limit_per_sec == 0 || l.rate_limit_burst == 0 {
            return invalid("limits.rate_limit_per_sec and rate_limit_burst must be > 0".into());
        }
        if l.outbound_queue_frames == 0 {
            return invalid("limits.outbound_queue_frames must be > 0".into());
        }
        if let Some(c) = &self.cluster {
            if !c.redis_url.starts_with("redis") {
                return invalid(format!("redis = {:?} is not a redis:// URL", c.redis_url));
            }
            if c.node_ttl < Duration::from_millis(200) {
                return invalid("cluster.node_ttl_ms must be at least 200".into());
            }
        }
        if l.takeover_probe.is_zero() || l.takeover_probe > MAX_TAKEOVER_PROBE {
            return invalid(format!(
                "limits.takeover_probe_ms = {} must be between 1 and {}",
                l.takeover_probe.as_millis(),
                MAX_TAKEOVER_PROBE.as_millis()
            ));
        }
        if l.reconnect_grace > MAX_RECONNECT_GRACE {
            return invalid(format!(
                "limits.reconnect_grace_secs = {} is over {}: dead calls would linger",
                l.reconnect_grace.as_secs_f64(),
                MAX_RECONNECT_GRACE.as_secs()
            ));
        }
        Ok(())
    }

    /// The secret of `app_id`, if the app is configured.
    pub fn app_secret(&self, app_id: &str) -> Option<&str> {
        self.apps.iter().find(|a| a.id == app_id).map(|a| a.secret.as_str())
    }

    /// The ICE servers for the `connack` of `uid`: the built-in STUN server (at
    /// `stun_host_port`, as `HOST:PORT`) first when it is on, then `[turn]` with a credential
    /// minted for `uid` now, then the fixed `[[ice_servers]]`.
    pub fn connack_ice_servers(&self, stun_host_port: &str, uid: &str) -> Vec<IceServer> {
        let mut out = Vec::with_capacity(self.ice_servers.len() + 2);
        if self.builtin_stun {
            let url = format!("stun:{stun_host_port}");
            out.push(IceServer {
                url: Some(url.clone()),
                urls: Some(Urls::One(url)),
                kind: Some("stun".to_owned()),
                ..Default::default()
            });
        }
        if let Some(turn) = &self.turn {
            out.push(turn.minter().ice_server(uid));
        }
        out.extend(self.ice_servers.iter().map(IceServerConfig::to_ice_server));
        out
    }

    /// Where the `turnCredential` of a forwarded `call` comes from: minted for the callee
    /// with `[turn]`'s secret, else [`ServerConfig::turn_credential`].
    pub fn turn_credentials(&self) -> TurnCredentials {
        match &self.turn {
            Some(turn) => TurnCredentials::Rest(turn.minter()),
            None => TurnCredentials::Fixed(self.turn_credential()),
        }
    }

    /// The fixed `turnCredential`: that of the first configured ICE server with a user name
    /// and credential, else empty strings (the original callee only needs the field to be
    /// present).
    pub fn turn_credential(&self) -> TurnCredential {
        self.ice_servers
            .iter()
            .find_map(|s| match (&s.username, &s.credential) {
                (Some(u), Some(c)) => {
                    Some(TurnCredential { username: u.clone(), credential: c.clone() })
                }
                _ => None,
            })
            .unwrap_or_default()
    }
}

/// `turn:` or `turns:` with a host.
fn is_turn_url(url: &str) -> bool {
    let rest = url.strip_prefix("turn:").or_else(|| url.strip_prefix("turns:"));
    rest.is_some_and(|r| !r.trim_start_matches("//").is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_parses() {
        let c = ServerConfig::from_toml_str(
            r#"
            builtin_stun = false
            [[apps]]
            id = "a"
            secret = "s"
            [[ice_servers]]
            urls = ["turn:t.example:3478", "turns:t.example:5349"]
            username = "u"
            credential = "c"
            [tls]
            cert = "c.pem"
            key = "k.pem"
            [limits]
            max_frame_bytes = 4096
            rate_limit_per_sec = 5
            rate_limit_burst = 7
            idle_timeout_secs = 0.5
            reconnect_grace_secs = 0
            takeover_probe_ms = 300
            "#,
        )
        .unwrap();
        assert_eq!(c.app_secret("a"), Some("s"));
        assert!(!c.is_development());
        assert_eq!(c.limits.max_frame_bytes, 4096);
        assert_eq!(c.limits.idle_timeout, Duration::from_millis(500));
        assert_eq!(c.limits.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.limits.reconnect_grace, Duration::ZERO);
        assert_eq!(c.limits.takeover_probe, Duration::from_millis(300));
        let defaults = ServerConfig::from_toml_str("[[apps]]\nid='a'\nsecret='x'").unwrap();
        assert_eq!(defaults.limits.reconnect_grace, DEFAULT_RECONNECT_GRACE);
        assert_eq!(defaults.limits.takeover_probe, DEFAULT_TAKEOVER_PROBE);
        let grace = ServerConfig::from_toml_str(
            "[[apps]]\nid='a'\nsecret='x'\n[limits]\nreconnect_grace_secs=2.5",
        )
        .unwrap();
        assert_eq!(grace.limits.reconnect_grace, Duration::from_millis(2500));
        let ice = c.connack_ice_servers("h:1", "alice");
        assert_eq!(ice.len(), 1);
        assert_eq!(ice[0].url.as_deref(), Some("turn:t.example:3478"));
        assert_eq!(ice[0].kind.as_deref(), Some("turn"));
        assert_eq!(c.turn_credential().username, "u");
    }

    #[test]
    fn redis_and_cluster_keys() {
        let c = ServerConfig::from_toml_str(
            "redis = 'redis://127.0.0.1:7000/'\n[[apps]]\nid='a'\nsecret='x'\n[cluster]\nnode_ttl_ms = 900\ndrain_deadline_secs = 2.5",
        )
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.redis_url, "redis://127.0.0.1:7000/");
        assert_eq!(cluster.node_ttl, Duration::from_millis(900));
        assert_eq!(cluster.drain_notice, DEFAULT_DRAIN_NOTICE);
        assert_eq!(cluster.drain_deadline, Duration::from_millis(2500));
        let alone = ServerConfig::from_toml_str("[[apps]]\nid='a'\nsecret='x'").unwrap();
        assert_eq!(alone.cluster, None);
        for (toml, needle) in [
            ("[[apps]]\nid='a'\nsecret='x'\n[cluster]\nnode_ttl_ms=900", "without redis"),
            ("redis='http://x'\n[[apps]]\nid='a'\nsecret='x'", "not a redis"),
            ("redis='redis://x'\n[[apps]]\nid='a'\nsecret='x'\n[cluster]\nnode_ttl_ms=10", "200"),
        ] {
            let err = ServerConfig::from_toml_str(toml).unwrap_err().to_string();
            assert!(err.contains(needle), "{toml:?}: {err}");
        }
    }

    #[test]
    fn development_has_builtin_stun_and_dev_app() {
        let c = ServerConfig::development();
        assert!(c.is_development());
        assert_eq!(c.app_secret(DEV_APP_ID), Some(DEV_APP_SECRET));
        let ice = c.connack_ice_servers("127.0.0.1:8930", "alice");
        assert_eq!(ice[0].url.as_deref(), Some("stun:127.0.0.1:8930"));
        assert_eq!(ice[0].urls, Some(Urls::One("stun:127.0.0.1:8930".into())));
    }

    #[test]
    fn bad_configs_are_refused_with_reason() {
        for (toml, needle) in [
            ("", "no [[apps]]"),
            ("[[apps]]\nid='a'\nsecret=''", "empty secret"),
            ("[[apps]]\nid='a'\nsecret='x'\n[[apps]]\nid='a'\nsecret='y'", "twice"),
            ("builtin_stun=false\n[[apps]]\nid='a'\nsecret='x'", "would be empty"),
            ("[[apps]]\nid='a'\nsecret='x'\n[limits]\nidle_timeout_secs=0", "idle_timeout"),
            ("[[apps]]\nid='a'\nsecret='x'\n[limits]\nreconnect_grace_secs=-1", "reconnect_grace"),
            ("[[apps]]\nid='a'\nsecret='x'\n[limits]\nreconnect_grace_secs=7200", "linger"),
            ("[[apps]]\nid='a'\nsecret='x'\n[limits]\nidle_timeout_secs=1e300", "idle_timeout"),
            ("[[apps]]\nid='a'\nsecret='x'\nbogus=1", "bogus"),
            ("[[apps]]\nid='a'\nsecret='x'\n[limits]\nmax_frame_bytes=1000", "below 1024"),
            ("[[apps]]\nid='a'\nsecret='x'\n[limits]\nmax_frame_bytes=16777217", "16 MiB"),
            (
                "[[apps]]\nid='a'\nsecret='x'\n[limits]\nmax_frame_bytes=4611686018427387904",
                "16 MiB",
            ),
            ("[[apps]]\nid='a'\nsecret='x'\n[limits]\ntakeover_probe_ms=0", "takeover_probe"),
            ("[[apps]]\nid='a'\nsecret='x'\n[limits]\ntakeover_probe_ms=-5", "takeover_probe"),
            ("[[apps]]\nid='a'\nsecret='x'\n[turn]\nurls=[]\nsecret='s'", "turn.urls is empty"),
            ("[[apps]]\nid='a'\nsecret='x'\n[turn]\nurls='stun:h'\nsecret='s'", "not a turn"),
            ("[[apps]]\nid='a'\nsecret='x'\n[turn]\nurls='turn:h'\nsecret=''", "secret is empty"),
            ("[[apps]]\nid='a'\nsecret='x'\n[turn]\nurls='turn:h'\nsecret='s'\nttl_secs=0", "ttl"),
        ] {
            let err = ServerConfig::from_toml_str(toml).unwrap_err().to_string();
            assert!(err.contains(needle), "{toml:?}: {err}");
        }
    }
}

#[cfg(test)]
mod turn_tests {
    use super::*;

    #[test]
    fn turn_section_mints_per_uid_credentials() {
        let c = ServerConfig::from_toml_str(
            r#"
            builtin_stun = false
            [[apps]]
            id = "a"
            secret = "x"
            [turn]
            urls = ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"]
            secret = "coturn-secret"
            ttl_secs = 60
            "#,
        )
        .unwrap();
        let before = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let ice = c.connack_ice_servers("h:1", "alice");
        assert_eq!(ice.len(), 1);
        let user = ice[0].username.clone().unwrap();
        let (expiry, uid) = user.split_once(':').unwrap();
        assert_eq!(uid, "alice");
        let expiry: u64 = expiry.parse().unwrap();
        assert!((before + 60..=before + 62).contains(&expiry), "{expiry} vs {before}");
        assert_eq!(
            ice[0].credential.as_deref(),
            Some(
                crate::turn::rest_credential("coturn-secret", "alice", expiry).credential.as_str()
            )
        );
        assert_eq!(ice[0].all_urls().len(), 2);
        assert!(matches!(c.turn_credentials(), TurnCredentials::Rest(_)));
        let default_ttl = ServerConfig::from_toml_str(
            "[[apps]]\nid='a'\nsecret='x'\n[turn]\nurls='turns:t.example:5349'\nsecret='s'",
        )
        .unwrap();
        assert_eq!(default_ttl.turn.unwrap().ttl(), DEFAULT_TURN_TTL);
    }
}
