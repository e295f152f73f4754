//! One typed configuration, assembled from three layers: the YAML file < environment variables
//! (`NEWSCLS__SECTION__KEY`) < command-line flags.
//!
//! The file comes from `--config`, else `NEWSCLS_CONFIG`, else `config/default.yaml` when it
//! exists; every key has a built-in default, so a partial file is fine. Unknown keys and invalid
//! values stop startup with a message that names the key: a typo must never be silently ignored
//! (the service this one replaces ignored its timeout setting that way).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::device::{BatchLimits, Device, GraphLimits};
use crate::secret::{self, Secret};

/// Prefix of environment overrides: `NEWSCLS__SERVER__PORT=9000`.
pub const ENV_PREFIX: &str = "NEWSCLS";
/// Environment variable naming the config file, like `BENTOML_CONFIG` in the old deployment.
pub const CONFIG_PATH_ENV: &str = "NEWSCLS_CONFIG";
const DEFAULT_CONFIG_PATH: &str = "config/default.yaml";

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub model: ModelConfig,
    pub batching: BatchingConfig,
    pub limits: LimitsConfig,
    pub logging: LoggingConfig,
    pub stream: StreamConfig,
    pub shadow: ShadowConfig,
}

/// A shadow challenger: a second model version that sees the texts the champion (`model`)
/// answers and answers no one; off unless `uri` is set.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowConfig {
    /// A model directory, or an MLflow registry model (`models:/<name>@<alias>`,
    /// `models:/<name>/<version>`), loaded, cached and polled like `model.uri`; null: off.
    pub uri: Option<String>,
    /// Share of texts mirrored to the challenger, 0 to 1.
    pub sample: f64,
    /// Mirrored texts waiting for the challenger; past it a mirrored text is dropped (and
    /// counted), never waited for.
    pub max_queue: usize,
    /// ONNX Runtime threads of the challenger's session (CPU); 0 lets ONNX Runtime decide.
    pub intra_op_threads: usize,
    /// The most recent disagreements kept for `GET /shadow`, with their texts' first 200
    /// characters; 0 keeps none (texts may be sensitive).
    pub keep_disagreements: usize,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            uri: None,
            sample: 1.0,
            max_queue: 256,
            intra_op_threads: 1,
            keep_disagreements: 0,
        }
    }
}

impl ShadowConfig {
    /// How the challenger is loaded: the champion's settings (device, cache, polling, limits)
    /// with the challenger's source, its own name, one inference worker whose ONNX Runtime
    /// threads are capped and do not spin (they would take CPU from the champion).
    pub fn model_config(&self, champion: &ModelConfig) -> Option<ModelConfig> {
        let uri = self.uri.as_ref()?;
        let (dir, uri) = if uri.starts_with("models:/") {
            (champion.dir.clone(), Some(uri.clone()))
        } else {
            (PathBuf::from(uri), None)
        };
        Some(ModelConfig {
            dir,
            uri,
            name: None,
            file: None,
            allow_label_change: true,
            inference_workers: Some(1),
            intra_op_threads: self.intra_op_threads,
            intra_op_spinning: false,
            ..champion.clone()
        })
    }
}

/// Stream mode (Kafka): off unless `brokers` is set.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// `host:port,...` of the Kafka cluster; null leaves stream mode off.
    pub brokers: Option<String>,
    pub input_topic: String,
    pub output_topic: String,
    /// Messages that cannot be classified go here, with the reason in the `x-error` header.
    pub dead_letter_topic: String,
    pub group_id: String,
    /// Field names of JSON input messages (plain-text messages are taken whole).
    pub id_field: String,
    pub text_field: String,
    /// Messages being classified at once; at the limit the consumer pauses its partitions.
    pub max_in_flight: usize,
    /// librdkafka properties passed through (security.protocol, sasl.*, ssl.*, ...).
    pub kafka: KafkaProperties,
}

