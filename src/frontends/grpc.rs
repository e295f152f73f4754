//! The KServe v2 protocol over gRPC (`inference.GRPCInferenceService`, proto/grpc_service.proto),
//! as `tritonclient.grpc` and KServe's clients speak it, on `server.grpc_port`.
//!
//! Same model, same [`Classifier`](crate::pipeline::classify::Classifier), same protocol
//! ([`crate::frontends::v2`], shared with the HTTP v2 routes): one `BYTES` input `text`, outputs
//! `label` (`BYTES`) and `probabilities` (`FP32`, `[texts, labels]`); the texts come from
//! `raw_input_contents` (Triton's default) or typed `bytes_contents`, and the answer comes back
//! the same way it was asked (raw if the inputs were raw). A gRPC deadline tightens the
//! request's deadline as `x-request-timeout` does; refusals map to gRPC codes in `status()`, the one place
//! for it: overload is RESOURCE_EXHAUSTED, a deadline DEADLINE_EXCEEDED, not ready UNAVAILABLE.
//! The server runs on its own threads; SIGTERM stops it accepting, and calls in flight finish
//! before the classifier shuts down. Each call has a `request` span (continuing a W3C
//! `traceparent` in the metadata) and is counted in `newscls_grpc_requests_total{method,code}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::frontends::v2::binary::decode_strings;
use crate::frontends::v2::{self, Output, ProtocolError, Selected, TensorData, INPUT};
use crate::frontends::{Drained, FrontDoor};
use crate::infra::config::Config;
use crate::infra::events::{Door, RequestCompleted};
use crate::infra::metrics::Metrics;
use crate::infra::telemetry;
use crate::pipeline::classify::{Classification, ClassifyError, ClassifyRequest, Deadline};

/// The code generated from proto/grpc_service.proto.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::model_infer_response::InferOutputTensor;
use proto::model_metadata_response::TensorMetadata;
use proto::*;

/// Why the gRPC server could not start.
#[derive(Debug, thiserror::Error)]
#[error("gRPC on {addr}: {reason}")]
pub struct GrpcError {
    addr: String,
    reason: String,
}

/// The protocol's refusals as gRPC status codes.
fn protocol_status(error: ProtocolError) -> Status {
    match error {
        ProtocolError::Invalid(message) => Status::invalid_argument(message),
        ProtocolError::NotFound(message) => Status::not_found(message),
    }
}

/// The one mapping of the classifier's refusals to gRPC status codes.
fn status(error: ClassifyError) -> Status {
    let message = error.to_string();
    match error {
        ClassifyError::Invalid(_) | ClassifyError::Tokenize(_) => Status::invalid_argument(message),
        ClassifyError::Overloaded { .. } => Status::resource_exhausted(message),
        ClassifyError::NotReady(_) => Status::unavailable(message),
        ClassifyError::Timeout(_) => Status::deadline_exceeded(message),
        ClassifyError::Inference(_) => Status::internal(message),
        ClassifyError::Cancelled => Status::cancelled(message),
        ClassifyError::NoChallenger => Status::not_found(message),
    }
}

/// The service, over the shared classifier.
pub struct InferenceService {
    classifier: Arc<crate::pipeline::classify::Classifier>,
    metrics: Arc<Metrics>,
    timeout: Duration,
    max_texts: usize,
}

impl InferenceService {
    /// The served model, or NOT_FOUND for another name or version.
    fn check_model(&self, name: &str, version: &str) -> Result<(), Status> {
        let model = self.classifier.serving();
        v2::check_model(&model.spec.name, &model.spec.version, name, Some(version))
            .map_err(protocol_status)
    }

