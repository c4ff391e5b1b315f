//! Classification of identity-service answers, done once: every other module works with
//! `Validation`, never with `tonic::Status`.
//!
//! The split that matters is between answers and unreachability. Only unreachability
//! (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, no response at all) may ever open the fallback
//! path: an answer, even an error, is something a caller can provoke at will, and letting it
//! count as an outage would hand out fallback access on demand.
//!
//! "No response at all" is decided by cause, not by code: when a connection drops, tonic
//! builds the status locally from the error (UNKNOWN for an I/O error, INTERNAL for an h2
//! GOAWAY or reset without a gRPC status, CANCELLED for a request hyper dropped with its
//! connection) and keeps that error as the status's source. A status whose source chain holds
//! a transport, hyper, h2 or I/O error is unreachability whatever its code; one without such a
//! cause came over the wire and is an answer. CANCELLED is the one code that is never an
//! answer: this service cancels a call only at its own deadline, which is reported as
//! DEADLINE_EXCEEDED, so any other CANCELLED means the call was cut from the other side
//! (identity-service stopping mid-call during a restart or rollout).

use std::error::Error;

use tonic::{Code, Status};

use super::proto::{self, validate_response::Result as Branch};
use crate::meta::{ConnectionMeta, ParentalState, SubscriptionTier};

/// A successful validation: who the ticket was issued for, and their context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub family_id: String,
    pub subscription_tier: SubscriptionTier,
    pub is_admin: bool,
    pub parental_state: ParentalState,
    /// Unix seconds; 0 = no expiry.
    pub expire_at: i64,
    /// identity-service answered from its own fallback path.
    pub degraded: bool,
}

