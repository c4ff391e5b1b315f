//! The use cases after connect: refresh, subscribe, sub_refresh, publish and rpc. Each reads
//! the identity context from meta, gathers what its decision needs, and counts the result.

use serde_json::value::RawValue;

use super::ProxyService;
use crate::decide::{self, refresh::RefreshInputs, secs};
use crate::proxy::{
    CallRequest, Decision, Extension, ProxyKind, PublishResult, RpcData, RpcResult,
    SubscribeResult, Transport,
};
use crate::rpc::BackendRequest;

impl ProxyService {
    pub fn refresh(&self, via: Transport, request: &CallRequest<'_>) -> Decision<Extension> {
        let kind = ProxyKind::Refresh;
        let parts = &self.0;
        let context = self.context(kind, request);
        let decision = decide::refresh::refresh(
            context.as_ref().map_err(|p| *p),
            &RefreshInputs {
                now_unix: parts.clock.unix_seconds(),
                identity_streak_open: parts.identity.detector().streak_open(),
                refresh_ttl_s: secs(parts.connect.refresh_ttl),
                fallback_ttl_s: secs(parts.connect.fallback_ttl),
            },
        );
        self.finish(kind, via, request, decision)
    }

    pub fn subscribe(
        &self,
        via: Transport,
        request: &CallRequest<'_>,
    ) -> Decision<SubscribeResult> {
        let kind = ProxyKind::Subscribe;
        let context = self.context(kind, request);
        let decision = decide::subscription::subscribe(
            context.as_ref().map_err(|p| *p),
            &self.0.policy.current(),
            request.channel,
            self.0.clock.unix_seconds(),
        );
        self.finish(kind, via, request, decision)
    }

    pub fn sub_refresh(&self, via: Transport, request: &CallRequest<'_>) -> Decision<Extension> {
        let kind = ProxyKind::SubRefresh;
        let context = self.context(kind, request);
        let decision = decide::subscription::sub_refresh(
            context.as_ref().map_err(|p| *p),
            &self.0.policy.current(),
            request.channel,
            self.0.clock.unix_seconds(),
        );
        self.finish(kind, via, request, decision)
    }

    pub async fn publish(
        &self,
        via: Transport,
        request: &CallRequest<'_>,
    ) -> Decision<PublishResult> {
        let kind = ProxyKind::Publish;
        let context = self.context(kind, request);
        let context = context.as_ref().map_err(|p| *p);
        let decided = decide::publish::publish(
            context,
            &self.0.policy.current(),
            request.channel,
            &request.data,
        );
        let decision = match decided {
            Some(decision) => decision,
            // Only a publish the policy allowed reaches the limiter (and so consumes a token).
            None => {
                let user = context.map(|m| m.user.as_str()).unwrap_or_default();
                decide::publish::after_rate_limit(self.0.limiter.try_acquire(user).await)
            }
        };
        self.finish(kind, via, request, decision)
    }

    pub async fn rpc(&self, via: Transport, request: &CallRequest<'_>) -> Decision<RpcResult> {
        let kind = ProxyKind::Rpc;
        let context = self.context(kind, request);
        let decision = match decide::rpc::route(
            context.as_ref().map_err(|p| *p),
            self.0.rpc.routes(),
            request.method,
        ) {
            Err(decision) => decision,
            Ok(url) => self.call_backend(url, request).await,
        };
        self.finish(kind, via, request, decision)
    }

    async fn call_backend(&self, url: &str, request: &CallRequest<'_>) -> Decision<RpcResult> {
        let encoded;
        let data: &RawValue = match &request.rpc_data {
            RpcData::Absent => RawValue::NULL,
            RpcData::Json(text) => match serde_json::from_str::<&RawValue>(text) {
                Ok(raw) => raw,
                Err(_) => return decide::bad_payload(),
            },
            // Binary rpc data is passed on as a base64 JSON string.
            RpcData::Base64(b64) => match serde_json::value::to_raw_value(b64) {
                Ok(raw) => {
                    encoded = raw;
                    &encoded
                }
                Err(_) => return decide::bad_payload(),
            },
        };
        // The meta parsed as the identity context above, so it is JSON.
        let context = request
            .meta
            .and_then(|m| serde_json::from_slice::<&RawValue>(m).ok())
            .unwrap_or(RawValue::NULL);
        let backend_request = BackendRequest {
            method: request.method,
            user: request.user,
            data,
            context,
        };
        let answer = self.0.rpc.call(url, &backend_request).await;
        decide::rpc::answer(&answer)
    }
}
