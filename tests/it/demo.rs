//! The demo page is part of the binary, and can be turned off.

use crate::support::Server;

#[tokio::test]
async fn demo_page_is_served_from_the_binary_and_can_be_turned_off() {
    let server = Server::start(&[], &[]);
    let page = server.get("/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("id=\"classify\"") && html.contains("docs/") && html.contains("metrics"));
    assert!(!html.contains("https://"), "no asset may come from a CDN");
    drop(server);

    let server = Server::start(&[], &[("NEWSCLS__SERVER__DEMO_PAGE", "false")]);
    // `/` still takes POST (Hugging Face clients send their task there); GET is not served.
    let root = server.get("/").await;
    assert_eq!(root.status(), 405);
    assert_eq!(root.headers()["allow"], "POST");
    assert_eq!(server.get("/livez").await.status(), 200);
}
