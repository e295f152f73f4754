//! `GET /`: a one-page demo for planners, embedded in the binary (no CDN, no build step).
//!
//! The page calls the public API itself (`/info`, `/predict`), so it shows exactly what a client
//! would get, errors included. Deployments that want only the API set `server.demo_page: false`.

use actix_web::http::header;
use actix_web::HttpResponse;

const PAGE: &str = include_str!("static/index.html");

/// The demo page (off with `server.demo_page: false`).
#[utoipa::path(get, path = "/", tag = "operations",
    responses((status = 200, description = "The demo page", content_type = "text/html", body = String)))]
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(PAGE)
}
