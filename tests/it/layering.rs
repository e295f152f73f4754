//! The module graph keeps the architecture: no import cycles between top-level modules, and
//! HTTP (actix-web) stays in `api` and `app`. Read from the source, so a new `use` that breaks
//! either rule fails here with the offending path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::repo_path;

/// Top-level module of a source file: `src/api/predict.rs` -> `api`, `src/lib.rs` -> `lib`.
fn module_of(path: &Path, src: &Path) -> String {
    let relative = path.strip_prefix(src).expect("under src/");
    let first = relative
        .components()
        .next()
        .expect("a component")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `module -> modules it names as crate::<module>` and the files that use actix.
fn graph() -> (BTreeMap<String, BTreeSet<String>>, Vec<String>) {
    let src = repo_path("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut actix_users = Vec::new();
    for file in files {
        let module = module_of(&file, &src);
        let text = std::fs::read_to_string(&file).expect("read");
        // Unit tests may use anything; only the code proper counts.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (index, _) in code.match_indices("crate::") {
            let rest = &code[index + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                edges.entry(module.clone()).or_default().insert(name);
            }
        }
        if code.contains("actix_web::") || code.contains("use actix") {
            actix_users.push(format!("{module} ({})", file.display()));
        }
    }
    (edges, actix_users)
}

#[test]
fn top_level_modules_form_no_import_cycle() {
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
        edges.get("api").is_some_and(|e| e.contains("classify")),
        "the scan sees api -> classify: {edges:?}"
    );
}

#[test]
fn only_api_and_app_know_about_http() {
    let (_, actix_users) = graph();
    let outside: Vec<&String> = actix_users
        .iter()
        .filter(|m| !(m.starts_with("api ") || m.starts_with("app ") || m.starts_with("main ")))
        .collect();
    assert!(
        outside.is_empty(),
        "actix outside the HTTP layer: {outside:?}"
    );
    assert!(actix_users.iter().any(|m| m.starts_with("api ")));
}
