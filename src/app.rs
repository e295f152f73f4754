//! Startup, the HTTP server, and graceful shutdown.
//!
//! Startup order: the model is found (a directory or a registry version, a
//! [`crate::source::ModelSource`]),
//! loaded and warmed up -> the [`Classifier`] starts its inference workers -> the registry
//! poll and SIGHUP reloads start (and, with `shadow.uri`, the challenger loads in the
//! background) -> listen -> ready. Any failure before listening is a
//! [`StartupError`] and the process exits non-zero.
//!
//! Shutdown on SIGTERM or SIGINT: readiness goes false and new /predict calls get 503 at once;
//! the listener closes; requests already accepted finish (their texts are still queued and
//! served) within `server.drain_timeout`; then the queue closes, the workers drain it and the
//! process exits 0. A second signal stops without waiting.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{middleware, web, App, HttpServer};

use crate::api::{self, ApiState};
use crate::config::{Config, ConfigError};
use crate::device::CpuKernels;
use crate::grpc::{self, GrpcError};
use crate::reload::ReloadError;
use crate::service::Service;
use crate::stream::{self, StreamError};

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
    #[error("cannot serve on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Server(#[from] std::io::Error),
}

/// Loads the model and serves until a shutdown signal. Returns once drained.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let started = Instant::now();
    let service = Arc::new(Service::start(&config)?);
    let stream = match config.stream.brokers {
        Some(_) => Some(stream::start(
            &config.stream,
            Duration::from_secs_f64(config.server.timeout),
            service.classifier.clone(),
            service.metrics.clone(),
        )?),
        None => None,
    };
    let state = web::Data::new(ApiState {
        classifier: service.classifier.clone(),
        reloader: service.reloader.clone(),
        stream: stream.as_ref().map(|s| s.status.clone()),
        metrics: service.metrics.clone(),
        config: config.clone(),
        admin_attempts: Default::default(),
    });
    let http = serve_http(&config, state.clone())?;
    let admin = match config.server.admin_port {
        Some(port) => {
            let host = config.server.admin_host.as_deref().unwrap_or("127.0.0.1");
            Some(serve_admin(host, port, state)?)
        }
        None => None,
    };
    let grpc = match config.server.grpc_port {
        Some(port) => {
            let grpc = grpc::start(
                &config,
                port,
                service.classifier.clone(),
                service.metrics.clone(),
            )?;
            // Tests and scripts read this line to learn the port when `server.grpc_port` is 0.
            println!("newscls grpc listening on http://{}", grpc.addr);
            Some(grpc)
        }
        None => None,
    };
    service.classifier.mark_ready();
    announce_ready(&service, &http, started);
    // SIGHUP: check the model sources now.
    let reloading = service.clone();
    actix_web::rt::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangup.recv().await.is_some() {
            reloading.reload_now().await;
        }
    });
    let doors = FrontDoors {
        http,
        admin,
        grpc,
        stream,
    };
    shut_down_on_signal(&config, &service, doors).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The public HTTP listener, bound and running.
struct HttpDoor {
    server: actix_web::dev::Server,
    address: String,
    workers: usize,
}

/// Binds `server.host:server.port` and serves the public routes (the admin ones too when no
/// admin port is set).
fn serve_http(config: &Config, state: web::Data<ApiState>) -> Result<HttpDoor, StartupError> {
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = TcpListener::bind(&addr).map_err(|source| StartupError::Bind {
        addr: addr.clone(),
        source,
    })?;
    let address = listener
        .local_addr()
        .map_or(addr.clone(), |a| a.to_string());
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let (limits, demo_page) = (config.limits.clone(), config.server.demo_page);
    let separate_admin = config.server.admin_port.is_some();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(middleware::from_fn(api::observe))
            .configure(|cfg| api::routes(cfg, &limits, demo_page, !separate_admin))
            .default_service(web::to(api::not_found))
    })
    .on_connect(api::connection::remember_socket)
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(config.server.drain_timeout.ceil() as u64)
    .listen(listener)
    .map_err(|source| StartupError::Bind { addr, source })?
    .run();
    Ok(HttpDoor {
        server,
        address,
        workers,
    })
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