/// librdkafka properties by their dotted names. Values of properties whose names say they are
/// secret (`sasl.password`, `ssl.key.password`, ...; see [`secret::is_secret_key`]) print and
/// serialize as `***`.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct KafkaProperties(pub std::collections::BTreeMap<String, String>);

impl KafkaProperties {
    /// The real values, for the one place that hands them to librdkafka.
    pub fn expose(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.0.get(key)
    }

    fn redacted(&self) -> std::collections::BTreeMap<&str, &str> {
        self.0
            .iter()
            .map(|(key, value)| {
                let shown = if secret::is_secret_key(key) {
                    secret::REDACTED
                } else {
                    value.as_str()
                };
                (key.as_str(), shown)
            })
            .collect()
    }
}

impl std::fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.redacted().fmt(f)
    }
}

impl Serialize for KafkaProperties {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.redacted().serialize(serializer)
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            brokers: None,
            input_topic: "news".into(),
            output_topic: "news-classified".into(),
            dead_letter_topic: "news-dead-letter".into(),
            group_id: "newscls".into(),
            id_field: "id".into(),
            text_field: "text".into(),
            max_in_flight: 256,
            kafka: KafkaProperties::default(),
        }
    }
}

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

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Directory with the ONNX file(s), tokenizer.json and config.json.
    pub dir: PathBuf,
    /// An MLflow registry model, `models:/<name>@<alias>` or `models:/<name>/<version>`, used
    /// instead of `dir` (tracking server from `MLFLOW_TRACKING_URI`).
    pub uri: Option<String>,
    /// Seconds between registry checks for a new version; 0 turns polling off.
    pub poll_interval: f64,
    /// Where registry versions are downloaded to.
    pub cache_dir: PathBuf,
    /// Registry versions kept in the cache besides the serving one (most recently used first).
    pub cache_keep: usize,
    /// Most bytes one registry version may download (each file and all together).
    pub max_download_bytes: u64,
    /// Seconds a registry version's download may take in all, retries included.
    pub download_timeout: f64,
    /// The name the model is served under, the same for every version (`x-model-name`, KServe
    /// `/v2/models/<name>`, vLLM's `model`); null: the registered model's name, else the
    /// directory's name.
    pub name: Option<String>,
    /// Accept a new version whose labels differ from the serving one's (clients that index
    /// outputs by label position then read other labels).
    pub allow_label_change: bool,
    /// ONNX file to use, relative to `dir`; null picks the variant for the device
    /// (CPU: model_quantized.onnx, ...; GPU: model_fp16.onnx, else model.onnx).
    pub file: Option<PathBuf>,
    /// Token limit per text; null takes the tokenizer's own truncation length.
    pub max_length: Option<usize>,
    pub device: DeviceChoice,
    /// Inference threads, each with its own ONNX Runtime session pulling from the shared queue;
    /// null: by device (CPU 1, CUDA 2; see [`Device::inference_workers`]).
    pub inference_workers: Option<usize>,
    /// On a GPU, replay a captured CUDA graph for each batch shape seen before instead of
    /// launching its kernels one by one (small batches only, see [`Device::graph_limits`]);
    /// null: by device (see [`Device::graphs_by_default`]). Ignored on a CPU.
    pub cuda_graphs: Option<bool>,
    /// ONNX Runtime intra-op threads per inference worker; 0 lets ONNX Runtime decide.
    pub intra_op_threads: usize,
    /// Let ONNX Runtime's threads spin while waiting for work: lower latency on dedicated cores,
    /// but CPU taken from HTTP and tokenization when cores are shared.
    pub intra_op_spinning: bool,
    /// Path to libonnxruntime; null uses `ORT_DYLIB_PATH`, else the copy fetched by `make setup`.
    pub onnxruntime_library: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    /// CUDA when the binary was built with it and a GPU answers, else CPU.
    Auto,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// A batch closes at once when it holds this many texts (null: by device, see
    /// [`Device::batch_limits`])...
    pub max_batch_size: Option<usize>,
    /// ...or when its padded size (texts x longest text) would pass this many tokens (null: by
    /// device)...
    pub max_batch_tokens: Option<usize>,
    /// ...or when it holds this many texts (null: by device, see
    /// [`Device::preferred_batch_size`]), or the device is ready for it: a worker that is free
    /// takes what is queued; while the device is busy the batch grows, with no timer.
    pub preferred_batch_size: Option<usize>,
    /// Only while the device is idle and the batch is below the preferred size: how long its
    /// oldest text may wait for company.
    pub max_wait_ms: u64,
    /// Texts waiting in the queue; past it a request is refused with 429 at once.
    pub max_queue_size: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted request body; past it 413.
    pub max_body_bytes: usize,
    /// Most texts in one request.
    pub max_client_batch_size: usize,
    /// Most characters in one text, checked before tokenization.
    pub max_input_chars: usize,
    /// Most bytes of one row of a file (`newscls classify`/`eval`: a JSONL line, a CSV record, a
    /// Parquet text; a Parquet page may hold 16 times it); a longer line, record or Parquet page
    /// gets a row error without being held in memory. Null: 12 bytes per allowed character
    /// (the longest JSON escape of one) plus 64 KiB for the other fields.
    pub max_row_bytes: Option<usize>,
}

