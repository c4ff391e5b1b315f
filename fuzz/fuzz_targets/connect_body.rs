//! Connect bodies (`data` or base64 `b64data`) as the HTTP edge reads them: never a panic,
//! a ticket is never empty and is the `token` an independent JSON reading finds, and every
//! refusal is a well-formed 4401 or 107 answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oracle::{answer, payload_value};
use realtime_service::fuzzing::{http_connect, Connect};
use serde_json::Value;

fuzz_target!(|body: &[u8]| {
    let independent = payload_value(body).map(|payload| {
        payload
            .as_ref()
            .and_then(|p| p.get("token"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    match http_connect(body) {
        Connect::BadBody => {}
        Connect::Ticket(ticket) => {
            assert!(!ticket.is_empty());
            if let Some(token) = independent {
                assert_eq!(token.as_deref(), Some(ticket.as_str()));
            }
        }
        Connect::Answer(reply) => match answer(&reply) {
            // "No ticket": nothing a JSON reader could take for one either.
            (key, 4401) if key == "disconnect" => {
                if let Some(Some(token)) = independent {
                    assert!(token.is_empty(), "4401 but the body has token {token:?}");
                }
            }
            (key, 107) if key == "error" => {}
            other => panic!("unexpected connect refusal {other:?}"),
        },
    }
});
