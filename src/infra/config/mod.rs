//! One typed configuration, assembled from three layers: the YAML file < environment variables
//! (`NEWSCLS__SECTION__KEY`) < command-line flags.
//!
//! The file comes from `--config`, else `NEWSCLS_CONFIG`, else `config/default.yaml` in the
//! working directory or the installation; every key has a built-in default, so a partial file is
//! fine. A relative path resolves against where it was written ([`paths`]): the working directory
//! for flags and variables, the file's directory for the file, the installation for defaults.
//! Unknown keys and invalid values stop startup with a message that names the key: a typo must
//! never be silently ignored (the service this one replaces ignored its timeout setting that
//! way).

mod batching;
mod cli;
mod logging;
mod model;
pub mod paths;
mod server;
mod shadow;
mod stream;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use paths::{Origin, SHIPPED_CONFIG};

pub use batching::{BatchingConfig, LimitsConfig};
pub use cli::{ClassifyArgs, Cli, Command, EvalArgs, FileFormat};
pub use logging::{LogFormat, LoggingConfig};
pub use model::{DeviceChoice, ModelConfig, RescoreChoice};
pub use server::{GrpcLimits, ServerConfig, MIN_ADMIN_TOKEN_BYTES};
pub use shadow::ShadowConfig;
pub use stream::{KafkaProperties, StreamConfig};

/// Prefix of environment overrides: `NEWSCLS__SERVER__PORT=9000`.
pub const ENV_PREFIX: &str = "NEWSCLS";

/// Environment variable naming the config file, like `BENTOML_CONFIG` in the old deployment.
pub const CONFIG_PATH_ENV: &str = "NEWSCLS_CONFIG";

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
        // The file is read once: as the bottom layer, and to learn which paths it sets.
        let file = match &path {
            Some(path) if !path.is_file() => {
                return Err(ConfigError(format!(
                    "config file {} not found",
                    path.display()
                )))
            }
            Some(path) => Some(
                config::Config::builder()
                    .add_source(config::File::from(path.as_path()).format(config::FileFormat::Yaml))
                    .build()
                    .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?,
            ),
            None => None,
        };
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(env);
        let typed_env: BTreeSet<String> = config::Source::collect(&environment)
            .map_err(|e| ConfigError(e.to_string()))?
            .into_keys()
            .collect();
        let overrides = cli.overrides();
        let mut builder = config::Config::builder();
        if let Some(file) = &file {
            builder = builder.add_source(file.clone());
        }
        builder = builder.add_source(environment);
        for (key, value) in &overrides {
            builder = builder
                .set_override(*key, value.clone())
                .map_err(|e| ConfigError(e.to_string()))?;
        }
        let source = path
            .as_deref()
            .map_or("built-in defaults".to_string(), |p| p.display().to_string());
        let mut config: Config = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError(format!("{source}: {e}")))?;
        let origin = |key: &str| {
            if overrides.iter().any(|(k, _)| *k == key) || typed_env.contains(key) {
                Origin::Typed
            } else if file.as_ref().is_some_and(|f| f.get_string(key).is_ok()) {
                Origin::File(path.as_deref().expect("a file layer has a path"))
            } else {
                Origin::Default
            }
        };
        config.model.dir = paths::resolve(&config.model.dir, origin("model.dir"));
        config.model.cache_dir = paths::resolve(&config.model.cache_dir, origin("model.cache_dir"));
        if let Some(library) = &config.model.onnxruntime_library {
            config.model.onnxruntime_library =
                Some(paths::resolve(library, origin("model.onnxruntime_library")));
        }
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

/// The config file: `--config`, else `NEWSCLS_CONFIG`, else `config/default.yaml` in the
/// working directory, else the installation's.
fn config_path(cli: &Cli) -> Option<PathBuf> {
    cli.config
        .clone()
        .or_else(|| {
            std::env::var_os(CONFIG_PATH_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            [
                PathBuf::from(SHIPPED_CONFIG),
                paths::in_installation(Path::new(SHIPPED_CONFIG)),
            ]
            .into_iter()
            .find(|p| p.is_file())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::device::Device;
    use clap::Parser;

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
                // The file layer is the working directory's config/default.yaml (cargo test runs
                // in the repository): its path resolves against its folder.
                cache_dir: PathBuf::from("config/../.cache/models"),
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
        // The file's paths resolve against its folder (config/), the defaults' against the
        // installation (the repository): both must name the same places.
        let cli = Cli {
            config: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED_CONFIG)),
            ..Default::default()
        };
        let mut from_file =
            Config::load_with_env(&cli, Some(Default::default())).expect("default.yaml loads");
        let mut defaults = Config::default();
        for config in [&mut from_file, &mut defaults] {
            config.model.dir = lexical(&paths::resolve(&config.model.dir, Origin::Default));
            config.model.cache_dir =
                lexical(&paths::resolve(&config.model.cache_dir, Origin::Default));
        }
        assert_eq!(from_file, defaults);
    }

    /// `a/b/../c` -> `a/c`, without touching the disk.
    fn lexical(path: &Path) -> PathBuf {
        let mut out = PathBuf::new();
        for part in path.components() {
            match part {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        out
    }

    #[test]
    fn a_relative_path_resolves_against_where_it_was_written() {
        let file = TempYaml::new("model:\n  dir: ../m\n  cache_dir: c\n");
        let folder = file.0.parent().expect("a folder").to_path_buf();
        let cli = Cli {
            config: Some(file.0.clone()),
            ..Default::default()
        };
        let config = Config::load_with_env(&cli, Some(Default::default())).expect("loads");
        assert_eq!(
            config.model.dir,
            folder.join("../m"),
            "the file's: its folder"
        );
        assert_eq!(config.model.cache_dir, folder.join("c"));
        let env = [("NEWSCLS__MODEL__CACHE_DIR".to_string(), "typed".to_string())];
        let cli = Cli {
            config: Some(file.0.clone()),
            model_dir: Some(PathBuf::from("flag")),
            ..Default::default()
        };
        let config = Config::load_with_env(&cli, Some(env.into_iter().collect())).expect("loads");
        assert_eq!(
            config.model.dir,
            PathBuf::from("flag"),
            "a flag's: the working directory"
        );
        assert_eq!(
            config.model.cache_dir,
            PathBuf::from("typed"),
            "a variable's too"
        );
    }
}
