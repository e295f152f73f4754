//! The same pipeline behind other servers' request shapes: vLLM's `/classify`, the Open
//! Inference Protocol (KServe v2), and Hugging Face's / TEI's forms of `/predict`. (The real
//! Python clients of these protocols run in tests/tools.)

use serde_json::{json, Value};

use crate::support::Server;

const SPORT: &str =
    "The striker scored twice as the home side won the cup final in front of 60,000 fans.";
const BUSINESS: &str =
    "Shares of the carmaker fell 5% after it cut its profit forecast, citing weaker demand in Europe.";

/// label -> score from /predict for each text, and the labels in model order from /info.
async fn reference(server: &Server, texts: &[&str]) -> (Vec<Vec<(String, f64)>>, Vec<String>) {
    let answers: Vec<Vec<Value>> = server
        .predict(json!({ "inputs": texts }))
        .await
        .json()
        .await
        .expect("json");
    let labels: Vec<String> = server.get_json("/info").await["model"]["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l.as_str().expect("label").to_string())
        .collect();
    let scores = answers
        .iter()
        .map(|ranked| {
            labels
                .iter()
                .map(|label| {
                    let score = ranked
                        .iter()
                        .find(|s| s["label"] == label.as_str())
                        .map(|s| s["score"].as_f64().expect("score"))
                        .expect("every label is scored");
                    (label.clone(), score)
                })
                .collect()
        })
        .collect();
    (scores, labels)
}

fn top(scores: &[(String, f64)]) -> &str {
    &scores
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("labels")
        .0
}

#[tokio::test]
async fn classify_matches_predict_in_vllm_shape() {
    let server = Server::start(&[], &[]);
    let (expected, labels) = reference(&server, &[SPORT, BUSINESS]).await;
    let name = server.get_json("/info").await["model"]["name"].clone();
    let response = server
        .client
        .post(server.url("/classify"))
        .json(&json!({"model": name, "input": [SPORT, BUSINESS]}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], name);
    assert!(body["id"].as_str().expect("id").starts_with("classify-"));
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    for (index, (item, want)) in data.iter().zip(&expected).enumerate() {
        assert_eq!(item["index"], index);
        assert_eq!(item["object"], "classify");
        assert_eq!(item["num_classes"], labels.len());
        assert_eq!(item["label"], top(want));
        let probs = item["probs"].as_array().expect("probs");
        for (p, (_, score)) in probs.iter().zip(want) {
            assert!((p.as_f64().expect("prob") - score).abs() < 1e-6);
        }
    }
    assert_eq!(data[0]["label"], "sport");
    assert_eq!(data[1]["label"], "business");
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().expect("tokens") > 20);
    assert_eq!(usage["total_tokens"], usage["prompt_tokens"]);
    assert_eq!(usage["completion_tokens"], 0);

    let one = server
        .client
        .post(server.url("/classify"))
        .json(&json!({"input": SPORT}))
        .send()
        .await
        .expect("request");
    let one: Value = one.json().await.expect("json");
    assert_eq!(one["data"][0]["label"], "sport");
    let wrong = server
        .client
        .post(server.url("/classify"))
        .json(&json!({"model": "gpt-4", "input": SPORT}))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 404);
}

