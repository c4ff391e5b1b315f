//! Classification of identity-service answers, done once: every other module works with
//! `Validation`, never with `tonic::Status`.
//!
//! The split that matters is between answers and unreachability. Only unreachability
//! (UNAVAILABLE, DEADLINE_EXCEEDED, no response at all) may ever open the fallback path: an
//! answer, even an error, is something a caller can provoke at will, and letting it count as
//! an outage would hand out fallback access on demand.

use std::error::Error as _;

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
    /// No answer: UNAVAILABLE, DEADLINE_EXCEEDED or a transport failure.
    Unreachable(Unreachable),
    /// Anything else: an answer we cannot use (other codes, an empty oneof, no user id).
    Internal(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    Unavailable,
    DeadlineExceeded,
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
            Code::NotFound
            | Code::InvalidArgument
            | Code::Unauthenticated
            | Code::PermissionDenied => Self::InvalidTicket,
            Code::Unavailable => Self::Unreachable(Unreachable::Unavailable),
            Code::DeadlineExceeded => Self::Unreachable(Unreachable::DeadlineExceeded),
            // A status built locally from an error (tonic attaches the source) means nothing
            // came back over the wire: a broken connection, a reset stream, a bad frame.
            _ if status.source().is_some() => Self::Unreachable(Unreachable::Transport),
            _ => Self::Internal("unexpected grpc status"),
        }
    }
}

/// Metric label for a finished call: the gRPC code in snake_case, or `transport`.
pub fn code_label(result: &Result<proto::ValidateResponse, Status>) -> &'static str {
    let status = match result {
        Ok(_) => return "ok",
        Err(status) => status,
    };
    if !matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
        && status.source().is_some()
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
