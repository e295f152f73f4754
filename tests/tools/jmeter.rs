//! QA's JMeter plan, run once against the real server: every sample must pass its assertions.

use serde_json::Value;

use crate::support::{repo_path, Server, TempDir};

/// Why the JMeter test cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    let java = std::process::Command::new("java").arg("-version").output();
    match java {
        Ok(output) if output.status.success() => None,
        _ => Some("java not found (JMeter needs Java 8+)".into()),
    }
}

pub fn jmeter_plan_runs_against_the_server_without_errors() {
    // The plan checks that every request is answered, not how fast: beside the other tests on two
    // shared cores, 20 articles at a time can wait past the default 10 s, so the server's
    // timeout is a minute here (the latency figures come from `make bench`).
    let server = Server::start(&["--timeout", "60"], &[]);
    let port = server.base.rsplit(':').next().expect("port").to_string();
    let out = TempDir::new("jmeter");
    // The old system's scenario (20 threads, 1 s ramp-up), 5 loops instead of 20 to stay quick.
    let output = std::process::Command::new(repo_path("scripts/jmeter.sh"))
        .args(["-Jhost=127.0.0.1", &format!("-Jport={port}"), "-Jloops=5"])
        .env("OUT", out.path())
        .output()
        .expect("run scripts/jmeter.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "jmeter failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stats: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("report/statistics.json"))
            .expect("statistics.json"),
    )
    .expect("json");
    assert_eq!(stats["Total"]["sampleCount"], 100, "{stdout}");
    assert_eq!(stats["Total"]["errorCount"], 0, "{stdout}");
    assert!(
        out.path().join("jmeter.log").is_file(),
        "JMeter's log goes to the run's output folder"
    );
}
