//! The module graph keeps the architecture drawn by `src/`'s folders. Read from the source, so a
//! new `use` that breaks a rule fails here with the offending path:
//! - no import cycle between modules (`pipeline::classify`, `frontends::http`, `app`, ...);
//! - a layer imports only from itself and the layers below it: `infra` < `pipeline` <
//!   `lifecycle` < `service` < the ways in (`frontends`, `files`) < `app`;
//! - front doors are peers: HTTP, gRPC and the stream never import each other (what HTTP and
//!   gRPC share, the Open Inference Protocol, is `frontends::v2`);
//! - HTTP (actix-web) stays in `frontends::http`, `app` and `main`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::support::repo_path;

/// The layers, lowest first. A module may import from its own layer and the ones before it.
const LAYERS: [&[&str]; 6] = [
    &["infra"],
    &["pipeline"],
    &["lifecycle"],
    &["service"],
    &["frontends", "files"],
    &["app", "lib", "main"],
];

/// Layers whose children are modules of their own in the graph (`pipeline::classify`).
const FOLDER_LAYERS: [&str; 4] = ["infra", "pipeline", "lifecycle", "frontends"];

/// The front doors: peers that never import each other.
const DOORS: [&str; 3] = ["frontends::http", "frontends::grpc", "frontends::stream"];

/// The graph node a `crate::` path names: `crate::pipeline::classify::Classifier` ->
/// `pipeline::classify`, `crate::service::Service` -> `service`.
fn node_of_path(segments: &[&str]) -> Option<String> {
    let first = *segments.first()?;
    if FOLDER_LAYERS.contains(&first) {
        let second = segments.get(1)?;
        Some(format!("{first}::{second}"))
    } else {
        Some(first.to_string())
    }
}

/// The node of a source file: `src/frontends/http/predict.rs` -> `frontends::http`,
/// `src/files/eval.rs` -> `files`, `src/lib.rs` -> `lib`.
fn node_of_file(path: &Path, src: &Path) -> String {
    let relative = path.strip_prefix(src).expect("under src/");
    let parts: Vec<String> = relative
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    if parts.len() >= 2 && parts[1] == "mod" {
        return parts[0].to_string();
    }
    node_of_path(&parts).expect("a path under src/")
}

fn layer_of(node: &str) -> usize {
    let top = node.split("::").next().expect("a segment");
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top))
        .unwrap_or_else(|| panic!("module {node} is in no layer: add it to LAYERS"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `node -> nodes it names as crate::...` and the files that use actix.
fn graph() -> (BTreeMap<String, BTreeSet<String>>, Vec<String>) {
    let src = repo_path("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut actix_users = Vec::new();
    for file in files {
        let node = node_of_file(&file, &src);
        let text = std::fs::read_to_string(&file).expect("read");
        // Unit tests may use anything; only the code proper counts.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (index, _) in code.match_indices("crate::") {
            let rest = &code[index + "crate::".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            if let Some(target) = node_of_path(&segments) {
                if target != node {
                    edges.entry(node.clone()).or_default().insert(target);
                }
            }
        }
        if code.contains("actix_web::") || code.contains("use actix") {
            actix_users.push(format!("{node} ({})", file.display()));
        }
    }
    (edges, actix_users)
}

#[test]
fn modules_form_no_import_cycle() {
    let (edges, _) = graph();
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(start) = path.iter().position(|n| n == node) {
            panic!("import cycle: {} -> {node}", path[start..].join(" -> "));
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, path, done);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done);
    }
    assert!(
        edges
            .get("frontends::http")
            .is_some_and(|e| e.contains("pipeline::classify")),
        "the scan sees frontends::http -> pipeline::classify: {edges:?}"
    );
}

#[test]
fn every_layer_imports_only_from_itself_and_below() {
    let (edges, _) = graph();
    let upward: Vec<String> = edges
        .iter()
        .flat_map(|(from, targets)| targets.iter().map(move |to| (from, to)))
        .filter(|(from, to)| layer_of(to) > layer_of(from))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(upward.is_empty(), "imports that point up: {upward:?}");
    assert!(
        edges
            .get("lifecycle::reload")
            .is_some_and(|e| e.contains("pipeline::model")),
        "the scan sees lifecycle::reload -> pipeline::model: {edges:?}"
    );
}

#[test]
fn front_doors_never_import_each_other() {
    let (edges, _) = graph();
    let crossing: Vec<String> = DOORS
        .iter()
        .flat_map(|door| {
            let edges = &edges;
            DOORS
                .iter()
                .filter(move |other| other != &door)
                .filter(move |other| edges.get(*door).is_some_and(|e| e.contains(**other)))
                .map(move |other| format!("{door} -> {other}"))
        })
        .collect();
    assert!(
        crossing.is_empty(),
        "front doors import each other: {crossing:?}"
    );
    assert!(
        edges
            .get("frontends::grpc")
            .is_some_and(|e| e.contains("frontends::v2")),
        "the scan sees frontends::grpc -> frontends::v2: {edges:?}"
    );
}

#[test]
fn only_the_http_door_and_app_know_about_http() {
    let (_, actix_users) = graph();
    let outside: Vec<&String> = actix_users
        .iter()
        .filter(|m| {
            !(m.starts_with("frontends::http ") || m.starts_with("app ") || m.starts_with("main "))
        })
        .collect();
    assert!(
        outside.is_empty(),
        "actix outside the HTTP layer: {outside:?}"
    );
    assert!(actix_users
        .iter()
        .any(|m| m.starts_with("frontends::http ")));
}