    /// Runs `call` inside a `request` span and reports it as HTTP requests are reported.
    async fn observe<T, F>(
        &self,
        method: &'static str,
        metadata: &tonic::metadata::MetadataMap,
        call: F,
    ) -> Result<Response<T>, Status>
    where
        F: std::future::Future<Output = Result<T, Status>>,
    {
        let started = Instant::now();
        let span = tracing::info_span!("request", method = "grpc", path = method);
        telemetry::continue_trace(
            &span,
            metadata.get("traceparent").and_then(|v| v.to_str().ok()),
        );
        let trace_id = telemetry::trace_id(&span);
        let in_flight = self.metrics.request_started(Door::Grpc);
        let result = call.instrument(span).await;
        drop(in_flight);
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        self.metrics.emit(RequestCompleted {
            door: Door::Grpc,
            method: "grpc",
            path: method,
            route: method,
            status: &format!("{code:?}"),
            elapsed: started.elapsed(),
            texts: None,
            batch_size: None,
            trace_id,
        });
        result.map(Response::new)
    }

    /// The request's deadline: the server's timeout, tightened by a gRPC deadline, both counted
    /// from the call's arrival at the transport (see [`stamp_arrival`]).
    fn deadline(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        extensions: &tonic::Extensions,
    ) -> Deadline {
        let client = metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout);
        let budget = client.map_or(self.timeout, |c| c.min(self.timeout));
        match extensions.get::<Arrived>() {
            Some(Arrived(at)) => Deadline::from(*at, budget),
            None => Deadline::after(budget),
        }
    }

    async fn infer(
        &self,
        request: ModelInferRequest,
        deadline: Deadline,
    ) -> Result<ModelInferResponse, Status> {
        self.check_model(&request.model_name, &request.model_version)?;
        let (texts, raw) = input_texts(&request, self.max_texts)?;
        let wanted = requested_outputs(&request, raw)?;
        let classification = self
            .classifier
            .classify(
                ClassifyRequest::new(texts, deadline),
                std::future::pending(),
            )
            .await
            .map_err(status)?;
        Ok(answer(request.id, classification, &wanted))
    }
}

/// When a call reached the transport.
#[derive(Debug, Clone, Copy)]
struct Arrived(Instant);

/// Stamps each call with the instant it reached the service, so that a gRPC deadline runs out
/// in the classifier no later than in tonic's transport. Tonic enforces `grpc-timeout` itself,
/// with a timer its `GrpcTimeout` layer starts right after handing the call to the layers inside
/// it, and answers CANCELLED ("Timeout expired") when that timer wins; clients expect
/// DEADLINE_EXCEEDED, which the classifier's own timer answers. This interceptor is such an
/// inner layer (`Server::layer`) and runs as the call is handed over, so the classifier's timer,
/// counted from this stamp, is due no later than tonic's; and tonic polls the call before its
/// timer.
fn stamp_arrival(mut request: Request<()>) -> Result<Request<()>, Status> {
    request.extensions_mut().insert(Arrived(Instant::now()));
    Ok(request)
}

