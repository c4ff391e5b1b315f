use crate::fake_identity::Scripted;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn accepted_connect_end_to_end() {
    let app = spawn_app().await;
    app.identity
        .add_ticket("smoke-ticket-1", Scripted::success("u-smoke"));
    let response = app.connect("smoke-ticket-1").await;
    assert_eq!(response.status, 200, "{}", response.text);
    assert_eq!(response.json()["result"]["user"], json!("u-smoke"));
    // Single use at identity-service: the same ticket again is refused.
    app.connect("smoke-ticket-1").await.assert(
        401,
        json!({"disconnect":{"code":4401,"reason":"invalid ticket"}}),
    );
}
