//! Bad input gets a clear 4xx JSON error, and the server keeps serving afterwards.

use serde_json::{json, Value};

use crate::support::Server;

struct Case {
    name: &'static str,
    body: Vec<u8>,
    content_type: &'static str,
    status: u16,
    error_type: &'static str,
}

fn case(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    error_type: &'static str,
) -> Case {
    Case {
        name,
        body: body.into(),
        content_type: "application/json",
        status,
        error_type,
    }
}

#[tokio::test]
async fn each_bad_input_gets_its_status_and_a_json_error() {
    // A small body limit so the 413 case stays small; 40 texts exceed the client batch limit of 32.
    let server = Server::start(&[], &[("NEWSCLS__LIMITS__MAX_BODY_BYTES", "20000")]);
    let long_text = "word ".repeat(5000);
    let too_many = json!({"inputs": vec!["news"; 40]}).to_string();
    let too_long_no_truncate =
        json!({"inputs": "word ".repeat(600), "truncate": false}).to_string();
    let cases = vec![
        case("malformed JSON", "{\"inputs\": ", 400, "malformed_json"),
        case("not JSON at all", "inputs=hello", 400, "malformed_json"),
        case(
            "invalid UTF-8",
            b"{\"inputs\": \"\xff\xfe\"}".to_vec(),
            400,
            "malformed_json",
        ),
        case("inputs is a number", r#"{"inputs": 5}"#, 422, "validation"),
        case("inputs is null", r#"{"inputs": null}"#, 422, "validation"),
        case(
            "list holds a number",
            r#"{"inputs": ["ok", 3]}"#,
            422,
            "validation",
        ),
        case("missing inputs", r#"{"top_k": 1}"#, 422, "validation"),
        case(
            "unknown field",
            r#"{"inputs": "x", "topk": 1}"#,
            422,
            "validation",
        ),
        case(
            "top_k negative",
            r#"{"inputs": "x", "top_k": -1}"#,
            422,
            "validation",
        ),
        case(
            "top_k zero",
            r#"{"inputs": "x", "top_k": 0}"#,
            422,
            "validation",
        ),
        case("empty text", r#"{"inputs": ""}"#, 422, "validation"),
        case(
            "whitespace text",
            r#"{"inputs": "  \n\t "}"#,
            422,
            "validation",
        ),
        case("empty list", r#"{"inputs": []}"#, 422, "validation"),
        case(
            "empty text in a list",
            r#"{"inputs": ["fine", ""]}"#,
            422,
            "validation",
        ),
        case("too many texts", too_many, 422, "validation"),
        case(
            "too long with truncate false",
            too_long_no_truncate,
            422,
            "validation",
        ),
        case(
            "body over the limit",
            json!({"inputs": long_text}).to_string(),
            413,
            "payload_too_large",
        ),
        Case {
            name: "wrong content type",
            body: br#"{"inputs": "x"}"#.to_vec(),
            content_type: "text/plain",
            status: 415,
            error_type: "unsupported_media_type",
        },
    ];
    for case in cases {
        let response = server
            .client
            .post(server.url("/predict"))
            .header("content-type", case.content_type)
            .body(case.body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), case.status, "{}", case.name);
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: body is not JSON: {e}", case.name));
        assert_eq!(body["error_type"], case.error_type, "{}: {body}", case.name);
        assert!(
            !body["error"].as_str().unwrap_or_default().is_empty(),
            "{}: error message",
            case.name
        );
        assert_eq!(
            server.get("/readyz").await.status(),
            200,
            "still ready after {}",
            case.name
        );
    }
    // And it still classifies.
    assert_eq!(
        server
            .predict(json!({"inputs": "Stocks rose."}))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_a_json_404() {
    let server = Server::start(&[], &[]);
    for response in [server.get("/nope").await, server.get("/predict").await] {
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error_type"], "not_found");
    }
}

#[tokio::test]
async fn long_text_is_truncated_by_default() {
    let server = Server::start(&[], &[]);
    let response = server
        .predict(json!({"inputs": "The markets rallied again. ".repeat(400)}))
        .await;
    assert_eq!(response.status(), 200);
}
