//! `server`: the listeners, their timeouts and the admin token.

use crate::infra::secret::Secret;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Seconds a /predict request may take end to end before it gets 504.
    pub timeout: f64,
    /// Seconds that queued and in-flight requests get to finish after SIGTERM.
    pub drain_timeout: f64,
    /// Serve the demo page at `/`.
    pub demo_page: bool,
    /// Bearer token for `POST /admin/reload`; null leaves the endpoint off (404).
    pub admin_token: Option<Secret>,
    /// Serve `/admin/reload` and `/shadow` on this port instead of the main one, so an ingress
    /// can expose the API without them; null keeps them on the main port.
    pub admin_port: Option<u16>,
    /// The address the admin listener binds to; null: 127.0.0.1 (reach it with `kubectl
    /// port-forward` or from the pod itself), whatever `host` is.
    pub admin_host: Option<String>,
    /// Serve the KServe v2 gRPC protocol (`inference.GRPCInferenceService`) on this port (same
    /// host); null leaves it off.
    pub grpc_port: Option<u16>,
    /// HTTP/2 limits of the gRPC listener.
    pub grpc: GrpcLimits,
}

/// What one gRPC client may hold of the server. tonic leaves HTTP/2's stream limits off unless
/// they are set, so without these one connection could open any number of streams.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcLimits {
    /// Streams (calls) one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Calls one connection may have running at once; more wait for a slot.
    pub concurrency_per_connection: usize,
    /// Streams a client may reset before the server has accepted them, per connection (the
    /// HTTP/2 "rapid reset" flood guard).
    pub max_pending_reset_streams: usize,
    /// Streams the server may reset for a client's protocol errors before it closes the
    /// connection.
    pub max_local_error_reset_streams: usize,
    /// Seconds between HTTP/2 pings on an idle connection; a peer that does not answer within
    /// `keepalive_timeout` is disconnected.
    pub keepalive_interval: f64,
    pub keepalive_timeout: f64,
    /// Seconds after which a connection is closed gracefully, so clients reconnect and spread
    /// over new replicas; 0 keeps connections open.
    pub max_connection_age: f64,
}

/// The shortest admin token accepted: 128 bits as hex is 32, so 16 characters of anything is
/// already far from a guessable word.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

impl Default for GrpcLimits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 64,
            concurrency_per_connection: 64,
            max_pending_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            keepalive_interval: 30.0,
            keepalive_timeout: 10.0,
            max_connection_age: 1800.0,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8080,
            workers: 0,
            timeout: 10.0,
            drain_timeout: 20.0,
            demo_page: true,
            admin_token: None,
            admin_port: None,
            admin_host: None,
            grpc_port: None,
            grpc: GrpcLimits::default(),
        }
    }
}
