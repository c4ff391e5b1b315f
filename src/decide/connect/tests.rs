//! The connect decision table, row by row, as the HTTP transport would write each answer.

use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::identity::outcome::Unreachable;
use crate::proxy::Payload;
use crate::transport::http::wire;

const NOW: i64 = 1_600_000_000;

fn config() -> ConnectConfig {
    ConnectConfig {
        info_fields: vec![],
        fallback_ttl: Duration::from_secs(300),
        refresh_ttl: Duration::from_secs(3600),
    }
}

fn identity(degraded: bool) -> Identity {
    Identity {
        user_id: "u1".into(),
        family_id: "f1".into(),
        subscription_tier: SubscriptionTier::Family,
        is_admin: false,
        parental_state: ParentalState::default(),
        expire_at: 1_700_000_000,
        degraded,
    }
}

fn done(next: Next) -> Decision {
    match next {
        Next::Done(d) => d,
        Next::ConsultPool => panic!("expected a decision"),
    }
}

fn text(d: &Decision) -> String {
    String::from_utf8(wire::encode(&d.reply)).expect("utf-8")
}

fn json(d: &Decision) -> Value {
    serde_json::from_str(&text(d)).expect("json")
}

/// A request's payload as the HTTP transport reads it from a body.
fn ticket_of(body: &str) -> Result<String, TicketProblem> {
    let request: wire::ProxyRequest = serde_json::from_str(body).expect("request json");
    let payload: Payload<'_> = request.payload();
    extract_ticket(&payload)
}

