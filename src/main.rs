//! The `newscls` binary: flags, configuration, logging and traces, then the app. Nothing else.

use clap::Parser;
use newscls::files::{self, Outcome};
use newscls::infra::config::{Cli, Command, Config};

fn main() {
    let cli = Cli::parse();
    if let Some(url) = &cli.probe {
        match newscls::infra::probe::probe(url) {
            Ok(status) if (200..300).contains(&status) => std::process::exit(0),
            Ok(status) => fail(&format!("{url} answered {status}")),
            Err(e) => fail(&format!("{url}: {e}")),
        }
    }
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(e) => fail(&e),
    };
    if cli.print_config {
        println!(
            "{}",
            serde_json::to_string_pretty(&config).unwrap_or_default()
        );
        return;
    }
    match &cli.command {
        None => serve(config),
        Some(Command::Classify(args)) => {
            let _telemetry = quiet_logs(&config);
            match files::classify(&config, args) {
                Ok(Outcome::Done { errors }) if errors > 0 && args.fail_on_error => {
                    std::process::exit(2)
                }
                Ok(Outcome::Done { .. }) => {}
                // The shell's convention for a process stopped by a signal.
                Ok(Outcome::Interrupted(signal)) => std::process::exit(128 + signal),
                Err(e) => fail(&e),
            }
        }
        Some(Command::Eval(args)) => {
            let _telemetry = quiet_logs(&config);
            if let Err(e) = files::eval::eval(&config, args) {
                fail(&e);
            }
        }
    }
}

/// Files commands print their own progress: the service's log lines would only interleave with
/// it, so only warnings and errors are logged unless `logging.level` says otherwise.
fn quiet_logs(config: &Config) -> newscls::infra::telemetry::Telemetry {
    let mut logging = config.logging.clone();
    if logging.level == "info" {
        logging.level = "warn".into();
    }
    match newscls::infra::telemetry::init(&logging) {
        Ok(telemetry) => telemetry,
        Err(e) => fail(&e),
    }
}

fn serve(config: Config) {
    let _telemetry = match newscls::infra::telemetry::init(&config.logging) {
        Ok(telemetry) => telemetry,
        Err(e) => fail(&e),
    };
    tracing::info!(config = %serde_json::to_string(&config).unwrap_or_default(), "effective configuration");
    if let Err(e) = actix_web::rt::System::new().block_on(newscls::app::run(config)) {
        tracing::error!(error = %e, "startup failed");
        fail(&e);
    }
}

fn fail(error: &dyn std::fmt::Display) -> ! {
    eprintln!("newscls: error: {error}");
    std::process::exit(1);
}
