//! rpc: refuse degraded sessions and unknown methods before any backend is called, then map
//! the backend's answer onto Centrifugo's rpc reply.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::context::Context;
use super::{degraded_session, permission_denied};
use crate::proxy::{codes, Decision, Outcome, Reply, RpcResult};
use crate::rpc::{BackendAnswer, Routes};

/// Before the backend call: `Err` is the final answer, `Ok` the backend URL.
pub fn route<'a>(
    context: Context<'_>,
    routes: &'a Routes,
    method: &str,
) -> Result<&'a str, Decision<RpcResult>> {
    let meta = context.map_err(|_| permission_denied(Outcome::BadContext))?;
    if meta.degraded {
        return Err(degraded_session());
    }
    routes.backend_for(method).ok_or(Decision::new(
        Outcome::MethodNotFound,
        Reply::error(404, "method not found"),
    ))
}

/// What a backend may say about a refusal.
#[derive(Deserialize)]
struct Refusal<'a> {
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

/// The reply for a backend's answer: 200 with JSON is the result, 4xx a refusal passed on
/// with its message, anything else a temporary internal error (SDKs retry those).
pub fn answer(answer: &BackendAnswer) -> Decision<RpcResult> {
    let failure = || {
        Decision::new(
            Outcome::BackendError,
            Reply::temporary_error(codes::ERROR_INTERNAL, "internal error"),
        )
    };
    let BackendAnswer::Status {
        status,
        reason,
        body,
    } = answer
    else {
        return failure();
    };
    match *status {
        200 => match serde_json::from_slice::<&RawValue>(body) {
            Ok(data) => Decision::new(
                Outcome::Allowed,
                Reply::Result(RpcResult {
                    data: data.get().as_bytes().to_vec(),
                }),
            ),
            Err(_) => failure(),
        },
        400..=499 => {
            let message = serde_json::from_slice::<Refusal<'_>>(body)
                .ok()
                .and_then(|r| r.message)
                .map_or_else(|| Cow::Borrowed(*reason), |m| Cow::Owned(m.into_owned()));
            Decision::new(
                Outcome::BackendRefused,
                Reply::error(u32::from(*status), message),
            )
        }
        _ => failure(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::testing::meta;
    use crate::transport::http::wire::encode;

    fn body(d: &Decision<RpcResult>) -> serde_json::Value {
        serde_json::from_slice(&encode(&d.reply)).expect("json")
    }

    #[test]
    fn rpc_refuses_degraded_and_unknown_methods() {
        let routes = Routes::parse("family=http://family/rpc").expect("routes");
        let m = meta(false);
        assert_eq!(
            route(Ok(&m), &routes, "family.get_members"),
            Ok("http://family/rpc")
        );
        let err = route(Ok(&m), &routes, "diary.list").expect_err("unknown");
        assert_eq!(
            body(&err),
            serde_json::json!({"error":{"code":404,"message":"method not found"}})
        );
        let err = route(Ok(&meta(true)), &routes, "family.get_members").expect_err("degraded");
        assert_eq!(
            body(&err),
            serde_json::json!({"disconnect":{"code":4403,"reason":"degraded session"}})
        );
    }

    fn mapped(status: u16, text: &str) -> serde_json::Value {
        let answer = BackendAnswer::Status {
            status,
            reason: crate::rpc::reason_phrase(status),
            body: text.as_bytes().to_vec(),
        };
        body(&self::answer(&answer))
    }

    #[test]
    fn backend_answers_map_to_rpc_replies() {
        assert_eq!(
            mapped(200, r#"{"members":[1]}"#),
            serde_json::json!({"result":{"data":{"members":[1]}}})
        );
        assert_eq!(
            mapped(404, r#"{"message":"no such family"}"#),
            serde_json::json!({"error":{"code":404,"message":"no such family"}})
        );
        assert_eq!(
            mapped(403, "nope"),
            serde_json::json!({"error":{"code":403,"message":"Forbidden"}})
        );
        let internal =
            serde_json::json!({"error":{"code":100,"message":"internal error","temporary":true}});
        assert_eq!(mapped(500, "{}"), internal);
        assert_eq!(mapped(503, ""), internal);
        assert_eq!(mapped(200, "not json"), internal);
        assert_eq!(mapped(302, ""), internal);
        assert_eq!(body(&answer(&BackendAnswer::Failed)), internal);
    }
}