#[test]
fn ticket_extraction() {
    assert_eq!(ticket_of(r#"{"data":{"token":"t1"}}"#), Ok("t1".into()));
    // {"token":"t2"} in base64
    assert_eq!(
        ticket_of(r#"{"encoding":"binary","b64data":"eyJ0b2tlbiI6InQyIn0="}"#),
        Ok("t2".into())
    );
    for missing in [
        r#"{}"#,
        r#"{"data":{}}"#,
        r#"{"data":{"token":""}}"#,
        r#"{"data":null}"#,
        r#"{"data":{"token":null}}"#,
    ] {
        assert_eq!(ticket_of(missing), Err(TicketProblem::Missing), "{missing}");
    }
    for bad in [
        r#"{"data":[1]}"#,
        r#"{"data":"t"}"#,
        r#"{"data":{"token":5}}"#,
        r#"{"b64data":"!!"}"#,
        r#"{"b64data":"bm90IGpzb24="}"#,
        r#"{"data":{"token":"a","token":"b"}}"#,
    ] {
        assert!(
            matches!(ticket_of(bad), Err(TicketProblem::Malformed(_))),
            "{bad}"
        );
    }
}

#[test]
fn success_puts_identity_in_meta_not_info() {
    let d = done(decide(
        &Attempt::Called(Validation::Success(identity(false))),
        false,
        &config(),
        NOW,
    ));
    assert_eq!(d.outcome, Outcome::Accepted);
    let body = json(&d);
    assert_eq!(body["result"]["user"], "u1");
    assert_eq!(body["result"]["expire_at"], 1_700_000_000);
    assert_eq!(body["result"]["meta"]["family_id"], "f1");
    assert_eq!(body["result"]["meta"]["subscription_tier"], "family");
    assert_eq!(body["result"]["meta"]["degraded"], false);
    assert!(body["result"].get("info").is_none(), "{body}");
}

#[test]
fn expire_at_defaults_to_the_refresh_ttl_and_caps_degraded_connections() {
    let mut id = identity(false);
    id.expire_at = 0;
    let d = done(decide(
        &Attempt::Called(Validation::Success(id.clone())),
        false,
        &config(),
        NOW,
    ));
    assert_eq!(json(&d)["result"]["expire_at"], NOW + 3600);
    id.degraded = true;
    let d = done(decide(
        &Attempt::Called(Validation::Success(id.clone())),
        false,
        &config(),
        NOW,
    ));
    assert_eq!(json(&d)["result"]["expire_at"], NOW + 300);
    id.expire_at = NOW + 10_000;
    let d = done(decide(
        &Attempt::Called(Validation::Success(id)),
        false,
        &config(),
        NOW,
    ));
    assert_eq!(
        json(&d)["result"]["expire_at"],
        NOW + 300,
        "degraded capped at the fallback TTL"
    );
}

#[test]
fn configured_info_fields_are_copied() {
    let cfg = ConnectConfig {
        info_fields: vec!["subscription_tier".into()],
        ..config()
    };
    let d = done(decide(
        &Attempt::Called(Validation::Success(identity(false))),
        false,
        &cfg,
        NOW,
    ));
    assert_eq!(
        json(&d)["result"]["info"],
        serde_json::json!({"subscription_tier":"family"})
    );
}

#[test]
fn identity_side_degraded_is_marked_in_meta_and_info() {
    let d = done(decide(
        &Attempt::Called(Validation::Success(identity(true))),
        false,
        &config(),
        NOW,
    ));
    assert_eq!(d.outcome, Outcome::AcceptedDegraded);
    let body = json(&d);
    assert_eq!(body["result"]["meta"]["degraded"], true);
    assert_eq!(
        body["result"]["info"],
        serde_json::json!({"degraded": true})
    );
}

#[test]
fn refusals_and_errors() {
    let cases = [
        (
            Validation::Disconnect {
                code: 4403,
                reason: "banned".into(),
            },
            Outcome::Disconnected,
            r#"{"disconnect":{"code":4403,"reason":"banned"}}"#,
        ),
        (
            Validation::Disconnect {
                code: 3000,
                reason: "x".into(),
            },
            Outcome::Disconnected,
            r#"{"disconnect":{"code":4401,"reason":"invalid ticket"}}"#,
        ),
        (
            Validation::InvalidTicket,
            Outcome::InvalidTicket,
            r#"{"disconnect":{"code":4401,"reason":"invalid ticket"}}"#,
        ),
        (
            Validation::IdentityError {
                code: 1,
                message: "db".into(),
            },
            Outcome::IdentityError,
            r#"{"error":{"code":503,"message":"ticket validation temporarily unavailable","temporary":true}}"#,
        ),
        (
            Validation::Internal("x"),
            Outcome::InternalError,
            r#"{"error":{"code":100,"message":"internal error"}}"#,
        ),
    ];
    for (validation, outcome, body) in cases {
        // Degraded or not makes no difference to answers: only unreachability consults the pool.
        for degraded in [false, true] {
            let d = done(decide(
                &Attempt::Called(validation.clone()),
                degraded,
                &config(),
                NOW,
            ));
            assert_eq!(d.outcome, outcome);
            assert_eq!(text(&d), body);
        }
    }
}

#[test]
fn unreachable_consults_the_pool_only_past_the_window() {
    for attempt in [
        Attempt::Called(Validation::Unreachable(Unreachable::Unavailable)),
        Attempt::Called(Validation::Unreachable(Unreachable::DeadlineExceeded)),
        Attempt::Called(Validation::Unreachable(Unreachable::Transport)),
        Attempt::Skipped,
    ] {
        let d = done(decide(&attempt, false, &config(), NOW));
        assert_eq!(d.outcome, Outcome::Unavailable);
        assert_eq!(decide(&attempt, true, &config(), NOW), Next::ConsultPool);
    }
}

#[test]
fn pool_hit_miss_and_reuse() {
    let digest = TicketDigest::of(b"pool-ticket");
    let d = from_pool(Take::Taken { remaining: 3 }, &digest, &config(), 1_000);
    assert_eq!(d.outcome, Outcome::FallbackPoolConsumed);
    let body = json(&d);
    let user = format!("fallback:{}", digest.short_hex());
    assert_eq!(body["result"]["user"], user.as_str());
    assert_eq!(body["result"]["expire_at"], 1_300);
    assert_eq!(
        body["result"]["info"],
        serde_json::json!({"degraded":true,"fallback_path":"pool"})
    );
    assert_eq!(body["result"]["meta"]["user"], user.as_str());
    assert_eq!(body["result"]["meta"]["fallback_path"], "pool");
    assert_eq!(body["result"]["meta"]["degraded"], true);

    for (take, outcome) in [
        (Take::NotInPool, Outcome::FallbackPoolMiss),
        (Take::Reused, Outcome::FallbackPoolReused),
        (Take::LedgerUnavailable, Outcome::FallbackLedgerUnavailable),
    ] {
        let d = from_pool(take, &digest, &config(), 1_000);
        assert_eq!(d.outcome, outcome);
        assert_eq!(
            text(&d),
            r#"{"error":{"code":503,"message":"ticket validation temporarily unavailable","temporary":true}}"#
        );
    }
}

#[test]
fn missing_and_malformed_tickets() {
    let d = ticket_problem(TicketProblem::Missing);
    assert_eq!(d.outcome, Outcome::InvalidTicket);
    let d = ticket_problem(TicketProblem::Malformed("x"));
    assert_eq!(d.outcome, Outcome::BadRequest);
    assert_eq!(
        json(&d),
        serde_json::json!({"error":{"code":107,"message":"bad request"}})
    );
}

mod properties {
    use std::borrow::Cow;

    use base64::Engine as _;
    use proptest::prelude::*;

    use super::super::extract_ticket;
    use crate::proxy::{payload, Payload};

    fn owned(bytes: Vec<u8>) -> Payload<'static> {
        Ok(Some(Cow::Owned(bytes)))
    }

    /// Every character as a `\uXXXX` escape (surrogate pairs past the BMP), the spelling
    /// furthest from the raw text.
    fn escaped(s: &str) -> String {
        let units = s.encode_utf16().map(|unit| format!("\\u{unit:04x}"));
        format!("\"{}\"", units.collect::<String>())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_bytes_give_a_ticket_or_a_problem(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(ticket) = extract_ticket(&owned(bytes)) {
                prop_assert!(!ticket.is_empty());
            }
        }

        #[test]
        fn json_shaped_text_never_panics(text in r#"[ {}\[\]":,\\tokenul0-9e.+-]{0,64}"#) {
            let found = extract_ticket(&owned(text.clone().into_bytes()));
            if let Ok(ticket) = found {
                prop_assert!(!ticket.is_empty());
            }
            // Only a JSON string is a ticket.
            let wrapped = format!(r#"{{"token":{text}}}"#).into_bytes();
            if let Ok(ticket) = extract_ticket(&owned(wrapped)) {
                prop_assert!(text.trim_start().starts_with('"'), "{text:?} gave {ticket:?}");
            }
        }

        #[test]
        fn a_token_string_is_the_ticket(token in any::<String>().prop_filter("non-empty", |s| !s.is_empty())) {
            let plain = format!(r#"{{"token":{}}}"#, serde_json::to_string(&token).expect("a string"));
            prop_assert_eq!(extract_ticket(&owned(plain.clone().into_bytes())), Ok(token.clone()));
            let spelled = format!(r#" {{ "other" : [1, {{"token": 2}}], "token" : {} }} "#, escaped(&token));
            prop_assert_eq!(extract_ticket(&owned(spelled.into_bytes())), Ok(token.clone()));
            // The same body as binary-encoded `b64data`.
            let b64 = base64::engine::general_purpose::STANDARD.encode(plain);
            prop_assert_eq!(extract_ticket(&payload(None, Some(&b64))), Ok(token));
        }
    }
}
