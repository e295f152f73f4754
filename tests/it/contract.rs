//! Regression tests for what schemathesis found where the OpenAPI document and the server
//! disagreed (the full property-based run is tests/tools/contract.rs). Each is named after the
//! failure it pins down.

use serde_json::{json, Value};

use crate::support::Server;

async fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let response = server
        .client
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn an_array_where_an_object_is_documented_is_refused_not_read_positionally() {
    let server = Server::start(&[], &[]);
    // serde's derive builds a struct from `[null, null]`: it was answered 200.
    let (status, body) = post(
        &server,
        "/predict",
        json!({"inputs": "Oil prices rose.", "parameters": [null, null]}),
    )
    .await;
    assert_eq!(
        (status, body["error_type"].as_str()),
        (422, Some("validation")),
        "{body}"
    );
    let (status, body) = post(
        &server,
        "/classify",
        json!(["news-topic-e5-small", "a text"]),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = post(
        &server,
        "/v2/models/news-topic-e5-small/infer",
        json!({"inputs": [["text", [1], "BYTES", ["a text"]]]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("object")),
        "{body}"
    );
}

#[tokio::test]
async fn kserve_scalar_data_and_empty_inputs_are_refused_in_the_protocols_error_shape() {
    let server = Server::start(&[], &[]);
    let infer = "/v2/models/news-topic-e5-small/infer";
    // `"data": "AAA"` with `"shape": []` was accepted as one text.
    let (status, body) = post(
        &server,
        infer,
        json!({"inputs": [{"name": "text", "shape": [], "datatype": "BYTES", "data": "AAA"}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(&server, infer, json!({"inputs": []})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body.as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["error".to_string()]),
        "KServe's error body is {{\"error\": ...}}: {body}"
    );
}

#[tokio::test]
async fn a_text_of_unicode_white_space_is_blank_to_the_document_and_the_server_alike() {
    // U+0085 (NEXT LINE) is White_Space to Rust's `trim` but a visible character to JSON
    // Schema's `\S`: the document said valid, the server said empty.
    let server = Server::start(&[], &[]);
    let spec: Value = server.get_json("/openapi.json").await;
    let pattern = spec["components"]["schemas"]["PredictInputs"]["oneOf"][0]["pattern"]
        .as_str()
        .expect("a pattern")
        .to_string();
    for blank in ["\u{85}", "\u{3000}\u{a0}", " \t\n"] {
        assert!(
            blank
                .chars()
                .all(|c| pattern.contains(&format!("\\u{:04x}", c as u32))
                    || matches!(c, ' ' | '\t' | '\n')),
            "{blank:?} is blank to the pattern {pattern}"
        );
        let (status, body) = post(&server, "/predict", json!({ "inputs": blank })).await;
        assert_eq!(status, 422, "{body}");
    }
    // U+FEFF is no White_Space: a text to both.
    let (status, body) = post(&server, "/predict", json!({"inputs": "\u{feff}"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(!pattern.contains("feff"));
}

#[tokio::test]
async fn a_kserve_body_over_the_limit_is_a_413_in_the_protocols_error_shape() {
    // The raw-body extractor answered `payload reached size limit` as text/plain.
    let server = Server::start(&[], &[("NEWSCLS__LIMITS__MAX_BODY_BYTES", "1000")]);
    let response = server
        .client
        .post(server.url("/v2/models/news-topic-e5-small/infer"))
        .header("content-type", "application/json")
        .body(vec![b' '; 5000])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("a JSON body");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("1000")),
        "{body}"
    );
}

#[tokio::test]
async fn top_k_in_both_spellings_is_refused_as_the_document_says() {
    let server = Server::start(&[], &[]);
    let (status, body) = post(
        &server,
        "/predict",
        json!({"inputs": "Oil prices rose.", "top_k": 2, "parameters": {"top_k": 2}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test]
async fn every_route_documents_every_status_it_answers() {
    let server = Server::start(&[], &[]);
    let spec: Value = server.get_json("/openapi.json").await;
    let responses = |path: &str, method: &str| spec["paths"][path][method]["responses"].clone();
    let classify = [
        "200", "400", "413", "415", "422", "429", "500", "503", "504",
    ];
    for (path, method, statuses) in [
        ("/", "post", &classify[..]),
        ("/predict", "post", &classify[..]),
        ("/classify", "post", &[&classify[..], &["404"]].concat()[..]),
        (
            "/v2/models/{name}/infer",
            "post",
            &[
                "200", "400", "404", "413", "422", "429", "500", "503", "504",
            ][..],
        ),
        (
            "/admin/reload",
            "post",
            &["200", "401", "404", "409", "429", "502"][..],
        ),
        ("/readyz", "get", &["200", "503"][..]),
        ("/", "get", &["200"][..]),
    ] {
        let documented = responses(path, method);
        for status in statuses {
            assert!(
                documented[status].is_object(),
                "{method} {path}: {status} undocumented: {documented}"
            );
        }
    }
    let schemas = &spec["components"]["schemas"];
    // `"input": []` was schema-valid and refused with 422.
    assert_eq!(
        schemas["ClassifyInput"]["oneOf"][1]["minItems"], 1,
        "{}",
        schemas["ClassifyInput"]
    );
    // Output `data` items were typed as objects; the server sends strings and numbers.
    let output = schemas["OutputData"]["oneOf"].to_string();
    assert!(
        output.contains("\"string\"") && output.contains("\"number\""),
        "{output}"
    );
    assert!(
        schemas["PredictRequest"]["allOf"].is_array(),
        "the rules between fields"
    );
}

#[tokio::test]
async fn without_the_demo_page_get_root_is_not_documented() {
    let server = Server::start(&[], &[("NEWSCLS__SERVER__DEMO_PAGE", "false")]);
    let spec: Value = server.get_json("/openapi.json").await;
    assert!(
        spec["paths"]["/"]["get"].is_null(),
        "{}",
        spec["paths"]["/"]
    );
    assert!(spec["paths"]["/"]["post"].is_object());
}

#[tokio::test]
async fn the_binary_header_is_bounded_in_the_document_as_in_the_server() {
    let server = Server::start(&[], &[]);
    let spec = server.get_json("/openapi.json").await;
    let path = "/v2/models/{name}/infer";
    let parameters = spec["paths"][path]["post"]["parameters"]
        .as_array()
        .expect("parameters");
    let header = parameters
        .iter()
        .find(|p| p["name"] == "Inference-Header-Content-Length")
        .expect("the binary header is documented");
    assert_eq!(header["schema"]["minimum"], 0, "{path}");
    assert_eq!(
        header["schema"]["maximum"],
        2 * 1024 * 1024,
        "{path}: at most limits.max_body_bytes"
    );
    // Bounding it touched only that operation: no path gained an operation or a null.
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            assert!(operation.is_object(), "{method} {path}: {operation}");
            if let Some(parameters) = operation.get("parameters") {
                assert!(
                    parameters.is_array(),
                    "{method} {path}: parameters {parameters}"
                );
            }
        }
    }
    assert!(spec["paths"]["/info"].get("post").is_none());
    // What the document calls invalid, the server refuses.
    let name = server.model_name().await;
    let response = server
        .client
        .post(server.url(&format!("/v2/models/{name}/infer")))
        .header("Inference-Header-Content-Length", "9223372036854775806")
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
}
