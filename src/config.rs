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

use crate::error::StartupError;

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
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Directory with model.onnx, tokenizer.json and config.json.
    pub dir: PathBuf,
    /// Token limit per text; null takes the tokenizer's own truncation length.
    pub max_length: Option<usize>,
    pub device: Device,
    /// Inference threads, each with its own ONNX Runtime session pulling from the shared queue.
    pub inference_workers: usize,
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
pub enum Device {
    Cpu,
    Cuda,
    /// CUDA when the binary was built with it and a GPU answers, else CPU.
    Auto,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// A batch closes when it holds this many texts...
    pub max_batch_size: usize,
    /// ...or when its padded size (texts x longest text) would pass this many tokens...
    pub max_batch_tokens: usize,
    /// ...or when its oldest text has waited this long.
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
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("models/news-topic-e5-small"),
            max_length: None,
            device: Device::Auto,
            inference_workers: 1,
            intra_op_threads: 0,
            intra_op_spinning: true,
            onnxruntime_library: None,
        }
    }
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 32,
            max_batch_tokens: 1024,
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

impl ServerConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout)
    }
}

impl BatchingConfig {
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }
}

/// Command-line flags: the top layer. Each maps to one config key.
#[derive(Debug, Default, Parser)]
#[command(
    name = "newscls",
    version,
    about = "Serve a news-topic text classifier over HTTP"
)]
pub struct Cli {
    /// YAML config file [env: NEWSCLS_CONFIG] [default: config/default.yaml if present]
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// server.host
    #[arg(long)]
    pub host: Option<String>,
    /// server.port
    #[arg(long)]
    pub port: Option<u16>,
    /// server.workers
    #[arg(long)]
    pub workers: Option<usize>,
    /// server.timeout, in seconds
    #[arg(long)]
    pub timeout: Option<f64>,
    /// model.dir
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// model.device
    #[arg(long, value_enum)]
    pub device: Option<Device>,
    /// batching.max_batch_size
    #[arg(long)]
    pub max_batch_size: Option<usize>,
    /// batching.max_wait_ms
    #[arg(long)]
    pub max_wait_ms: Option<u64>,
    /// batching.max_queue_size
    #[arg(long)]
    pub max_queue_size: Option<usize>,
    /// logging.level
    #[arg(long)]
    pub log_level: Option<String>,
    /// logging.format
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Print the effective configuration as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
    /// GET this URL and exit 0 on a 2xx answer, 1 otherwise (container health checks).
    #[arg(long, value_name = "URL")]
    pub probe: Option<String>,
}

impl Config {
    /// Assembles file < environment < flags, then validates.
    pub fn load(cli: &Cli) -> Result<Self, StartupError> {
        let path = config_path(cli);
        let mut builder = config::Config::builder();
        if let Some(path) = &path {
            if !path.is_file() {
                return Err(StartupError::Config(format!(
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
                .try_parsing(true),
        );
        builder = apply_flags(builder, cli).map_err(|e| StartupError::Config(e.to_string()))?;
        let source = path
            .as_deref()
            .map_or("built-in defaults".to_string(), |p| p.display().to_string());
        let config: Config = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| StartupError::Config(format!("{source}: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values serde cannot: ranges and relations between keys.
    pub fn validate(&self) -> Result<(), StartupError> {
        fn positive(key: &str, ok: bool) -> Result<(), StartupError> {
            if ok {
                Ok(())
            } else {
                Err(StartupError::Config(format!(
                    "{key} must be greater than zero"
                )))
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
        positive("model.inference_workers", self.model.inference_workers > 0)?;
        positive("batching.max_batch_size", self.batching.max_batch_size > 0)?;
        positive(
            "batching.max_batch_tokens",
            self.batching.max_batch_tokens > 0,
        )?;
        positive("batching.max_queue_size", self.batching.max_queue_size > 0)?;
        positive("limits.max_body_bytes", self.limits.max_body_bytes > 0)?;
        positive(
            "limits.max_client_batch_size",
            self.limits.max_client_batch_size > 0,
        )?;
        positive("limits.max_input_chars", self.limits.max_input_chars > 0)?;
        if self.model.max_length == Some(0) {
            return Err(StartupError::Config(
                "model.max_length must be greater than zero".into(),
            ));
        }
        if self.limits.max_client_batch_size > self.batching.max_queue_size {
            return Err(StartupError::Config(format!(
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

type Builder = config::ConfigBuilder<config::builder::DefaultState>;

fn apply_flags(builder: Builder, cli: &Cli) -> Result<Builder, config::ConfigError> {
    fn set<T: Into<config::Value>>(
        b: Builder,
        key: &str,
        v: Option<T>,
    ) -> Result<Builder, config::ConfigError> {
        match v {
            Some(v) => b.set_override(key, v),
            None => Ok(b),
        }
    }
    let path_str = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let b = set(builder, "server.host", cli.host.clone())?;
    let b = set(b, "server.port", cli.port.map(i64::from))?;
    let b = set(b, "server.workers", cli.workers.map(|v| v as u64))?;
    let b = set(b, "server.timeout", cli.timeout)?;
    let b = set(b, "model.dir", path_str(&cli.model_dir))?;
    let b = set(b, "model.device", cli.device.map(|d| enum_name(&d)))?;
    let b = set(
        b,
        "batching.max_batch_size",
        cli.max_batch_size.map(|v| v as u64),
    )?;
    let b = set(b, "batching.max_wait_ms", cli.max_wait_ms)?;
    let b = set(
        b,
        "batching.max_queue_size",
        cli.max_queue_size.map(|v| v as u64),
    )?;
    let b = set(b, "logging.level", cli.log_level.clone())?;
    set(b, "logging.format", cli.log_format.map(|f| enum_name(&f)))
}

/// The serde name of a unit enum variant ("cuda", "json").
fn enum_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_yaml(yaml: &str) -> Result<Config, StartupError> {
        let dir = std::env::temp_dir().join(format!("newscls-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(format!("{}.yaml", yaml.len()));
        std::fs::write(&path, yaml).expect("write config");
        Config::load(&Cli {
            config: Some(path),
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
        let dir = std::env::temp_dir().join(format!("newscls-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("c.yaml");
        std::fs::write(&path, "server:\n  port: 9001\n  timeout: 3\n").expect("write");
        let cli = Cli {
            config: Some(path),
            port: Some(9002),
            device: Some(Device::Cpu),
            ..Cli::default()
        };
        let config = Config::load(&cli).expect("valid");
        assert_eq!(config.server.port, 9002);
        assert_eq!(config.server.timeout, 3.0);
        assert_eq!(config.model.device, Device::Cpu);
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
