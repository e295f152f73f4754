//! The `newscls` binary: flags, configuration, logging and traces, then the app. Nothing else.

use clap::Parser;
use newscls::config::{Cli, Config};

fn main() {
    let cli = Cli::parse();
    if let Some(url) = &cli.probe {
        match newscls::probe::probe(url) {
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
    let _telemetry = match newscls::telemetry::init(&config.logging) {
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