impl LimitsConfig {
    /// [`LimitsConfig::max_row_bytes`], or what it defaults to.
    pub fn row_bytes(&self) -> usize {
        self.max_row_bytes.unwrap_or(
            self.max_input_chars
                .saturating_mul(12)
                .saturating_add(64 * 1024),
        )
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A tracing filter: `info`, `newscls=debug,actix_web=warn`, ...
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
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

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("models/news-topic-e5-small"),
            uri: None,
            poll_interval: 30.0,
            cache_dir: PathBuf::from(".cache/models"),
            cache_keep: 2,
            // A few times the largest bundled variant (model_fp16.onnx, 73 MB; fp32 would be 145).
            max_download_bytes: 512 * 1024 * 1024,
            download_timeout: 600.0,
            name: None,
            allow_label_change: false,
            file: None,
            max_length: None,
            device: DeviceChoice::Auto,
            inference_workers: None,
            cuda_graphs: None,
            intra_op_threads: 0,
            intra_op_spinning: true,
            onnxruntime_library: None,
        }
    }
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch_size: None,
            max_batch_tokens: None,
            preferred_batch_size: None,
            max_wait_ms: 2,
            max_queue_size: 1024,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_client_batch_size: 32,
            max_input_chars: 100_000,
            max_row_bytes: None,
        }
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl BatchingConfig {
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }

    /// The limits in force on `device`: the configured ones, else the device's defaults.
    pub fn limits(&self, device: Device) -> BatchLimits {
        let defaults = device.batch_limits();
        BatchLimits {
            max_batch_size: self.max_batch_size.unwrap_or(defaults.max_batch_size),
            max_batch_tokens: self.max_batch_tokens.unwrap_or(defaults.max_batch_tokens),
        }
    }

    /// The batch size worth waiting for on `device`.
    pub fn preferred_batch_size(&self, device: Device) -> usize {
        self.preferred_batch_size
            .unwrap_or_else(|| device.preferred_batch_size())
    }
}

impl ModelConfig {
    /// Inference workers on `device`: the configured number, else the device's default.
    pub fn inference_workers(&self, device: Device) -> usize {
        self.inference_workers
            .unwrap_or_else(|| device.inference_workers())
    }

    /// The graph limits in force on `device`, or None when graphs are off (always on a CPU).
    pub fn cuda_graphs(&self, device: Device) -> Option<GraphLimits> {
        let limits = device.graph_limits()?;
        self.cuda_graphs
            .unwrap_or_else(|| device.graphs_by_default())
            .then_some(limits)
    }
}