#[tokio::test]
async fn kserve_v2_infer_metadata_and_errors() {
    let server = Server::start(&[], &[]);
    let info = server.get_json("/info").await;
    let name = info["model"]["name"].as_str().expect("name").to_string();
    let version = info["model"]["version"]
        .as_str()
        .expect("version")
        .to_string();
    assert_eq!(
        server.get_json("/v2").await["extensions"],
        json!(["binary_tensor_data"])
    );
    assert_eq!(server.get("/v2/health/live").await.status(), 200);
    assert_eq!(server.get("/v2/health/ready").await.status(), 200);
    assert_eq!(
        server
            .get(&format!("/v2/models/{name}/ready"))
            .await
            .status(),
        200
    );
    let meta = server.get_json(&format!("/v2/models/{name}")).await;
    assert_eq!(meta["versions"], json!([version]));
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "text", "datatype": "BYTES", "shape": [-1]})
    );

    let (expected, labels) = reference(&server, &[SPORT, BUSINESS]).await;
    let infer = |body: Value| {
        server
            .client
            .post(server.url(&format!("/v2/models/{name}/infer")))
            .json(&body)
            .send()
    };
    let response = infer(json!({
        "id": "r1",
        "inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [[SPORT], [BUSINESS]]}]
    }))
    .await
    .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["model_name"], name.as_str());
    assert_eq!(body["model_version"], version.as_str());
    assert_eq!(body["id"], "r1");
    let outputs = body["outputs"].as_array().expect("outputs");
    assert_eq!(outputs[0]["name"], "label");
    assert_eq!(outputs[0]["data"], json!(["sport", "business"]));
    assert_eq!(outputs[1]["name"], "probabilities");
    assert_eq!(outputs[1]["shape"], json!([2, labels.len()]));
    let flat: Vec<f64> = expected.iter().flatten().map(|(_, s)| *s).collect();
    for (got, want) in outputs[1]["data"]
        .as_array()
        .expect("data")
        .iter()
        .zip(&flat)
    {
        assert!((got.as_f64().expect("f32") - want).abs() < 1e-6);
    }

    // Errors in the protocol's form: {"error": "..."} only.
    let cases = [
        (
            json!({"inputs": [{"name": "txt", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}),
            400,
        ),
        (
            json!({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a"]}]}),
            400,
        ),
        (
            // 2^62 x 4 wraps to 0 in unchecked arithmetic, which matches no data at all.
            json!({"inputs": [{"name": "text", "shape": [4611686018427387904_i64, 4], "datatype": "BYTES", "data": []}]}),
            400,
        ),
        (
            json!({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}),
            400,
        ),
        (
            json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["  "]}]}),
            422,
        ),
        (json!({"inputs": []}), 400),
    ];
    for (body, status) in cases {
        let response = infer(body.clone()).await.expect("request");
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.expect("json");
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{error}"
        );
        assert_eq!(error.as_object().map(|o| o.len()), Some(1), "{error}");
    }
    let unknown = server
        .client
        .post(server.url("/v2/models/resnet/infer"))
        .json(&json!({"inputs": []}))
        .send()
        .await
        .expect("request");
    assert_eq!(unknown.status(), 404);
    let binary = server
        .client
        .post(server.url(&format!("/v2/models/{name}/infer")))
        .header("Inference-Header-Content-Length", "10")
        .body("0123456789")
        .send()
        .await
        .expect("request");
    assert_eq!(binary.status(), 400);
    let error: Value = binary.json().await.expect("json");
    assert!(
        error["error"]
            .as_str()
            .expect("error")
            .contains("not a valid inference request"),
        "{error}"
    );
}

/// BYTES elements as the binary extension frames them: a 4-byte little-endian length each.
fn bytes_tensor(texts: &[&str]) -> Vec<u8> {
    texts
        .iter()
        .flat_map(|t| {
            let mut element = (t.len() as u32).to_le_bytes().to_vec();
            element.extend_from_slice(t.as_bytes());
            element
        })
        .collect()
}

