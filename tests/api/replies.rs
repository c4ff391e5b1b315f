//! The exact reply bodies of the contract (the connect table of issue 2 and the proxy
//! answers of issue 3), shared by the test modules.

use serde_json::{json, Value};

pub fn invalid_ticket() -> Value {
    json!({"disconnect":{"code":4401,"reason":"invalid ticket"}})
}

pub fn unavailable() -> Value {
    json!({"error":{"code":503,"message":"ticket validation temporarily unavailable","temporary":true}})
}

pub fn unauthorized() -> Value {
    json!({"disconnect":{"code":4401,"reason":"unauthorized"}})
}

pub fn bad_request() -> Value {
    json!({"error":{"code":107,"message":"bad request"}})
}

pub fn internal_error() -> Value {
    json!({"error":{"code":100,"message":"internal error"}})
}

/// Meta of `Scripted::success(user)`: family `family-of-<user>`, free tier, no locks.
pub fn default_meta(user: &str) -> Value {
    meta(user, &format!("family-of-{user}"), "free")
}

/// Meta shaped exactly like connect's, with no locks, not admin, not degraded.
pub fn meta(user: &str, family: &str, tier: &str) -> Value {
    json!({
        "user": user,
        "family_id": family,
        "subscription_tier": tier,
        "is_admin": false,
        "parental_state": {
            "screen_time_lock": false,
            "feature_lock_chat": false,
            "feature_lock_diary": false,
            "feature_lock_flowcoach": false,
        },
        "degraded": false,
    })
}

pub fn permission_denied() -> Value {
    json!({"error":{"code":403,"message":"permission denied"}})
}

pub fn expired() -> Value {
    json!({"result":{"expired":true}})
}

pub fn expire_at(unix: i64) -> Value {
    json!({"result":{"expire_at":unix}})
}

pub fn allowed() -> Value {
    json!({"result":{}})
}

pub fn degraded_session() -> Value {
    json!({"disconnect":{"code":4403,"reason":"degraded session"}})
}

pub fn bad_payload() -> Value {
    json!({"error":{"code":400,"message":"bad request"}})
}

pub fn too_large() -> Value {
    json!({"error":{"code":413,"message":"payload too large"}})
}

pub fn too_many() -> Value {
    json!({"error":{"code":429,"message":"too many requests","temporary":true}})
}

pub fn rpc_internal() -> Value {
    json!({"error":{"code":100,"message":"internal error","temporary":true}})
}

pub fn method_not_found() -> Value {
    json!({"error":{"code":404,"message":"method not found"}})
}
