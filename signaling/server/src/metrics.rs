//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The server's metrics. Cloning shares the same values.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections, authenticated or not.
    pub connections: Gauge,
    /// Authenticated connections.
    pub authenticated: Gauge,
    /// Conversations ringing or live.
    pub conversations: Gauge,
    /// Conversation frames relayed from one party to the other.
    pub frames_relayed: Counter,
    /// `connect` frames refused (bad, expired, wrong-app tokens).
    pub auth_failures: Counter,
    /// Frames refused with an error frame or dropped (malformed, too large, flood, …).
    pub frames_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wilddog");
        let m = Metrics {
            registry: Registry::default(),
            connections: Gauge::default(),
            authenticated: Gauge::default(),
            conversations: Gauge::default(),
            frames_relayed: Counter::default(),
            auth_failures: Counter::default(),
            frames_refused: Counter::default(),
        };
        registry.register("connections", "Open WebSocket connections", m.connections.clone());
        registry.register(
            "authenticated_connections",
            "Connections that passed connect",
            m.authenticated.clone(),
        );
        registry.register(
            "conversations",
            "Conversations ringing or live",
            m.conversations.clone(),
        );
        registry.register(
            "frames_relayed",
            "Conversation frames relayed between parties",
            m.frames_relayed.clone(),
        );
        registry.register("auth_failures", "connect frames refused", m.auth_failures.clone());
        registry.register(
            "frames_refused",
            "Frames refused with an error frame, dropped, or that closed their socket",
            m.frames_refused.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The metrics as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_metric() {
        let m = Metrics::default();
        m.frames_relayed.inc_by(3);
        m.connections.set(2);
        let text = m.encode();
        for line in [
            "wilddog_connections 2",
            "wilddog_authenticated_connections 0",
            "wilddog_conversations 0",
            "wilddog_frames_relayed_total 3",
            "wilddog_auth_failures_total 0",
            "wilddog_frames_refused_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
