//! Startup and shutdown: the front doors opened on one [`Service`].
//!
//! Startup order: the service starts (the model is found, a directory or a registry version,
//! loaded and warmed up; the classifier starts its inference workers; the registry poll starts
//! and, with `shadow.uri`, the challenger loads in the background) -> the front doors open ->
//! ready. Any failure before listening is a [`StartupError`] and the process exits non-zero.
//!
//! Shutdown on SIGTERM or SIGINT: readiness goes false and new /predict calls get 503 at once;
//! every door stops accepting; what was accepted is answered (its texts are still queued and
//! served) within one `server.drain_timeout`; then the queue closes, the workers drain it and
//! the process exits 0. A second signal stops without waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;

use crate::frontends::grpc::{self, GrpcError};
use crate::frontends::http::server::HttpDoor;
use crate::frontends::http::ApiState;
use crate::frontends::stream::{self, StreamError};
use crate::frontends::{self, BindError, FrontDoor, Readiness};
use crate::infra::config::{Config, ConfigError};
use crate::infra::device::CpuKernels;
use crate::lifecycle::reload::ReloadError;
use crate::service::Service;

/// Why the service could not start. Printed as one line; the process exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Model(#[from] ReloadError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// Loads the model and serves until a shutdown signal. Returns once drained.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let started = Instant::now();
    let service = Arc::new(Service::start(&config)?);
    let (public, other_doors) = open_front_doors(&config, &service)?;
    service.classifier.mark_ready();
    announce_ready(&service, &public, started);
    reload_on_sighup(service.clone());
    let mut doors: Vec<Box<dyn FrontDoor>> = vec![Box::new(public)];
    doors.extend(other_doors);
    shut_down(&config, &service, doors).await;
    tracing::info!("stopped");
    Ok(())
}

/// Opens every way in the config asks for on the one service: the stream first (`/readyz`
/// reports its health), then the public HTTP listener, the admin listener and gRPC. Returns the
/// public listener apart: the `ready` line names its address.
fn open_front_doors(
    config: &Config,
    service: &Service,
) -> Result<(HttpDoor, Vec<Box<dyn FrontDoor>>), StartupError> {
    let mut doors: Vec<Box<dyn FrontDoor>> = Vec::new();
    let mut other_doors: Vec<Arc<dyn Readiness>> = Vec::new();
    if config.stream.brokers.is_some() {
        let stream = stream::start(
            &config.stream,
            Duration::from_secs_f64(config.server.timeout),
            service.classifier.clone(),
            service.metrics.clone(),
        )?;
        other_doors.push(stream.status.clone());
        doors.push(Box::new(stream));
    }
    let state = web::Data::new(ApiState {
        classifier: service.classifier.clone(),
        reloader: service.reloader.clone(),
        other_doors,
        metrics: service.metrics.clone(),
        config: config.clone(),
        admin_attempts: Default::default(),
    });
    let public = HttpDoor::public(config, state.clone())?;
    if let Some(port) = config.server.admin_port {
        doors.push(Box::new(HttpDoor::admin(config, port, state)?));
    }
    if let Some(port) = config.server.grpc_port {
        let grpc = grpc::start(
            config,
            port,
            service.classifier.clone(),
            service.metrics.clone(),
        )?;
        // Tests and scripts read this line to learn the port when `server.grpc_port` is 0.
        println!("newscls grpc listening on http://{}", grpc.addr);
        doors.push(Box::new(grpc));
    }
    Ok((public, doors))
}

/// The `ready` log line (what serves, on which CPU kernels, how long startup took) and the
/// listening line tests and scripts read.
fn announce_ready(service: &Service, http: &HttpDoor, started: Instant) {
    let serving = service.classifier.serving();
    let cpu = CpuKernels::detect();
    tracing::info!(
        address = %http.address,
        model = %serving.spec.name,
        version = %serving.spec.version,
        provider = serving.device.name(),
        cpu_integer_kernels = cpu.integer_kernels.name(),
        cpu_float_kernels = cpu.float_kernels.name(),
        cpu_features = cpu.features.join(" "),
        http_workers = http.workers,
        startup_ms = started.elapsed().as_millis() as u64,
        "ready"
    );
    // Tests and scripts read this line to learn the port when `server.port` is 0.
    println!("newscls listening on http://{}", http.address);
}

/// SIGHUP: check the model sources now.
fn reload_on_sighup(service: Arc<Service>) {
    actix_web::rt::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangup.recv().await.is_some() {
            service.reload_now().await;
        }
    });
}

/// Serves until SIGTERM or SIGINT, then shuts down: readiness goes false, every door stops
/// accepting at once and they drain side by side under one deadline, `server.drain_timeout`
/// from the signal (a window per door, one after another, could outlast Kubernetes' grace
/// period); then the queue closes and the workers finish it. A second signal exits at once.
async fn shut_down(config: &Config, service: &Service, doors: Vec<Box<dyn FrontDoor>>) {
    wait_for_signal().await;
    let deadline = Instant::now() + Duration::from_secs_f64(config.server.drain_timeout);
    tracing::info!("shutdown signal: draining");
    service.classifier.start_draining();
    tokio::select! {
        _ = frontends::drain_all(doors, deadline) => {}
        _ = wait_for_signal() => {
            tracing::warn!("second signal: exiting without draining");
            std::process::exit(130);
        }
    }
    service.classifier.shutdown();
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())
        .expect("installing a SIGTERM handler failed. This is a bug.");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
