//! The command line: the flags that set config keys (the top layer) and the subcommands.

use clap::Parser;
use serde::Serialize;
use std::path::PathBuf;

use super::{DeviceChoice, LogFormat, RescoreChoice};

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
            pub(super) fn overrides(&self) -> Vec<(&'static str, config::Value)> {
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
    /// Also fit the calibration temperature on these rows (use held-out data, e.g. the
    /// validation split): the one that makes the scores' likelihood of the true labels highest,
    /// for `calibration.temperature` in the model's config.json
    #[arg(long)]
    pub fit_temperature: bool,
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
    rescore: RescoreChoice => "model.rescore",
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
