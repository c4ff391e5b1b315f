//! The exact reply bodies of the contract (issue 2's table), shared by the test modules.

use serde_json::{json, Value};

pub fn invalid_ticket() -> Value {
    json!({"disconnect":{"code":4401,"reason":"invalid ticket"}})
}

pub fn unavailable() -> Value {
    json!({"disconnect":{"code":4503,"reason":"ticket validation temporarily unavailable"}})
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
    json!({
        "user": user,
        "family_id": format!("family-of-{user}"),
        "subscription_tier": "free",
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