/// Declares the command-line flags once: each is `field: Type => "config.key"`. The macro
/// writes the clap struct and the function that turns given flags into config overrides, so a
/// flag and its key cannot drift apart.
macro_rules! flags {
    ($($field:ident: $ty:ty => $key:literal),* $(,)?) => {
        /// Command-line flags: the top layer. Each sets one config key, and is accepted before
        /// or after a subcommand.
        #[derive(Debug, Default, Parser)]
        #[command(
            name = "newscls",
            version,
            about = "Serve a news-topic text classifier over HTTP, or classify and evaluate files with it"
        )]
        pub struct Cli {
            #[command(subcommand)]
            pub command: Option<Command>,
            /// YAML config file [env: NEWSCLS_CONFIG] [default: config/default.yaml if present]
            #[arg(long, global = true, help_heading = SETTINGS)]
            pub config: Option<PathBuf>,
            $(
                #[arg(long, global = true, help_heading = SETTINGS, help = concat!("Sets ", $key))]
                pub $field: Option<$ty>,
            )*
            /// Print the effective configuration as JSON and exit.
            #[arg(long)]
            pub print_config: bool,
            /// GET this URL and exit 0 on a 2xx answer, 1 otherwise (container health checks).
            #[arg(long, value_name = "URL")]
            pub probe: Option<String>,
        }

        impl Cli {
            /// `(config key, value)` for every flag that was given.
            fn overrides(&self) -> Vec<(&'static str, config::Value)> {
                let mut overrides = Vec::new();
                $(
                    if let Some(value) = &self.$field {
                        overrides.push(($key, config_value(value)));
                    }
                )*
                overrides
            }
        }
    };
}

/// The help heading of the flags that set config keys, for every command.
const SETTINGS: &str = "Settings (config keys; any command)";

/// What the binary does besides serving (the default).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Classify every row of a JSONL, CSV or Parquet file with the model, without HTTP
    ///
    /// Rows come out in input order with `label` and `score` (and, when asked, every label's
    /// score and the model's name and version); every other field is passed through. A row with
    /// no text, an empty one, invalid UTF-8 or too many characters gets an `error` instead, and
    /// the run goes on. The model is chosen as for the server (--model-dir, --model-uri,
    /// --device, the config file, NEWSCLS__* variables).
    Classify(ClassifyArgs),
    /// Measure the model on a labelled file: accuracy, macro-F1, per-label precision, recall
    /// and F1, and the confusion matrix; with --compare-uri, two versions side by side
    Eval(EvalArgs),
}