#[tokio::test]
async fn kserve_binary_tensors_both_ways_and_hostile_framing_is_a_400() {
    let server = Server::start(&[], &[]);
    let info = server.get_json("/info").await;
    let name = info["model"]["name"].as_str().expect("name").to_string();
    let labels = info["model"]["labels"].as_array().expect("labels").len();
    assert_eq!(
        server.get_json("/v2").await["extensions"],
        json!(["binary_tensor_data"])
    );
    let (expected, _) = reference(&server, &[SPORT, BUSINESS]).await;
    let send = |header: Option<String>, body: Vec<u8>| {
        let mut request = server
            .client
            .post(server.url(&format!("/v2/models/{name}/infer")))
            .header("content-type", "application/octet-stream")
            .body(body);
        if let Some(header) = header {
            request = request.header("Inference-Header-Content-Length", header);
        }
        request.send()
    };
    let frame = |json: Value, tail: &[u8]| {
        let mut body = json.to_string().into_bytes();
        let length = body.len();
        body.extend_from_slice(tail);
        (length.to_string(), body)
    };
    // tritonclient's defaults: binary input, every output in binary.
    let tensor = bytes_tensor(&[SPORT, BUSINESS]);
    let (length, body) = frame(
        json!({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                           "parameters": {"binary_data_size": tensor.len()}}],
               "parameters": {"binary_data_output": true}}),
        &tensor,
    );
    let response = send(Some(length), body).await.expect("request");
    assert_eq!(response.status(), 200);
    let json_length: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .expect("text")
        .parse()
        .expect("a length");
    let body = response.bytes().await.expect("body");
    let answer: Value = serde_json::from_slice(&body[..json_length]).expect("JSON header");
    let mut tail = &body[json_length..];
    let mut take = |output: &Value| {
        let size = output["parameters"]["binary_data_size"]
            .as_u64()
            .expect("size") as usize;
        assert!(output.get("data").is_none(), "{output}");
        let (bytes, rest) = tail.split_at(size);
        tail = rest;
        bytes.to_vec()
    };
    let label_bytes = take(&answer["outputs"][0]);
    let probability_bytes = take(&answer["outputs"][1]);
    assert!(tail.is_empty(), "nothing after the outputs");
    let expected_labels: Vec<&str> = expected
        .iter()
        .map(|row| {
            row.iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(label, _)| label.as_str())
                .expect("scored")
        })
        .collect();
    assert_eq!(label_bytes, bytes_tensor(&expected_labels));
    let probabilities: Vec<f32> = probability_bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    assert_eq!(probabilities.len(), 2 * labels);
    for (row, scores) in probabilities.chunks(labels).zip(&expected) {
        for (got, (_, want)) in row.iter().zip(scores) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    // Hostile framing: each a 400 with the protocol's error body; the server keeps answering.
    let header_json = |size: usize| {
        json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                           "parameters": {"binary_data_size": size}}]})
    };
    let one = bytes_tensor(&[SPORT]);
    let cases: Vec<(&str, Option<String>, Vec<u8>)> = vec![
        (
            "header length past the body",
            Some("100000".into()),
            b"{}".to_vec(),
        ),
        ("negative header length", Some("-1".into()), b"{}".to_vec()),
        (
            "binary_data_size past the body",
            {
                let (l, _) = frame(header_json(one.len() + 10), &one);
                Some(l)
            },
            frame(header_json(one.len() + 10), &one).1,
        ),
        (
            "an element length past its tensor",
            {
                let (l, _) = frame(header_json(8), &[]);
                Some(l)
            },
            frame(header_json(8), &[200, 0, 0, 0, b'a', b'b', b'c', b'd']).1,
        ),
        (
            "an overflowing element length",
            {
                let (l, _) = frame(header_json(5), &[]);
                Some(l)
            },
            frame(header_json(5), &[0xff, 0xff, 0xff, 0xff, b'a']).1,
        ),
        (
            "bytes after the last tensor",
            {
                let (l, _) = frame(header_json(one.len()), &[]);
                Some(l)
            },
            frame(header_json(one.len()), &[&one[..], b"extra"].concat()).1,
        ),
        (
            "an element that is not UTF-8",
            {
                let (l, _) = frame(header_json(6), &[]);
                Some(l)
            },
            frame(header_json(6), &[2, 0, 0, 0, 0xc3, 0x28]).1,
        ),
    ];
    for (case, header, body) in cases {
        let response = send(header, body).await.expect("request");
        assert_eq!(response.status(), 400, "{case}");
        let error: Value = response.json().await.expect("json");
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{case}: {error}"
        );
        println!("kserve binary: {case}: {}", error["error"]);
    }
    let response = server.predict(json!({"inputs": SPORT})).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn hugging_face_and_tei_request_forms() {
    let server = Server::start(&[], &[]);
    // The Hugging Face Inference API shape, at POST /: a list of one ranked list.
    let response = server
        .client
        .post(server.url("/"))
        .json(&json!({"inputs": SPORT, "parameters": {"top_k": 2}}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Vec<Vec<Value>> = response.json().await.expect("a list of lists");
    assert_eq!(body.len(), 1);
    assert_eq!(body[0].len(), 2);
    assert_eq!(body[0][0]["label"], "sport");
    // sigmoid scores each label alone: they need not sum to 1; raw scores are logits.
    let sigmoid: Vec<Vec<Value>> = server
        .predict(json!({"inputs": SPORT, "parameters": {"function_to_apply": "sigmoid"}}))
        .await
        .json()
        .await
        .expect("json");
    let sum: f64 = sigmoid[0]
        .iter()
        .map(|s| s["score"].as_f64().expect("score"))
        .sum();
    assert!((sum - 1.0).abs() > 0.01, "sigmoid scores sum to {sum}");
    let raw: Vec<Value> = server
        .predict(json!({"inputs": SPORT, "raw_scores": true}))
        .await
        .json()
        .await
        .expect("json");
    assert!(raw
        .iter()
        .any(|s| s["score"].as_f64().expect("score") < 0.0
            || s["score"].as_f64().expect("score") > 1.0));
    assert_eq!(raw[0]["label"], "sport", "ranking is the same on logits");
    // TEI's batch form.
    let batch: Vec<Vec<Value>> = server
        .predict(json!({"inputs": [[SPORT], [BUSINESS]]}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (batch[0][0]["label"].as_str(), batch[1][0]["label"].as_str()),
        (Some("sport"), Some("business"))
    );
    // Left truncation keeps the end: a sport opening padded with business text at the end.
    let long = format!("{} {}", SPORT.repeat(20), BUSINESS.repeat(3));
    let left: Vec<Value> = server
        .predict(json!({"inputs": long, "truncation_direction": "Left"}))
        .await
        .json()
        .await
        .expect("json");
    let right: Vec<Value> = server
        .predict(json!({"inputs": long}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(right[0]["label"], "sport");
    assert_eq!(left[0]["label"], "business");
}
