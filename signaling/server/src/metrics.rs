//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
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
    /// Cluster mode: conversation frames sent to another node's bus (forwarded to a home,
    /// or delivered to a party's node).
    pub cross_node_frames: Counter,
    /// Cluster mode: Redis round-trip time, seconds (the heartbeat's).
    pub redis_rtt: Histogram,
    /// Cluster mode: Redis commands that failed or timed out.
    pub redis_errors: Counter,
    /// Cluster mode: 1 while Redis answers, 0 while it does not (degraded: only calls
    /// between this node's connections are routed).
    pub redis_connected: Gauge,
    /// Cluster mode: this node's presence entries (its authenticated connections).
    pub presence_entries: Gauge,
    /// 1 while the node drains (SIGTERM): `/readyz` answers 503.
    pub draining: Gauge,
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
            cross_node_frames: Counter::default(),
            redis_rtt: Histogram::new([
                0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1.0,
            ]),
            redis_errors: Counter::default(),
            redis_connected: Gauge::default(),
            presence_entries: Gauge::default(),
            draining: Gauge::default(),
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
        registry.register(
            "cross_node_frames",
            "Conversation frames sent to another node",
            m.cross_node_frames.clone(),
        );
        registry.register("redis_rtt_seconds", "Redis round-trip time", m.redis_rtt.clone());
        registry.register("redis_errors", "Redis commands failed", m.redis_errors.clone());
        registry.register(
            "redis_connected",
            "1 while Redis answers (cluster mode), 0 when degraded",
            m.redis_connected.clone(),
        );
        registry.register(
            "presence_entries",
            "This node's presence entries in Redis",
            m.presence_entries.clone(),
        );
        registry.register("draining", "1 while the node drains", m.draining.clone());
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
            "wilddog_cross_node_frames_total 0",
            "wilddog_redis_errors_total 0",
            "wilddog_redis_connected 0",
            "wilddog_presence_entries 0",
            "wilddog_draining 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
