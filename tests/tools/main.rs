//! Tests that need a tool outside Rust: Java for QA's JMeter plan, Chromium for the demo page,
//! schemathesis for the OpenAPI contract, qemu-user for ONNX Runtime's kernels on other x86 CPUs,
//! a container engine (Docker Engine, docker-compose, podman) for the images and deployment files,
//! the Python clients of other inference servers (huggingface_hub, tritonclient), an MLflow
//! server (traces, model registry, both also behind TLS with a private CA, made by openssl) and a
//! Kafka-protocol broker (Tansu, stream mode).
//!
//! A custom harness (libtest-mimic) so that a missing tool is reported as what it is. `make
//! test` installs every tool first; under `CI=true` a missing tool therefore means a broken
//! setup, and the test fails. Elsewhere (a developer's `cargo test` without the tools) the
//! test is reported as *ignored*, with the reason printed, never as passed.

mod browser;
mod clients;
mod containers;
mod contract;
mod jmeter;
mod kernel_paths;
mod mlflow;
mod registry;
mod shadow;
mod stream;
mod tls;
mod traces;
// Shared with the main integration binary; not every helper is used here.
#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        needs_tool(
            "jmeter::jmeter_plan_runs_against_the_server_without_errors",
            jmeter::missing(),
            jmeter::jmeter_plan_runs_against_the_server_without_errors,
        ),
        needs_tool(
            "clients::huggingface_and_triton_clients_work_unchanged",
            clients::missing(),
            clients::huggingface_and_triton_clients_work_unchanged,
        ),
        needs_tool(
            "clients::triton_grpc_client_works_with_its_defaults",
            clients::missing(),
            clients::triton_grpc_client_works_with_its_defaults,
        ),
        needs_tool(
            "containers::the_cpu_image_builds_and_runs_hardened_and_drains",
            containers::missing(),
            containers::the_cpu_image_builds_and_runs_hardened_and_drains,
        ),
        needs_tool(
            "containers::compose_scales_out_behind_nginx_with_public_routes_only",
            containers::missing(),
            containers::compose_scales_out_behind_nginx_with_public_routes_only,
        ),
        needs_tool(
            "containers::the_kubernetes_pod_spec_runs_under_podman_kube_play",
            containers::missing(),
            containers::the_kubernetes_pod_spec_runs_under_podman_kube_play,
        ),
        needs_tool(
            "containers::registry_mode_writes_only_to_the_cache_volume",
            containers::missing_with_registry(),
            containers::registry_mode_writes_only_to_the_cache_volume,
        ),
        needs_tool(
            "kernel_paths::the_cpu_variants_integer_products_are_exact_on_every_kernel_path",
            kernel_paths::missing(),
            kernel_paths::the_cpu_variants_integer_products_are_exact_on_every_kernel_path,
        ),
        needs_tool(
            "kernel_paths::the_service_scores_alike_natively_and_as_an_avx2_cpu",
            kernel_paths::missing(),
            kernel_paths::the_service_scores_alike_natively_and_as_an_avx2_cpu,
        ),
        needs_tool(
            "contract::every_operation_keeps_the_openapi_contract",
            contract::missing(),
            contract::every_operation_keeps_the_openapi_contract,
        ),
        needs_tool(
            "traces::requests_are_traced_into_an_otlp_backend",
            mlflow::missing(),
            traces::requests_are_traced_into_an_otlp_backend,
        ),
        needs_tool(
            "registry::versions_are_served_swapped_and_refused",
            mlflow::missing(),
            registry::versions_are_served_swapped_and_refused,
        ),
        needs_tool(
            "registry::wrong_credentials_are_a_clear_error",
            mlflow::missing(),
            registry::wrong_credentials_are_a_clear_error,
        ),
        needs_tool(
            "shadow::challenger_on_live_traffic_with_a_real_registry",
            mlflow::missing(),
            shadow::challenger_on_live_traffic_with_a_real_registry,
        ),
        needs_tool(
            "tls::registry_and_traces_over_tls_with_a_private_ca",
            tls::missing(),
            tls::registry_and_traces_over_tls_with_a_private_ca,
        ),
        needs_tool(
            "tls::a_self_signed_registry_certificate_is_trusted_when_named",
            tls::missing(),
            tls::a_self_signed_registry_certificate_is_trusted_when_named,
        ),
        needs_tool(
            "stream::stream_mode_end_to_end",
            stream::missing(),
            stream::stream_mode_end_to_end,
        ),
        needs_tool(
            "stream::two_consumers_in_a_group_split_the_partitions",
            stream::missing(),
            stream::two_consumers_in_a_group_split_the_partitions,
        ),
        needs_tool(
            "stream::three_replicas_share_six_partitions_and_survive_a_kill",
            stream::missing(),
            stream::three_replicas_share_six_partitions_and_survive_a_kill,
        ),
        needs_tool(
            "stream::a_dead_letter_topic_that_refuses_stops_the_consumer_visibly",
            stream::missing(),
            stream::a_dead_letter_topic_that_refuses_stops_the_consumer_visibly,
        ),
        needs_tool(
            "stream::an_overloaded_queue_is_retried_not_dead_lettered",
            stream::missing(),
            stream::an_overloaded_queue_is_retried_not_dead_lettered,
        ),
        needs_tool(
            "stream::a_killed_consumer_is_restarted_without_losing_messages",
            stream::missing(),
            stream::a_killed_consumer_is_restarted_without_losing_messages,
        ),
        needs_tool(
            "stream::the_stream_is_mirrored_to_a_shadow_challenger",
            stream::missing(),
            stream::the_stream_is_mirrored_to_a_shadow_challenger,
        ),
        needs_tool(
            "stream::a_multi_label_models_results_carry_its_labels",
            stream::missing(),
            stream::a_multi_label_models_results_carry_its_labels,
        ),
        needs_tool(
            "stream::every_front_door_drains_under_one_deadline",
            stream::missing(),
            stream::every_front_door_drains_under_one_deadline,
        ),
        needs_tool(
            "browser::demo_page_classifies_an_example_and_shows_errors_in_a_real_browser",
            browser::missing(),
            || {
                tokio::runtime::Runtime::new()
                    .expect("a tokio runtime")
                    .block_on(
                        browser::demo_page_classifies_an_example_and_shows_errors_in_a_real_browser(
                        ),
                    )
            },
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

/// A trial that runs `test` when its tool is there; otherwise fails under `CI=true` and is
/// ignored elsewhere. Panics inside `test` (failed asserts) fail the trial.
fn needs_tool(
    name: &'static str,
    missing: Option<String>,
    test: impl FnOnce() + Send + 'static,
) -> Trial {
    match missing {
        None => Trial::test(name, move || {
            test();
            Ok(())
        }),
        Some(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            Trial::test(name, move || {
                Err(Failed::from(format!(
                    "{reason}; under CI=true `make test` must have installed it"
                )))
            })
        }
        Some(reason) => {
            eprintln!("{name}: ignored: {reason}");
            Trial::test(name, || Ok(())).with_ignored_flag(true)
        }
    }
}