/// Every way in that is open: the public and admin HTTP listeners, gRPC, the Kafka stream.
struct FrontDoors {
    http: HttpDoor,
    admin: Option<actix_web::dev::Server>,
    grpc: Option<grpc::GrpcServer>,
    stream: Option<stream::StreamHandle>,
}

/// Serves until SIGTERM or SIGINT, then shuts down: readiness goes false, every door stops
/// accepting at once and they drain side by side under one deadline, `server.drain_timeout`
/// from the signal (a window per door, one after another, could outlast Kubernetes' grace
/// period); then the queue closes and the workers finish it. A second signal exits at once.
async fn shut_down_on_signal(
    config: &Config,
    service: &Service,
    doors: FrontDoors,
) -> Result<(), StartupError> {
    let FrontDoors {
        http,
        admin,
        grpc,
        stream,
    } = doors;
    let handle = http.server.handle();
    let admin_handle = admin.as_ref().map(|a| a.handle());
    if let Some(admin) = admin {
        actix_web::rt::spawn(admin);
    }
    let signal_classifier = service.classifier.clone();
    let stop_stream = stream.as_ref().map(|s| s.stopper());
    let stop_grpc = grpc.as_ref().map(|g| g.stopper());
    let drain = Duration::from_secs_f64(config.server.drain_timeout);
    let (deadline_tx, mut deadline_rx) = tokio::sync::oneshot::channel::<Instant>();
    actix_web::rt::spawn(async move {
        wait_for_signal().await;
        let _ = deadline_tx.send(Instant::now() + drain);
        tracing::info!("shutdown signal: draining");
        signal_classifier.start_draining();
        if let Some(stop) = stop_stream {
            stop();
        }
        if let Some(stop) = stop_grpc {
            stop();
        }
        if let Some(admin) = admin_handle {
            admin.stop(false).await;
        }
        let graceful = handle.stop(true);
        tokio::select! {
            _ = graceful => {}
            _ = wait_for_signal() => {
                tracing::warn!("second signal: exiting without draining");
                std::process::exit(130);
            }
        }
    });

    http.server.await?;
    // HTTP has drained (within the deadline: its shutdown timeout is the same drain window);
    // gRPC and the stream have been draining beside it and get what is left of the window.
    // Sent before the HTTP server was told to stop, so it is there now.
    let deadline = deadline_rx
        .try_recv()
        .unwrap_or_else(|_| Instant::now() + drain);
    let left = || deadline.saturating_duration_since(Instant::now());
    let grpc_drained = async {
        if let Some(grpc) = grpc {
            let left = left();
            let _ = tokio::task::spawn_blocking(move || grpc.wait(left)).await;
        }
    };
    let stream_drained = async {
        if let Some(stream) = stream {
            stream.shutdown(left()).await;
        }
    };
    tokio::join!(grpc_drained, stream_drained);
    service.classifier.shutdown();
    Ok(())
}

/// The admin listener (`server.admin_port`): `/admin/reload` and `/shadow`, one worker.
fn serve_admin(
    host: &str,
    port: u16,
    state: web::Data<ApiState>,
) -> Result<actix_web::dev::Server, StartupError> {
    let addr = format!("{host}:{port}");
    let bind_error = |source| StartupError::Bind {
        addr: addr.clone(),
        source,
    };
    let listener = TcpListener::bind(&addr).map_err(bind_error)?;
    let bound = listener
        .local_addr()
        .map_or(addr.clone(), |a| a.to_string());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(api::admin_routes)
            .default_service(web::to(api::not_found))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .map_err(bind_error)?
    .run();
    // Tests and scripts read this line to learn the port when `server.admin_port` is 0.
    println!("newscls admin listening on http://{bound}");
    Ok(server)
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
