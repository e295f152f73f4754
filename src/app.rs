//! Startup, the HTTP server, and graceful shutdown.
//!
//! Startup order: model metadata -> tokenizer -> ONNX Runtime -> one session per inference
//! worker -> a warm-up batch through each -> workers started -> listen -> ready. Any failure
//! before listening is a [`StartupError`] and the process exits non-zero.
//!
//! Shutdown on SIGTERM or SIGINT: readiness goes false and new /predict calls get 503 at once;
//! the listener closes; requests already accepted finish (their texts are still queued and
//! served) within `server.drain_timeout`; then the queue closes, the workers drain it and the
//! process exits 0. A second signal stops without waiting.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{middleware, web, App, HttpServer};

use crate::api;
use crate::batching::queue::retry_hint;
use crate::batching::worker::WorkerPool;
use crate::batching::{BatchQueue, BatchRule};
use crate::config::Config;
use crate::error::{ApiError, StartupError};
use crate::inference::onnx::{default_library_path, init_runtime, OnnxBackend, OnnxOptions};
use crate::inference::{Backend, PaddedBatch};
use crate::metrics::Metrics;
use crate::model::ModelSpec;
use crate::tokenize::{TextTokenizer, TokenizedText};

/// Everything a handler needs, shared by all HTTP workers.
pub struct AppState {
    pub config: Config,
    pub model: ModelSpec,
    pub tokenizer: Arc<TextTokenizer>,
    pub queue: Arc<BatchQueue>,
    pub metrics: Arc<Metrics>,
    pub provider: String,
    /// Tokenizations running at once. Without a bound, each waiting request takes a thread of
    /// the blocking pool (70 threads at 64 clients) and they slow inference down by contention.
    pub tokenize_permits: tokio::sync::Semaphore,
    ready: AtomicBool,
    draining: AtomicBool,
    running_workers: Arc<AtomicUsize>,
}

impl AppState {
    /// `Ok` when this instance should take traffic.
    pub fn ensure_ready(&self) -> Result<(), ApiError> {
        if self.draining.load(Ordering::SeqCst) {
            Err(ApiError::NotReady("shutting down"))
        } else if !self.ready.load(Ordering::SeqCst) {
            Err(ApiError::NotReady("starting"))
        } else if self.running_workers.load(Ordering::SeqCst) == 0 {
            Err(ApiError::NotReady("no inference worker is running"))
        } else {
            Ok(())
        }
    }

    pub fn retry_hint(&self, queued: usize) -> Duration {
        retry_hint(
            queued,
            self.config.batching.max_batch_size,
            self.config.batching.max_wait(),
        )
    }
}

/// Loads the model and serves until a shutdown signal. Returns once drained.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let started = Instant::now();
    let model = ModelSpec::load(&config.model.dir)?;
    let tokenizer = Arc::new(TextTokenizer::load(
        &model.tokenizer_path(),
        config.model.max_length.or(model.max_length),
    )?);
    let library = config
        .model
        .onnxruntime_library
        .clone()
        .unwrap_or_else(default_library_path);
    let env = init_runtime(&library)?;
    let options = OnnxOptions {
        device: config.model.device,
        intra_op_threads: config.model.intra_op_threads,
        intra_op_spinning: config.model.intra_op_spinning,
    };
    let mut backends: Vec<Box<dyn Backend>> = Vec::with_capacity(config.model.inference_workers);
    for _ in 0..config.model.inference_workers {
        let mut backend =
            OnnxBackend::load(&env, &model.model_path(), &options, model.labels.len())?;
        warm_up(&mut backend, &tokenizer)?;
        backends.push(Box::new(backend));
    }
    let provider = backends
        .first()
        .map(|b| b.provider().to_string())
        .unwrap_or_default();

    let metrics = Arc::new(Metrics::new());
    let queue = Arc::new(BatchQueue::with_workers(
        config.batching.max_queue_size,
        BatchRule::from_config(&config.batching),
        metrics.clone(),
        config.model.inference_workers,
    ));
    let pool = WorkerPool::spawn(backends, queue.clone(), tokenizer.pad_id(), metrics.clone());
    let state = web::Data::new(AppState {
        model,
        tokenizer,
        queue: queue.clone(),
        metrics,
        provider,
        tokenize_permits: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ),
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        running_workers: pool.running_counter(),
        config: config.clone(),
    });

    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = TcpListener::bind(&addr).map_err(|source| StartupError::Bind {
        addr: addr.clone(),
        source,
    })?;
    let bound = listener
        .local_addr()
        .map_or(addr.clone(), |a| a.to_string());
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let (limits, demo_page) = (config.limits.clone(), config.server.demo_page);
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .wrap(middleware::from_fn(api::observe))
            .configure(|cfg| api::routes(cfg, &limits, demo_page))
            .default_service(web::to(api::not_found))
    })
    .on_connect(api::connection::remember_socket)
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(config.server.drain_timeout.ceil() as u64)
    .listen(listener)
    .map_err(|source| StartupError::Bind {
        addr: addr.clone(),
        source,
    })?
    .run();

    state.ready.store(true, Ordering::SeqCst);
    tracing::info!(
        address = %bound,
        model = %state.model.name,
        version = %state.model.version,
        provider = %state.provider,
        http_workers = workers,
        startup_ms = started.elapsed().as_millis() as u64,
        "ready"
    );
    // Tests and scripts read this line to learn the port when `server.port` is 0.
    println!("newscls listening on http://{bound}");

    let handle = server.handle();
    let signal_state = state.clone();
    actix_web::rt::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal: draining");
        signal_state.draining.store(true, Ordering::SeqCst);
        let graceful = handle.stop(true);
        tokio::select! {
            _ = graceful => {}
            _ = wait_for_signal() => {
                tracing::warn!("second signal: exiting without draining");
                std::process::exit(130);
            }
        }
    });

    server.await?;
    queue.close();
    pool.join();
    tracing::info!("stopped");
    Ok(())
}

/// One real batch through the model before the service reports ready, so the first client
/// does not pay for ONNX Runtime's lazy initialisation.
fn warm_up(backend: &mut OnnxBackend, tokenizer: &TextTokenizer) -> Result<(), StartupError> {
    let texts = [
        "Markets rallied after the central bank's decision.".to_string(),
        "코스피 상승".to_string(),
    ];
    let tokenized = tokenizer
        .encode(&texts, true)
        .map_err(|e| StartupError::Warmup(e.to_string()))?;
    let batch = PaddedBatch::new(tokenized.iter(), tokenizer.pad_id());
    let logits = backend
        .infer(&batch)
        .map_err(|e| StartupError::Warmup(e.to_string()))?;
    // The highest id the tokenizer can produce must exist in the model's embedding table;
    // otherwise some texts would fail at request time instead of now.
    let highest = TokenizedText {
        input_ids: vec![tokenizer.vocab_size() as i64 - 1],
        type_ids: vec![0],
    };
    backend
        .infer(&PaddedBatch::new([&highest], tokenizer.pad_id()))
        .map_err(|e| {
            StartupError::Warmup(format!(
                "the model rejects the tokenizer's highest id {}: {e}",
                highest.input_ids[0]
            ))
        })?;
    if logits.values.iter().any(|v| !v.is_finite()) {
        return Err(StartupError::Warmup(
            "model returned non-finite logits".into(),
        ));
    }
    Ok(())
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