/// A file format for rows; by default taken from the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    /// One JSON object per line (.jsonl, .ndjson)
    Jsonl,
    /// Comma-separated values with a header row (.csv)
    Csv,
    /// Apache Parquet (.parquet), read and written a row group at a time
    Parquet,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClassifyArgs {
    /// The rows to classify (.jsonl, .csv or .parquet); `-` or nothing reads standard input
    pub input: Option<PathBuf>,
    /// Where to write the classified rows; `-` or nothing writes standard output
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// The input's format, when its name does not tell (standard input: jsonl). The output
    /// has the input's format, so every field passes through unchanged
    #[arg(long)]
    pub format: Option<FileFormat>,
    /// The field (JSONL) or column (CSV, Parquet) that holds the text
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// The field that identifies a row; rows without one are numbered from 0 in input order
    #[arg(long, default_value = "id")]
    pub id_field: String,
    /// Add every label's score (`scores` in JSONL, a `score_<label>` column in CSV and Parquet)
    #[arg(long)]
    pub all_scores: bool,
    /// Add the model's name and version to every row
    #[arg(long)]
    pub with_model: bool,
    /// Keep the rows an earlier, interrupted run already wrote to --output and classify only
    /// the others (JSONL and CSV output)
    #[arg(long)]
    pub resume: bool,
    /// Exit with status 2 when any row got an error (by default errors are rows like any other)
    #[arg(long)]
    pub fail_on_error: bool,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct EvalArgs {
    /// The labelled rows (.jsonl, .csv or .parquet)
    pub file: PathBuf,
    /// The file's format, when its name does not tell
    #[arg(long)]
    pub format: Option<FileFormat>,
    /// The field that holds the text
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// The field that holds the true label
    #[arg(long, default_value = "label")]
    pub label_field: String,
    /// Print one JSON document instead of tables
    #[arg(long)]
    pub json: bool,
    /// Also evaluate this model (a directory or models:/name@alias, models:/name/version) on the
    /// same rows, side by side, and list the texts the two label differently
    #[arg(long, value_name = "URI")]
    pub compare_uri: Option<String>,
    /// How many differing texts to show with --compare-uri
    #[arg(long, default_value_t = 10)]
    pub show: usize,
}

flags! {
    host: String => "server.host",
    port: u16 => "server.port",
    grpc_port: u16 => "server.grpc_port",
    workers: usize => "server.workers",
    timeout: f64 => "server.timeout",
    model_dir: PathBuf => "model.dir",
    model_uri: String => "model.uri",
    model_file: PathBuf => "model.file",
    shadow_uri: String => "shadow.uri",
    device: DeviceChoice => "model.device",
    max_batch_size: usize => "batching.max_batch_size",
    preferred_batch_size: usize => "batching.preferred_batch_size",
    max_wait_ms: u64 => "batching.max_wait_ms",
    max_queue_size: usize => "batching.max_queue_size",
    log_level: String => "logging.level",
    log_format: LogFormat => "logging.format",
}

/// A flag's value as the config layer stores it: numbers stay numbers, the rest (paths,
/// enums by their serde name) become strings.
fn config_value<T: Serialize>(value: &T) -> config::Value {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Number(n)) if n.is_u64() => {
            config::Value::from(n.as_u64().unwrap_or_default())
        }
        Ok(serde_json::Value::Number(n)) => config::Value::from(n.as_f64().unwrap_or_default()),
        Ok(serde_json::Value::String(s)) => config::Value::from(s),
        Ok(other) => config::Value::from(other.to_string()),
        Err(e) => config::Value::from(e.to_string()),
    }
}

