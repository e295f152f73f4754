//! Hostile and malformed input: each case gets a defined answer (a 4xx JSON error, or a normal
//! prediction for odd but valid text), never a crash, a hang or a 5xx, and the server stays
//! ready after every one.

use serde_json::{json, Value};

use crate::support::Server;

struct Case {
    name: &'static str,
    body: Vec<u8>,
    content_type: &'static str,
    header: Option<(&'static str, &'static str)>,
    status: u16,
    /// `None` for a successful prediction.
    error_type: Option<&'static str>,
}

fn bad(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    error_type: &'static str,
) -> Case {
    Case {
        name,
        body: body.into(),
        content_type: "application/json",
        header: None,
        status,
        error_type: Some(error_type),
    }
}

fn ok(name: &'static str, body: impl Into<Vec<u8>>) -> Case {
    Case {
        name,
        body: body.into(),
        content_type: "application/json",
        header: None,
        status: 200,
        error_type: None,
    }
}

fn text(t: &str) -> String {
    json!({ "inputs": t }).to_string()
}

#[tokio::test]
async fn every_hostile_input_gets_a_defined_answer_and_the_server_stays_ready() {
    // Small limits keep the oversized cases small: 20 kB bodies, 12,000 characters per text.
    let server = Server::start(
        &[],
        &[
            ("NEWSCLS__LIMITS__MAX_BODY_BYTES", "20000"),
            ("NEWSCLS__LIMITS__MAX_INPUT_CHARS", "12000"),
        ],
    );
    let deep = format!(
        "{{\"inputs\": {}\"x\"{}}}",
        "[".repeat(3000),
        "]".repeat(3000)
    );
    let cases = vec![
        bad("malformed JSON", "{\"inputs\": ", 400, "malformed_json"),
        bad("not JSON at all", "inputs=hello", 400, "malformed_json"),
        bad("empty body", "", 400, "malformed_json"),
        bad(
            "trailing garbage",
            "{\"inputs\": \"x\"} xyz",
            400,
            "malformed_json",
        ),
        bad(
            "byte order mark",
            "\u{feff}{\"inputs\": \"x\"}",
            400,
            "malformed_json",
        ),
        bad(
            "invalid UTF-8",
            b"{\"inputs\": \"\xff\xfe\"}".to_vec(),
            400,
            "malformed_json",
        ),
        bad("deeply nested arrays", deep, 400, "malformed_json"),
        bad("body is null", "null", 422, "validation"),
        bad("body is an array", "[\"x\"]", 422, "validation"),
        bad("inputs is a number", r#"{"inputs": 5}"#, 422, "validation"),
        bad("inputs is null", r#"{"inputs": null}"#, 422, "validation"),
        bad(
            "inputs is an object",
            r#"{"inputs": {"text": "x"}}"#,
            422,
            "validation",
        ),
        bad(
            "list holds a number",
            r#"{"inputs": ["ok", 3]}"#,
            422,
            "validation",
        ),
        // TEI's batch form [["a"], ["b"]] is valid; a pair or a mix is not.
        bad(
            "list holds a text pair",
            r#"{"inputs": [["a", "b"]]}"#,
            422,
            "validation",
        ),
        bad(
            "list holds an empty list",
            r#"{"inputs": [[]]}"#,
            422,
            "validation",
        ),
        bad(
            "list mixes strings and lists",
            r#"{"inputs": ["a", ["b"]]}"#,
            422,
            "validation",
        ),
        bad(
            "unknown Hugging Face parameter",
            r#"{"inputs": "x", "parameters": {"temperature": 1}}"#,
            422,
            "validation",
        ),
        bad(
            "unknown function_to_apply",
            r#"{"inputs": "x", "parameters": {"function_to_apply": "relu"}}"#,
            422,
            "validation",
        ),
        bad(
            "unknown truncation_direction",
            r#"{"inputs": "x", "truncation_direction": "Middle"}"#,
            422,
            "validation",
        ),
        bad("missing inputs", r#"{"top_k": 1}"#, 422, "validation"),
        bad(
            "unknown field",
            r#"{"inputs": "x", "topk": 1}"#,
            422,
            "validation",
        ),
        bad(
            "duplicate field",
            r#"{"inputs": "a", "inputs": "b"}"#,
            422,
            "validation",
        ),
        bad(
            "top_k negative",
            r#"{"inputs": "x", "top_k": -1}"#,
            422,
            "validation",
        ),
        bad(
            "top_k zero",
            r#"{"inputs": "x", "top_k": 0}"#,
            422,
            "validation",
        ),
        bad(
            "top_k a string",
            r#"{"inputs": "x", "top_k": "2"}"#,
            422,
            "validation",
        ),
        bad(
            "top_k a fraction",
            r#"{"inputs": "x", "top_k": 1.5}"#,
            422,
            "validation",
        ),
        bad(
            "truncate a string",
            r#"{"inputs": "x", "truncate": "yes"}"#,
            422,
            "validation",
        ),
        bad("empty text", r#"{"inputs": ""}"#, 422, "validation"),
        bad(
            "whitespace text",
            r#"{"inputs": "  \n\t "}"#,
            422,
            "validation",
        ),
        bad("empty list", r#"{"inputs": []}"#, 422, "validation"),
        bad(
            "empty text in a list",
            r#"{"inputs": ["fine", ""]}"#,
            422,
            "validation",
        ),
        bad(
            "too many texts",
            json!({"inputs": vec!["news"; 40]}).to_string(),
            422,
            "validation",
        ),
        bad(
            "too long with truncate false",
            json!({"inputs": "word ".repeat(600), "truncate": false}).to_string(),
            422,
            "validation",
        ),
        bad(
            "too many characters",
            text(&"x ".repeat(6500)),
            422,
            "validation",
        ),
        bad(
            "body over the limit",
            text(&"word ".repeat(5000)),
            413,
            "payload_too_large",
        ),
        Case {
            content_type: "text/plain",
            ..bad(
                "wrong content type",
                r#"{"inputs": "x"}"#,
                415,
                "unsupported_media_type",
            )
        },
        Case {
            header: Some(("x-request-timeout", "soon")),
            ..bad(
                "bad timeout header",
                r#"{"inputs": "x"}"#,
                422,
                "validation",
            )
        },
        Case {
            header: Some(("x-request-timeout", "-1")),
            ..bad(
                "negative timeout header",
                r#"{"inputs": "x"}"#,
                422,
                "validation",
            )
        },
        Case {
            header: Some(("x-request-timeout", "0.001")),
            ..bad(
                "timeout header below 0.1 s",
                r#"{"inputs": "x"}"#,
                422,
                "validation",
            )
        },
        ok("NUL bytes", text("Markets\u{0}rallied\u{0}today")),
        ok(
            "control characters",
            text("\u{1}\u{7}\u{1b}[31m Stocks fell \u{8}\u{7f}"),
        ),
        ok(
            "emoji",
            text("📈📉 Stocks soared 🚀 as investors cheered 💰"),
        ),
        ok(
            "Korean",
            text("코스피 지수가 외국인 매수세에 힘입어 2% 상승 마감했다."),
        ),
        ok(
            "right-to-left",
            text("ارتفعت الأسواق المالية اليوم ‏ השווקים עלו היום"),
        ),
        ok("zero-width only", text("\u{200b}\u{200c}\u{200d}\u{feff}")),
        ok("one very long token", text(&"a".repeat(11000))),
        ok(
            "huge top_k returns every label",
            r#"{"inputs": "Oil prices rose.", "top_k": 1000}"#,
        ),
        ok(
            "surrogate-escaped emoji",
            r#"{"inputs": "\ud83d\udcc8 rally"}"#,
        ),
        Case {
            content_type: "application/json; charset=utf-8",
            ..ok("charset parameter", text("Stocks rose."))
        },
    ];
    assert!(cases.len() >= 30);
    for case in cases {
        let mut request = server
            .client
            .post(server.url("/predict"))
            .header("content-type", case.content_type);
        if let Some((name, value)) = case.header {
            request = request.header(name, value);
        }
        let response = request
            .body(case.body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(response.status().as_u16(), case.status, "{}", case.name);
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: body is not JSON: {e}", case.name));
        match case.error_type {
            Some(error_type) => {
                assert_eq!(body["error_type"], error_type, "{}: {body}", case.name);
                assert!(
                    !body["error"].as_str().unwrap_or_default().is_empty(),
                    "{}: error message",
                    case.name
                );
            }
            None => assert!(
                body[0]["label"].is_string(),
                "{}: a prediction, got {body}",
                case.name
            ),
        }
        assert_eq!(
            server.get("/readyz").await.status(),
            200,
            "still ready after {}",
            case.name
        );
    }
}

#[tokio::test]
async fn unknown_routes_get_404_and_wrong_methods_405_as_json() {
    let server = Server::start(&[], &[]);
    let response = server.get("/nope").await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error_type"],
        "not_found"
    );
    for (method, path) in [
        ("GET", "/predict"),
        ("POST", "/readyz"),
        ("DELETE", "/info"),
        ("TRACE", "/livez"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = server
            .client
            .request(method.clone(), server.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 405, "{method} {path}");
        assert!(
            response.headers().contains_key("allow"),
            "RFC 9110: 405 names the allowed methods"
        );
        assert_eq!(
            response.json::<Value>().await.expect("json")["error_type"],
            "method_not_allowed"
        );
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