impl Identity {
    pub fn meta(&self) -> ConnectionMeta {
        ConnectionMeta {
            user: self.user_id.clone(),
            family_id: self.family_id.clone(),
            subscription_tier: self.subscription_tier,
            is_admin: self.is_admin,
            parental_state: self.parental_state,
            degraded: self.degraded,
            fallback_path: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    Success(Identity),
    /// identity-service refused the ticket with its own disconnect.
    Disconnect {
        code: u32,
        reason: String,
    },
    /// NOT_FOUND / INVALID_ARGUMENT / UNAUTHENTICATED / PERMISSION_DENIED.
    InvalidTicket,
    /// identity-service answered with its `Error` branch: it is up but cannot decide.
    IdentityError {
        code: u32,
        message: String,
    },
    /// No answer: UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED or a transport failure.
    Unreachable(Unreachable),
    /// Anything else: an answer we cannot use (other codes, an empty oneof, no user id).
    Internal(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    Unavailable,
    /// Our deadline passed, whichever timer noticed first (tonic's reports CANCELLED).
    DeadlineExceeded,
    /// The call was cut from the other side: identity-service stopped mid-call, reset the
    /// stream, or the connection closed under it.
    Cancelled,
    /// The connection failed: the status was built from a transport, hyper, h2 or I/O error.
    Transport,
}

impl Validation {
    /// False only for unreachability: every other outcome proves identity-service answered.
    pub fn reached_identity(&self) -> bool {
        !matches!(self, Self::Unreachable(_))
    }

    /// Classifies a finished call.
    pub fn from_response(result: Result<proto::ValidateResponse, Status>) -> Self {
        match result {
            Ok(response) => Self::from_branch(response.result),
            Err(status) => Self::from_status(&status),
        }
    }

    fn from_branch(branch: Option<Branch>) -> Self {
        match branch {
            Some(Branch::Success(s)) if s.user_id.is_empty() => {
                // An empty user would make Centrifugo accept an anonymous connection: fail closed.
                Self::Internal("success without user_id")
            }
            Some(Branch::Success(s)) => {
                let context = s.context.unwrap_or_default();
                let tier = proto::SubscriptionTier::try_from(context.subscription_tier)
                    .unwrap_or(proto::SubscriptionTier::Unspecified);
                let parental = context.parental_state.unwrap_or_default();
                Self::Success(Identity {
                    user_id: s.user_id,
                    family_id: context.family_id,
                    subscription_tier: match tier {
                        proto::SubscriptionTier::Unspecified => SubscriptionTier::Unspecified,
                        proto::SubscriptionTier::Free => SubscriptionTier::Free,
                        proto::SubscriptionTier::Pro => SubscriptionTier::Pro,
                        proto::SubscriptionTier::Family => SubscriptionTier::Family,
                    },
                    is_admin: context.is_admin,
                    parental_state: ParentalState {
                        screen_time_lock: parental.screen_time_lock,
                        feature_lock_chat: parental.feature_lock_chat,
                        feature_lock_diary: parental.feature_lock_diary,
                        feature_lock_flowcoach: parental.feature_lock_flowcoach,
                    },
                    expire_at: s.expire_at,
                    degraded: s.degraded,
                })
            }
            Some(Branch::Disconnect(d)) => Self::Disconnect {
                code: d.code,
                reason: d.reason,
            },
            Some(Branch::Error(e)) => Self::IdentityError {
                code: e.code,
                message: e.message,
            },
            None => Self::Internal("empty response"),
        }
    }

    fn from_status(status: &Status) -> Self {
        match status.code() {
            Code::Unavailable => Self::Unreachable(Unreachable::Unavailable),
            Code::DeadlineExceeded => Self::Unreachable(Unreachable::DeadlineExceeded),
            Code::Cancelled if caused_by::<tonic::TimeoutExpired>(status) => {
                Self::Unreachable(Unreachable::DeadlineExceeded)
            }
            Code::Cancelled => Self::Unreachable(Unreachable::Cancelled),
            // Before the ticket refusals: PERMISSION_DENIED is also what tonic makes of an h2
            // INADEQUATE_SECURITY, which says nothing about the ticket.
            _ if transport_failure(status) => Self::Unreachable(Unreachable::Transport),
            Code::NotFound
            | Code::InvalidArgument
            | Code::Unauthenticated
            | Code::PermissionDenied => Self::InvalidTicket,
            _ => Self::Internal("unexpected grpc status"),
        }
    }
}

/// Whether tonic built `status` from a failed connection rather than received it. Statuses
/// from the wire carry no source; a source that is not the connection (a bug, say) does not
/// count either, so an unknown cause never opens the fallback path.
fn transport_failure(status: &Status) -> bool {
    caused_by::<tonic::transport::Error>(status)
        || caused_by::<hyper::Error>(status)
        || caused_by::<h2::Error>(status)
        || caused_by::<std::io::Error>(status)
}

fn caused_by<E: Error + 'static>(status: &Status) -> bool {
    let mut cause = status.source();
    while let Some(error) = cause {
        if error.is::<E>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Metric label for a finished call: the gRPC code in snake_case, or `transport`.
pub fn code_label(result: &Result<proto::ValidateResponse, Status>) -> &'static str {
    let status = match result {
        Ok(_) => return "ok",
        Err(status) => status,
    };
    if !matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
        && transport_failure(status)
    {
        return "transport";
    }
    match status.code() {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code) -> Result<proto::ValidateResponse, Status> {
        Err(Status::new(code, "x"))
    }

    #[test]
    fn ticket_refusals_are_answers_not_outages() {
        for code in [
            Code::NotFound,
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
        ] {
            let v = Validation::from_response(status(code));
            assert_eq!(v, Validation::InvalidTicket);
            assert!(v.reached_identity());
        }
    }

    #[test]
    fn only_unreachability_counts_as_failure() {
        for code in [Code::Unavailable, Code::DeadlineExceeded] {
            assert!(!Validation::from_response(status(code)).reached_identity());
        }
        for code in [
            Code::Internal,
            Code::Unknown,
            Code::ResourceExhausted,
            Code::Aborted,
        ] {
            let v = Validation::from_response(status(code));
            assert!(matches!(v, Validation::Internal(_)), "{code:?}");
            assert!(v.reached_identity(), "{code:?} is an answer");
        }
        let transport = Status::from_error(Box::new(std::io::Error::other("reset")));
        let v = Validation::from_response(Err(transport));
        assert!(!v.reached_identity(), "{v:?}");
    }

    fn from_error(error: impl Error + Send + Sync + 'static) -> Status {
        Status::from_error(Box::new(error))
    }

    fn classify(status: Status) -> Validation {
        Validation::from_response(Err(status))
    }

    /// An error that wraps another, as tonic's transport error wraps hyper's.
    #[derive(Debug)]
    struct Wrapping(std::io::Error);

    impl std::fmt::Display for Wrapping {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("transport error")
        }
    }

    impl Error for Wrapping {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cancelled_call_is_unreachable_not_an_internal_error() {
        // From the wire (identity-service stopping mid-call), and from an h2 RST_STREAM CANCEL.
        for status in [
            Status::cancelled("server shutting down"),
            from_error(h2::Error::from(h2::Reason::CANCEL)),
        ] {
            assert_eq!(status.code(), Code::Cancelled);
            let v = classify(status);
            assert_eq!(v, Validation::Unreachable(Unreachable::Cancelled));
            assert!(!v.reached_identity());
        }
    }

    #[test]
    fn statuses_tonic_builds_from_a_dropped_connection_are_transport_failures() {
        // tonic's mapping of h2 errors (pinned here, as the classification relies on the
        // source and not on these codes).
        for (reason, code) in [
            (h2::Reason::NO_ERROR, Code::Internal),
            (h2::Reason::PROTOCOL_ERROR, Code::Internal),
            (h2::Reason::INTERNAL_ERROR, Code::Internal),
            (h2::Reason::FLOW_CONTROL_ERROR, Code::Internal),
            (h2::Reason::ENHANCE_YOUR_CALM, Code::ResourceExhausted),
            (h2::Reason::INADEQUATE_SECURITY, Code::PermissionDenied),
        ] {
            let status = from_error(h2::Error::from(reason));
            assert_eq!(status.code(), code, "{reason:?}");
            assert_eq!(
                classify(status),
                Validation::Unreachable(Unreachable::Transport),
                "{reason:?}"
            );
        }
        let refused = from_error(h2::Error::from(h2::Reason::REFUSED_STREAM));
        assert_eq!(refused.code(), Code::Unavailable);
        assert_eq!(
            classify(refused),
            Validation::Unreachable(Unreachable::Unavailable)
        );
        // An I/O error becomes UNKNOWN, directly or under another error.
        for status in [
            from_error(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset",
            )),
            from_error(Wrapping(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ))),
        ] {
            assert_eq!(status.code(), Code::Unknown);
            assert_eq!(
                classify(status),
                Validation::Unreachable(Unreachable::Transport)
            );
        }
    }

    #[test]
    fn the_same_codes_from_the_wire_are_answers() {
        for code in [
            Code::Unknown,
            Code::Internal,
            Code::ResourceExhausted,
            Code::DataLoss,
        ] {
            let v = classify(Status::new(code, "answered"));
            assert!(matches!(v, Validation::Internal(_)), "{code:?}");
            assert!(v.reached_identity());
        }
        assert_eq!(
            classify(Status::permission_denied("answered")),
            Validation::InvalidTicket
        );
    }

    #[test]
    fn a_local_failure_that_is_not_the_connection_is_not_an_outage() {
        let status = from_error(std::fmt::Error);
        assert_eq!(status.code(), Code::Unknown);
        assert!(status.source().is_some());
        let v = classify(status);
        assert!(matches!(v, Validation::Internal(_)), "{v:?}");
        assert!(v.reached_identity());
    }

    /// Real calls to the fake identity-service: what tonic reports when the server goes away
    /// mid-call, and when its own `grpc-timeout` timer fires.
    mod live {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::time::Duration;

        use super::super::proto::connect_proxy_service_client::ConnectProxyServiceClient;
        use super::super::proto::{ValidateRequest, ValidateResponse};
        use super::*;
        use crate::demo::identity::{Answers, IdentityServer};

        const HANG_GUARD: Duration = Duration::from_secs(20);

        /// Takes every call and never answers.
        #[derive(Default)]
        struct Stall(AtomicUsize);

        #[tonic::async_trait]
        impl Answers for Stall {
            async fn validate(
                &self,
                _: tonic::Request<ValidateRequest>,
            ) -> Result<tonic::Response<ValidateResponse>, Status> {
                self.0.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(60)).await;
                Err(Status::unavailable("stalled"))
            }
        }

        struct Fake {
            server: IdentityServer,
            stall: Arc<Stall>,
        }

        impl Fake {
            async fn start() -> Self {
                let stall = Arc::new(Stall::default());
                let server = IdentityServer::start_on(
                    std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                    stall.clone(),
                )
                .await
                .expect("stand-in starts");
                Self { server, stall }
            }
            fn calls(&self) -> usize {
                self.stall.0.load(Ordering::SeqCst)
            }
            fn stop(&self) {
                self.server.stop();
            }
        }

        async fn client(fake: &Fake) -> ConnectProxyServiceClient<tonic::transport::Channel> {
            let channel = tonic::transport::Endpoint::from_shared(format!(
                "http://{}",
                fake.server.address()
            ))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
            ConnectProxyServiceClient::new(channel)
        }

        fn request(timeout: Option<Duration>) -> tonic::Request<ValidateRequest> {
            let mut request = tonic::Request::new(ValidateRequest {
                ticket: "t".into(),
                client_id: "c".into(),
                transport: "websocket".into(),
            });
            if let Some(timeout) = timeout {
                request.set_timeout(timeout);
            }
            request
        }

        #[tokio::test]
        async fn identity_service_stopping_mid_call_is_unreachable() {
            let fake = Fake::start().await;
            let mut client = client(&fake).await;
            let call = tokio::spawn(async move { client.validate(request(None)).await });
            tokio::time::timeout(HANG_GUARD, async {
                while fake.calls() == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("call reached the fake");
            fake.stop();
            let status = tokio::time::timeout(HANG_GUARD, call)
                .await
                .expect("call ended")
                .expect("task")
                .expect_err("no answer");
            let v = Validation::from_response(Err(status.clone()));
            assert!(
                matches!(
                    v,
                    Validation::Unreachable(Unreachable::Transport | Unreachable::Cancelled)
                ),
                "{status:?} -> {v:?}"
            );
        }

        #[tokio::test]
        async fn tonics_own_deadline_is_a_deadline_not_a_cancel() {
            let fake = Fake::start().await;
            let mut client = client(&fake).await;
            let status = tokio::time::timeout(
                HANG_GUARD,
                client.validate(request(Some(Duration::from_millis(100)))),
            )
            .await
            .expect("tonic's timer fired")
            .expect_err("no answer");
            assert_eq!(status.code(), Code::Cancelled);
            assert_eq!(
                Validation::from_response(Err(status)),
                Validation::Unreachable(Unreachable::DeadlineExceeded)
            );
        }
    }

    #[test]
    fn success_without_user_fails_closed() {
        let response = proto::ValidateResponse {
            result: Some(Branch::Success(proto::Success::default())),
        };
        assert!(matches!(
            Validation::from_response(Ok(response)),
            Validation::Internal(_)
        ));
        let empty = proto::ValidateResponse { result: None };
        assert!(matches!(
            Validation::from_response(Ok(empty)),
            Validation::Internal(_)
        ));
    }

    #[test]
    fn success_maps_the_context() {
        let response = proto::ValidateResponse {
            result: Some(Branch::Success(proto::Success {
                user_id: "u1".into(),
                context: Some(proto::ConnectionContext {
                    family_id: "f1".into(),
                    subscription_tier: proto::SubscriptionTier::Pro as i32,
                    is_admin: true,
                    parental_state: Some(proto::ParentalState {
                        feature_lock_diary: true,
                        ..Default::default()
                    }),
                }),
                expire_at: 123,
                degraded: false,
            })),
        };
        let Validation::Success(identity) = Validation::from_response(Ok(response)) else {
            panic!("expected success");
        };
        let meta = identity.meta();
        assert_eq!(meta.user, "u1");
        assert_eq!(meta.family_id, "f1");
        assert_eq!(meta.subscription_tier, SubscriptionTier::Pro);
        assert!(meta.is_admin && meta.parental_state.feature_lock_diary);
        assert_eq!(identity.expire_at, 123);
    }

    #[test]
    fn code_labels_are_snake_case() {
        assert_eq!(
            code_label(&status(Code::DeadlineExceeded)),
            "deadline_exceeded"
        );
        assert_eq!(code_label(&status(Code::NotFound)), "not_found");
        let transport = Status::from_error(Box::new(std::io::Error::other("reset")));
        assert_eq!(code_label(&Err(transport)), "transport");
    }
}