/// Why the configuration cannot be used; names the file, key or value at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Assembles file < environment (`NEWSCLS__*` from the process) < flags, then validates.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        Self::load_with_env(cli, None)
    }

    /// Like [`Config::load`], with the environment layer taken from `env` instead of the
    /// process when given (tests must not see the caller's `NEWSCLS__*` variables).
    pub fn load_with_env(
        cli: &Cli,
        env: Option<config::Map<String, String>>,
    ) -> Result<Self, ConfigError> {
        let path = config_path(cli);
        let mut builder = config::Config::builder();
        if let Some(path) = &path {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} not found",
                    path.display()
                )));
            }
            builder = builder
                .add_source(config::File::from(path.as_path()).format(config::FileFormat::Yaml));
        }
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(env),
        );
        for (key, value) in cli.overrides() {
            builder = builder
                .set_override(key, value)
                .map_err(|e| ConfigError(e.to_string()))?;
        }
        let source = path
            .as_deref()
            .map_or("built-in defaults".to_string(), |p| p.display().to_string());
        let config: Config = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError(format!("{source}: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values serde cannot: ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(key: &str, ok: bool) -> Result<(), ConfigError> {
            if ok {
                Ok(())
            } else {
                Err(ConfigError(format!("{key} must be greater than zero")))
            }
        }
        positive(
            "server.timeout",
            self.server.timeout.is_finite() && self.server.timeout > 0.0,
        )?;
        positive(
            "server.drain_timeout",
            self.server.drain_timeout.is_finite() && self.server.drain_timeout > 0.0,
        )?;
        positive(
            "model.inference_workers",
            self.model.inference_workers != Some(0),
        )?;
        positive(
            "batching.preferred_batch_size",
            self.batching.preferred_batch_size != Some(0),
        )?;
        positive(
            "batching.max_batch_size",
            self.batching.max_batch_size != Some(0),
        )?;
        positive(
            "batching.max_batch_tokens",
            self.batching.max_batch_tokens != Some(0),
        )?;
        positive("batching.max_queue_size", self.batching.max_queue_size > 0)?;
        positive("limits.max_body_bytes", self.limits.max_body_bytes > 0)?;
        positive(
            "limits.max_client_batch_size",
            self.limits.max_client_batch_size > 0,
        )?;
        positive("limits.max_input_chars", self.limits.max_input_chars > 0)?;
        positive("stream.max_in_flight", self.stream.max_in_flight > 0)?;
        positive("shadow.max_queue", self.shadow.max_queue > 0)?;
        if !(0.0..=1.0).contains(&self.shadow.sample) {
            return Err(ConfigError(format!(
                "shadow.sample must be between 0 and 1 (the share of texts mirrored), not {}",
                self.shadow.sample
            )));
        }
        if self
            .shadow
            .uri
            .as_deref()
            .is_some_and(|u| u.trim().is_empty())
        {
            return Err(ConfigError(
                "shadow.uri must not be empty (null turns the shadow off)".into(),
            ));
        }
        if self.shadow.uri.is_some() && self.model.cache_keep == 0 {
            return Err(ConfigError(
                "model.cache_keep must be at least 1 with shadow.uri: the champion's and the challenger's versions share the cache".into(),
            ));
        }
        if !(self.model.poll_interval.is_finite() && self.model.poll_interval >= 0.0) {
            return Err(ConfigError(
                "model.poll_interval must be zero (off) or a number of seconds".into(),
            ));
        }
        positive(
            "model.download_timeout",
            self.model.download_timeout.is_finite() && self.model.download_timeout > 0.0,
        )?;
        positive(
            "model.max_download_bytes",
            self.model.max_download_bytes > 0,
        )?;
        if self
            .server
            .admin_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < MIN_ADMIN_TOKEN_BYTES)
        {
            return Err(ConfigError(format!(
                "server.admin_token must be at least {MIN_ADMIN_TOKEN_BYTES} bytes (a short one can \
                 be guessed; e.g. `openssl rand -hex 16`); null turns /admin/reload off"
            )));
        }
        if self
            .model
            .name
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            return Err(ConfigError("model.name must not be empty".into()));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            return Err(ConfigError(format!(
                "logging.level {:?} is not a tracing filter: {e}",
                self.logging.level
            )));
        }
        if self.model.max_length == Some(0) {
            return Err(ConfigError(
                "model.max_length must be greater than zero".into(),
            ));
        }
        if self.limits.max_client_batch_size > self.batching.max_queue_size {
            return Err(ConfigError(format!(
                "limits.max_client_batch_size ({}) must not exceed batching.max_queue_size ({}): such a request could never be admitted",
                self.limits.max_client_batch_size, self.batching.max_queue_size
            )));
        }
        Ok(())
    }
}

