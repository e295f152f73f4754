//! What every layer above stands on: [`config`] (the one typed configuration, with its flags and
//! subcommands), [`metrics`] (what operators scrape), [`telemetry`] (logs and OTLP traces),
//! [`device`] (CPU features and kernels, GPU detection), [`tls`] (registry, collector and broker
//! certificates), [`secret`] (credentials that never print), [`wire`] (untrusted binary formats
//! read byte by byte), [`excerpt`] (echoed input cut short in every error), [`probe`] (the
//! container health check).

pub mod config;
pub mod device;
pub mod events;
pub mod excerpt;
pub mod metrics;
pub mod probe;
pub mod secret;
pub mod telemetry;
pub mod tls;
pub mod wire;