/// A `grpc-timeout` value: digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The texts of the one `BYTES` input, checked against its shape, and whether they came raw.
fn input_texts(
    request: &ModelInferRequest,
    max_texts: usize,
) -> Result<(Vec<String>, bool), Status> {
    let input =
        v2::the_input(&request.inputs, |i| &i.name, |i| &i.datatype).map_err(protocol_status)?;
    let (texts, raw) = match (request.raw_input_contents.as_slice(), &input.contents) {
        ([raw], None) => (
            decode_strings(INPUT, raw, max_texts).map_err(|e| protocol_status(e.into()))?,
            true,
        ),
        ([], Some(contents)) => {
            if contents.bytes_contents.len() > max_texts {
                return Err(Status::invalid_argument(format!(
                    "input {INPUT:?} holds more than {max_texts} elements"
                )));
            }
            let texts = contents
                .bytes_contents
                .iter()
                .enumerate()
                .map(|(index, bytes)| {
                    String::from_utf8(bytes.clone()).map_err(|_| {
                        Status::invalid_argument(format!(
                            "element {index} of {INPUT:?} is not UTF-8"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            (texts, false)
        }
        _ => {
            return Err(Status::invalid_argument(format!(
            "input {INPUT:?} needs its data either in contents or in one raw_input_contents entry"
        )))
        }
    };
    v2::check_shape(&input.shape, texts.len()).map_err(protocol_status)?;
    Ok((texts, raw))
}

/// The outputs asked for, all when none are named; they go back the way the input came.
fn requested_outputs(request: &ModelInferRequest, raw: bool) -> Result<Vec<Selected>, Status> {
    let named = request.outputs.iter().map(|o| (o.name.as_str(), None));
    v2::select_outputs(named, raw).map_err(protocol_status)
}

fn answer(id: String, classification: Classification, wanted: &[Selected]) -> ModelInferResponse {
    let mut outputs = Vec::new();
    let mut raw_output_contents = Vec::new();
    for tensor in v2::output_tensors(&classification, wanted) {
        let output = tensor.selected.output;
        // Raw bytes or typed contents, whichever is sent: never both.
        let contents = match tensor.selected.binary {
            true => {
                raw_output_contents.push(tensor.data.to_bytes());
                None
            }
            false => Some(match tensor.data {
                TensorData::Labels(labels) => InferTensorContents {
                    bytes_contents: labels.into_iter().map(String::into_bytes).collect(),
                    ..Default::default()
                },
                TensorData::Scores(scores) => InferTensorContents {
                    fp32_contents: scores,
                    ..Default::default()
                },
            }),
        };
        outputs.push(InferOutputTensor {
            name: output.name().to_string(),
            datatype: output.datatype().to_string(),
            shape: tensor.shape.iter().map(|&d| d as i64).collect(),
            parameters: Default::default(),
            contents,
        });
    }
    ModelInferResponse {
        model_name: classification.model.name.clone(),
        model_version: classification.model.version.clone(),
        id,
        parameters: Default::default(),
        outputs,
        raw_output_contents,
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        request: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        self.observe("ServerLive", request.metadata(), async {
            Ok(ServerLiveResponse { live: true })
        })
        .await
    }

    async fn server_ready(
        &self,
        request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = self.classifier.readiness().is_ok();
        self.observe("ServerReady", request.metadata(), async {
            Ok(ServerReadyResponse { ready })
        })
        .await
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let (metadata, _, body) = request.into_parts();
        self.observe("ModelReady", &metadata, async {
            self.check_model(&body.name, &body.version)?;
            Ok(ModelReadyResponse {
                ready: self.classifier.readiness().is_ok(),
            })
        })
        .await
    }

    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        self.observe("ServerMetadata", request.metadata(), async {
            Ok(ServerMetadataResponse {
                name: v2::SERVER_NAME.into(),
                version: env!("CARGO_PKG_VERSION").into(),
                extensions: Vec::new(),
            })
        })
        .await
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let (metadata, _, body) = request.into_parts();
        self.observe("ModelMetadata", &metadata, async {
            self.check_model(&body.name, &body.version)?;
            let model = self.classifier.serving();
            let tensor = |name: &str, datatype: &str, shape: Vec<i64>| TensorMetadata {
                name: name.into(),
                datatype: datatype.into(),
                shape,
            };
            let (name, datatype, shape) = v2::input_metadata();
            Ok(ModelMetadataResponse {
                name: model.spec.name.clone(),
                versions: vec![model.spec.version.clone()],
                platform: v2::PLATFORM.into(),
                inputs: vec![tensor(name, datatype, shape)],
                outputs: Output::ALL
                    .into_iter()
                    .map(|o| {
                        tensor(
                            o.name(),
                            o.datatype(),
                            o.metadata_shape(model.spec.labels.len()),
                        )
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let (metadata, extensions, body) = request.into_parts();
        let deadline = self.deadline(&metadata, &extensions);
        self.observe("ModelInfer", &metadata, self.infer(body, deadline))
            .await
    }
}

/// A running gRPC server: [`GrpcServer::stopper`] stops it accepting (at the shutdown signal),
/// [`GrpcServer::wait`] lets the calls in flight finish.
pub struct GrpcServer {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
    pub addr: SocketAddr,
}

impl FrontDoor for GrpcServer {
    fn name(&self) -> &'static str {
        "grpc"
    }

    /// Stops accepting now; finishes once the calls in flight have been answered (the server's
    /// thread ends).
    fn stop_accepting(self: Box<Self>) -> Drained {
        let _ = self.stop.send(true);
        let thread = self.thread;
        Box::pin(async move {
            while !thread.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }
}

/// Binds `server.host:port` and serves on a runtime of its own (one thread per core, like the
/// HTTP workers), so gRPC never runs on the HTTP server's threads.
pub fn start(
    config: &Config,
    port: u16,
    classifier: Arc<crate::pipeline::classify::Classifier>,
    metrics: Arc<Metrics>,
) -> Result<GrpcServer, GrpcError> {
    let addr = format!("{}:{port}", config.server.host);
    let error = |reason: String| GrpcError {
        addr: addr.clone(),
        reason,
    };
    let listener = std::net::TcpListener::bind(&addr).map_err(|e| error(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| error(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| error(e.to_string()))?;
    let request_timeout = Duration::from_secs_f64(config.server.timeout);
    let max_answer = max_answer_bytes(
        config.limits.max_client_batch_size,
        &classifier.serving().spec.labels,
    );
    let service = InferenceService {
        classifier,
        metrics,
        timeout: request_timeout,
        max_texts: config.limits.max_client_batch_size,
    };
    let max_body = config.limits.max_body_bytes;
    let limits = config.server.grpc.clone();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("grpc")
        .enable_all()
        .build()
        .map_err(|e| error(e.to_string()))?;
    let thread = std::thread::Builder::new()
        .name("grpc-server".into())
        .spawn(move || {
            runtime.block_on(async move {
                let incoming = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => tokio_stream::wrappers::TcpListenerStream::new(listener),
                    Err(e) => {
                        tracing::error!(error = %e, "gRPC listener");
                        return;
                    }
                };
                let service = GrpcInferenceServiceServer::new(service)
                    .max_decoding_message_size(max_body)
                    .max_encoding_message_size(max_answer);
                let seconds = |s: f64| (s > 0.0).then(|| Duration::from_secs_f64(s));
                let mut builder = tonic::transport::Server::builder()
                    .max_concurrent_streams(limits.max_concurrent_streams)
                    .concurrency_limit_per_connection(limits.concurrency_per_connection)
                    .http2_max_pending_accept_reset_streams(Some(limits.max_pending_reset_streams))
                    .http2_max_local_error_reset_streams(Some(limits.max_local_error_reset_streams))
                    .http2_keepalive_interval(seconds(limits.keepalive_interval))
                    .http2_keepalive_timeout(seconds(limits.keepalive_timeout))
                    // A call past the request deadline (plus a grace for the answer to be
                    // written) is cancelled by the transport too.
                    .timeout(request_timeout + Duration::from_secs(5));
                if let Some(age) = seconds(limits.max_connection_age) {
                    builder = builder
                        .max_connection_age(age)
                        .max_connection_age_grace(request_timeout + Duration::from_secs(5));
                }
                let served = builder
                    .layer(tonic::service::InterceptorLayer::new(stamp_arrival))
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "gRPC server failed");
                }
            })
        })
        .map_err(|e| error(e.to_string()))?;
    Ok(GrpcServer {
        stop,
        thread,
        addr: bound,
    })
}

/// The largest answer a request within the limits can be given: every text's label and
/// probabilities, both as raw bytes and as typed contents, with room for framing. A label
/// change on a model swap may add labels: four times the serving model's count is allowed for.
fn max_answer_bytes(max_texts: usize, labels: &[String]) -> usize {
    let longest = labels.iter().map(String::len).max().unwrap_or(0);
    let per_text = 2 * (4 * labels.len() * 4) + 2 * (longest + 8);
    64 * 1024 + max_texts * per_text * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        assert_eq!(grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("5000u"), Some(Duration::from_millis(5)));
        for bad in ["", "m", "10x", "-1S", "1.5S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn each_refusal_has_its_grpc_code() {
        let overloaded = ClassifyError::Overloaded {
            queued: 1,
            retry_after: Duration::from_secs(1),
        };
        assert_eq!(status(overloaded).code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status(ClassifyError::Timeout(1.0)).code(),
            tonic::Code::DeadlineExceeded
        );
        assert_eq!(
            status(ClassifyError::NotReady("draining")).code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            status(ClassifyError::Invalid("x".into())).code(),
            tonic::Code::InvalidArgument
        );
    }
}