fn config_path(cli: &Cli) -> Option<PathBuf> {
    cli.config
        .clone()
        .or_else(|| {
            std::env::var_os(CONFIG_PATH_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| Path::new(p).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A YAML file with a name no other test uses; removed when dropped.
    struct TempYaml(PathBuf);

    impl TempYaml {
        fn new(yaml: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "newscls-config-{}-{}.yaml",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, yaml).expect("write config");
            Self(path)
        }
    }

    impl Drop for TempYaml {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Loads with an empty environment layer: the caller's `NEWSCLS__*` must not leak in.
    fn load(cli: &Cli) -> Result<Config, ConfigError> {
        Config::load_with_env(cli, Some(config::Map::new()))
    }

    fn load_yaml(yaml: &str) -> Result<Config, ConfigError> {
        let file = TempYaml::new(yaml);
        load(&Cli {
            config: Some(file.0.clone()),
            ..Cli::default()
        })
    }

    #[test]
    fn partial_file_keeps_defaults_for_missing_keys() {
        let config = load_yaml("server:\n  port: 9001\n").expect("valid config");
        assert_eq!(config.server.port, 9001);
        assert_eq!(config.batching, BatchingConfig::default());
    }

    #[test]
    fn two_files_of_the_same_length_never_share_a_path() {
        // Regression: temp files were named after the YAML's length, so parallel tests with
        // equally long files read each other's settings.
        let a = load_yaml("server:\n  port: 9101\n").expect("valid");
        let b = load_yaml("server:\n  port: 9102\n").expect("valid");
        assert_eq!((a.server.port, b.server.port), (9101, 9102));
    }

    #[test]
    fn the_environment_layer_is_read_from_the_given_map() {
        let env = config::Map::from([("NEWSCLS__SERVER__PORT".to_string(), "9201".to_string())]);
        let file = TempYaml::new("server:\n  port: 9001\n");
        let cli = Cli {
            config: Some(file.0.clone()),
            ..Cli::default()
        };
        let config = Config::load_with_env(&cli, Some(env)).expect("valid");
        assert_eq!(config.server.port, 9201);
    }

    #[test]
    fn librdkafka_properties_keep_their_dotted_names() {
        let config = load_yaml(
            "stream:\n  brokers: k:9092\n  kafka:\n    security.protocol: SASL_SSL\n    session.timeout.ms: 6000\n",
        )
        .expect("valid config");
        assert_eq!(
            config
                .stream
                .kafka
                .get("security.protocol")
                .map(String::as_str),
            Some("SASL_SSL")
        );
        assert_eq!(
            config
                .stream
                .kafka
                .get("session.timeout.ms")
                .map(String::as_str),
            Some("6000")
        );
    }

    #[test]
    fn secrets_are_redacted_when_the_config_is_shown() {
        let config = load_yaml(
            "server:\n  admin_token: admin-s3cret-7f3a9c02\nstream:\n  kafka:\n    sasl.username: svc\n    sasl.password: kafka-s3cret\n    ssl.key.pem: pem-s3cret\n",
        )
        .expect("valid config");
        let shown = format!(
            "{}\n{config:?}",
            serde_json::to_string(&config).expect("json")
        );
        for secret in ["admin-s3cret", "kafka-s3cret", "pem-s3cret"] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
        assert!(shown.contains("svc"), "other properties stay readable");
        let token = config.server.admin_token.expect("a token");
        assert!(token.matches("admin-s3cret-7f3a9c02"));
        assert_eq!(
            config.stream.kafka.get("sasl.password").map(String::as_str),
            Some("kafka-s3cret"),
            "librdkafka still gets the value"
        );
    }

    #[test]
    fn an_empty_or_short_admin_token_or_log_filter_typo_is_refused() {
        for short in ["\"\"", "s3cret", "fifteen-bytes!!"] {
            let err = load_yaml(&format!("server:\n  admin_token: {short}\n"))
                .expect_err("short token")
                .to_string();
            assert!(err.contains("at least 16 bytes"), "{short}: {err}");
        }
        assert!(load_yaml("server:\n  admin_token: sixteen-bytes-ok\n").is_ok());
        let err = load_yaml("logging:\n  level: \"newscls=lound\"\n")
            .expect_err("bad filter")
            .to_string();
        assert!(err.contains("logging.level"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let err = load_yaml("server:\n  timout: 3\n")
            .expect_err("typo must fail")
            .to_string();
        assert!(err.contains("timout"), "{err}");
    }

    #[test]
    fn invalid_value_is_rejected_by_key() {
        let err = load_yaml("batching:\n  max_batch_size: 0\n")
            .expect_err("zero must fail")
            .to_string();
        assert!(err.contains("batching.max_batch_size"), "{err}");
        let err = load_yaml("model:\n  device: tpu\n")
            .expect_err("unknown device")
            .to_string();
        assert!(err.contains("tpu"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let file = TempYaml::new("server:\n  port: 9001\n  timeout: 3\n");
        let cli = Cli {
            config: Some(file.0.clone()),
            port: Some(9002),
            device: Some(DeviceChoice::Cpu),
            model_dir: Some(PathBuf::from("models/x")),
            log_format: Some(LogFormat::Json),
            ..Cli::default()
        };
        let config = load(&cli).expect("valid");
        assert_eq!(config.server.port, 9002);
        assert_eq!(config.server.timeout, 3.0);
        assert_eq!(config.model.device, DeviceChoice::Cpu);
        assert_eq!(config.model.dir, PathBuf::from("models/x"));
        assert_eq!(config.logging.format, LogFormat::Json);
    }

    #[test]
    fn every_flag_sets_the_key_it_names() {
        let cli = Cli::try_parse_from([
            "newscls",
            "--host",
            "127.0.0.2",
            "--port",
            "1",
            "--grpc-port",
            "2",
            "--workers",
            "3",
            "--timeout",
            "2.5",
            "--model-dir",
            "m",
            "--shadow-uri",
            "models:/news@challenger",
            "--device",
            "cuda",
            "--max-batch-size",
            "4",
            "--preferred-batch-size",
            "3",
            "--max-wait-ms",
            "6",
            "--max-queue-size",
            "70",
            "--log-level",
            "debug",
            "--log-format",
            "json",
        ])
        .expect("flags parse");
        let config = load(&cli).expect("valid");
        let expected = Config {
            server: ServerConfig {
                host: "127.0.0.2".into(),
                port: 1,
                grpc_port: Some(2),
                workers: 3,
                timeout: 2.5,
                ..ServerConfig::default()
            },
            model: ModelConfig {
                dir: PathBuf::from("m"),
                device: DeviceChoice::Cuda,
                ..ModelConfig::default()
            },
            batching: BatchingConfig {
                max_batch_size: Some(4),
                preferred_batch_size: Some(3),
                max_wait_ms: 6,
                max_queue_size: 70,
                ..BatchingConfig::default()
            },
            logging: LoggingConfig {
                level: "debug".into(),
                format: LogFormat::Json,
            },
            shadow: ShadowConfig {
                uri: Some("models:/news@challenger".into()),
                ..ShadowConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn cuda_graphs_apply_on_a_gpu_only_and_are_off_unless_asked_for() {
        let unset = ModelConfig::default();
        assert_eq!(unset.cuda_graphs(Device::Cuda), None, "off by default");
        assert_eq!(unset.cuda_graphs(Device::Cpu), None);
        let on = ModelConfig {
            cuda_graphs: Some(true),
            ..ModelConfig::default()
        };
        assert_eq!(on.cuda_graphs(Device::Cuda), Device::Cuda.graph_limits());
        assert!(on.cuda_graphs(Device::Cuda).is_some());
        assert_eq!(
            on.cuda_graphs(Device::Cpu),
            None,
            "nothing to capture on a CPU"
        );
        let env = config::Map::from([(
            "NEWSCLS__MODEL__CUDA_GRAPHS".to_string(),
            "true".to_string(),
        )]);
        let config = Config::load_with_env(&Cli::default(), Some(env)).expect("valid");
        assert_eq!(
            config.model.cuda_graphs,
            Some(true),
            "settable from the environment"
        );
    }

    #[test]
    fn shipped_default_yaml_matches_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
        let text = std::fs::read_to_string(path).expect("config/default.yaml");
        let from_file: Config = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Yaml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("default.yaml parses");
        assert_eq!(from_file, Config::default());
    }
}
