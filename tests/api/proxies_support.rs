//! Shared pieces of the `proxies_*` tests (refresh, subscribe, sub_refresh, publish, rpc):
//! Centrifugo-shaped request bodies, identity contexts obtained through a real connect, and
//! the exact reply bodies of issue 3.

use crate::fake_identity::Scripted;
use realtime_service::identity::proto;
use serde_json::{json, Value};

use crate::helpers::TestApp;

/// The reply bodies live in `replies`; re-exported for the proxies_* modules.
pub use crate::replies::{
    allowed, bad_payload, degraded_session, expire_at, expired, meta, method_not_found,
    permission_denied, rpc_internal, too_large, too_many,
};

/// Centrifugo's connection id in every request (any uuid will do).
pub const CLIENT: &str = "0c7f0d3e-8b1f-4c52-9a40-2f7f3b6f9c11";

/// A Centrifugo-shaped body for a client-context proxy: the common four, `user`, `meta`
/// (left out when `None`, as Centrifugo does without `include_connection_meta`) and the
/// type-specific `fields` (`channel`, `data`, `b64data`, `method`, or an `encoding` override).
pub fn request(user: &str, meta: Option<&Value>, fields: Value) -> String {
    let mut body = json!({
        "client": CLIENT,
        "transport": "websocket",
        "protocol": "json",
        "encoding": "json",
        "user": user,
    });
    if let Some(meta) = meta {
        body["meta"] = meta.clone();
    }
    if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
    body.to_string()
}

/// A subscribe / sub_refresh body.
pub fn on_channel(user: &str, meta: Option<&Value>, channel: &str) -> String {
    request(user, meta, json!({ "channel": channel }))
}

/// A publish body whose `data` is `payload` byte for byte (so sizes are exact).
pub fn publish_raw(user: &str, meta: &Value, channel: &str, payload: &str) -> String {
    with_raw_data(
        &request(user, Some(meta), json!({ "channel": channel })),
        payload,
    )
}

/// `body` (a JSON object) with `"data":<payload>` spliced in byte for byte.
pub fn with_raw_data(body: &str, payload: &str) -> String {
    let open = body.strip_suffix('}').expect("an object");
    format!(r#"{open},"data":{payload}}}"#)
}

/// A binary-encoding publish body: the payload travels as standard base64 in `b64data`.
pub fn publish_b64(user: &str, meta: &Value, channel: &str, payload: &[u8]) -> String {
    use base64::Engine as _;
    request(
        user,
        Some(meta),
        json!({
            "channel": channel,
            "encoding": "binary",
            "b64data": base64::engine::general_purpose::STANDARD.encode(payload),
        }),
    )
}

/// A JSON object of exactly `len` bytes (`len >= 8`): `{"t":"xxx…"}`.
pub fn object_of_len(len: usize) -> String {
    let object = format!(r#"{{"t":"{}"}}"#, "x".repeat(len - 8));
    assert_eq!(object.len(), len);
    object
}

/// Parental locks, in the order of `proto::ParentalState`'s fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Locks {
    pub screen_time: bool,
    pub chat: bool,
    pub diary: bool,
    pub flowcoach: bool,
}

/// What identity-service says about a test user.
#[derive(Debug, Clone)]
pub struct Who {
    pub user: &'static str,
    pub family: &'static str,
    pub tier: proto::SubscriptionTier,
    pub admin: bool,
    pub locks: Locks,
    /// identity-service's own `degraded` flag.
    pub degraded: bool,
}

impl Who {
    /// A free-tier, unlocked, non-admin user in `family`.
    pub fn new(user: &'static str, family: &'static str) -> Self {
        Self {
            user,
            family,
            tier: proto::SubscriptionTier::Free,
            admin: false,
            locks: Locks::default(),
            degraded: false,
        }
    }

    pub fn tier(mut self, tier: proto::SubscriptionTier) -> Self {
        self.tier = tier;
        self
    }

    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    pub fn locks(mut self, locks: Locks) -> Self {
        self.locks = locks;
        self
    }

    pub fn degraded(mut self) -> Self {
        self.degraded = true;
        self
    }

    /// identity-service's answer for this user.
    pub fn scripted(&self) -> Scripted {
        let who = self.clone();
        Scripted::success_with(self.user, move |s| {
            s.degraded = who.degraded;
            s.context = Some(proto::ConnectionContext {
                family_id: who.family.to_owned(),
                subscription_tier: who.tier as i32,
                is_admin: who.admin,
                parental_state: Some(proto::ParentalState {
                    screen_time_lock: who.locks.screen_time,
                    feature_lock_chat: who.locks.chat,
                    feature_lock_diary: who.locks.diary,
                    feature_lock_flowcoach: who.locks.flowcoach,
                }),
            });
        })
    }

    /// The meta a real connect returns for this user (`ticket` must be unique per test).
    pub async fn connect(&self, app: &TestApp, ticket: &str) -> Value {
        app.identity.add_ticket(ticket, self.scripted());
        connect_meta(app, ticket, self.user).await
    }
}

/// Connects with `ticket` (already scripted at the fake) and returns the result's meta.
pub async fn connect_meta(app: &TestApp, ticket: &str, user: &str) -> Value {
    let (connected, meta) = connect_any(app, ticket).await;
    assert_eq!(connected, user);
    meta
}

/// Connects with `ticket` (scripted, or a pool ticket) and returns the user and meta.
pub async fn connect_any(app: &TestApp, ticket: &str) -> (String, Value) {
    let response = app.connect(ticket).await;
    assert_eq!(response.status, 200, "connect failed: {}", response.text);
    let result = &response.json()["result"];
    let user = result["user"].as_str().expect("user").to_owned();
    assert_eq!(result["meta"]["user"], json!(user), "{}", response.text);
    (user, result["meta"].clone())
}

/// Meta with one field changed (`path` is `"degraded"` or `"parental_state/feature_lock_chat"`).
pub fn with(meta: &Value, path: &str, value: Value) -> Value {
    let mut meta = meta.clone();
    *meta
        .pointer_mut(&format!("/{path}"))
        .unwrap_or_else(|| panic!("meta has no {path}")) = value;
    meta
}

/// Takes the identity-service down and opens the outage past its window, so that pool tickets
/// connect (the app must have been spawned with `c.pool(&[...])`).
pub async fn open_outage(app: &TestApp, probe_ticket: &str) {
    app.identity.fail_with(tonic::Code::Unavailable);
    app.connect(probe_ticket).await.assert(
        503,
        json!({"error":{"code":503,"message":"ticket validation temporarily unavailable","temporary":true}}),
    );
    app.pass_window();
}
