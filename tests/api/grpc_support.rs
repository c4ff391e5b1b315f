//! Shared pieces of the `grpc_*` tests. A test describes a proxy call once (`Call`) and sends
//! it over either transport; every gRPC response is read back into the JSON body the HTTP
//! edge answers the same decision with (`Body`), so both transports are held to the same
//! `replies` and to each other.

use crate::fake_identity::Scripted;
use base64::Engine as _;
use realtime_service::transport::grpc::proto::{
    self, centrifugo_proxy_client::CentrifugoProxyClient,
};
use realtime_service::transport::grpc::SECRET_METADATA;
use serde_json::{json, Map, Value};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::helpers::{TestApp, TestResponse, SECRET};
use crate::proxies_support::{request, with_raw_data, Who, CLIENT};
use crate::replies::default_meta;

pub type Client = CentrifugoProxyClient<Channel>;

/// `message` with each of `secrets` in the metadata Centrifugo's `grpc.static_metadata`
/// sends (none: no such metadata at all; two: the key twice).
pub fn with_secrets<M>(message: M, secrets: &[&str]) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    for secret in secrets {
        request.metadata_mut().append(
            SECRET_METADATA,
            MetadataValue::try_from(*secret).expect("ascii"),
        );
    }
    request
}

/// `message` with the right secret.
pub fn signed<M>(message: M) -> tonic::Request<M> {
    with_secrets(message, &[SECRET])
}

/// The proxy types: an HTTP route and a gRPC method each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Refresh,
    Subscribe,
    SubRefresh,
    Publish,
    Rpc,
}

impl Kind {
    pub const ALL: [Self; 6] = [
        Self::Connect,
        Self::Refresh,
        Self::Subscribe,
        Self::SubRefresh,
        Self::Publish,
        Self::Rpc,
    ];

    /// The HTTP route, which is also the `proxy` label of the metrics.
    pub fn route(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Refresh => "refresh",
            Self::Subscribe => "subscribe",
            Self::SubRefresh => "sub_refresh",
            Self::Publish => "publish",
            Self::Rpc => "rpc",
        }
    }
}

/// A client payload as Centrifugo forwards it.
#[derive(Debug, Clone)]
pub enum Data {
    /// JSON text, sent as it is (`data`).
    Json(String),
    /// The `b64data` string of a proxy with `binary_encoding` (encoding `binary`).
    B64(String),
}

/// One proxy call, described once, sent over either transport.
#[derive(Debug, Clone, Default)]
pub struct Call {
    pub user: String,
    pub meta: Option<Value>,
    pub channel: String,
    pub method: String,
    pub data: Option<Data>,
}

/// A Centrifugo-shaped gRPC request message: the common four fields, then `$field: $value`.
macro_rules! message {
    ($call:expr, $type:ident { $($field:ident: $value:expr),* $(,)? }) => {
        proto::$type {
            client: CLIENT.to_owned(),
            transport: "websocket".to_owned(),
            protocol: "json".to_owned(),
            encoding: $call.encoding().to_owned(),
            $($field: $value,)*
            ..Default::default()
        }
    };
}

impl Call {
    /// A call after connect by `user`, with the connection's `meta` (`None`: Centrifugo was
    /// not told to include it).
    pub fn new(user: &str, meta: Option<&Value>) -> Self {
        Self {
            user: user.to_owned(),
            meta: meta.cloned(),
            ..Self::default()
        }
    }

    /// A connect whose `data` is `{"token": ticket}`.
    pub fn connect(ticket: &str) -> Self {
        Self::default().json(&json!({ "token": ticket }).to_string())
    }

    /// The same connect with binary encoding: the data base64 in `b64data`.
    pub fn connect_binary(ticket: &str) -> Self {
        Self::default().binary(json!({ "token": ticket }).to_string().as_bytes())
    }

    pub fn channel(mut self, channel: &str) -> Self {
        channel.clone_into(&mut self.channel);
        self
    }

    pub fn method(mut self, method: &str) -> Self {
        method.clone_into(&mut self.method);
        self
    }

    /// `data`: JSON text, byte for byte.
    pub fn json(mut self, text: &str) -> Self {
        self.data = Some(Data::Json(text.to_owned()));
        self
    }

    /// `b64data`: `bytes` in standard base64, encoding `binary`.
    pub fn binary(self, bytes: &[u8]) -> Self {
        self.b64(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// `b64data` exactly as given (it need not be base64).
    pub fn b64(mut self, b64data: &str) -> Self {
        self.data = Some(Data::B64(b64data.to_owned()));
        self
    }

    fn encoding(&self) -> &'static str {
        match self.data {
            Some(Data::B64(_)) => "binary",
            _ => "json",
        }
    }

    fn data_bytes(&self) -> Vec<u8> {
        match &self.data {
            Some(Data::Json(text)) => text.clone().into_bytes(),
            _ => Vec::new(),
        }
    }

    fn b64data(&self) -> String {
        match &self.data {
            Some(Data::B64(b64)) => b64.clone(),
            _ => String::new(),
        }
    }

    fn meta_bytes(&self) -> Vec<u8> {
        self.meta
            .as_ref()
            .map(|m| m.to_string().into_bytes())
            .unwrap_or_default()
    }

    /// The body Centrifugo's HTTP proxy would send (empty fields left out).
    pub fn http_body(&self) -> String {
        let mut fields = Map::new();
        for (name, value) in [("channel", &self.channel), ("method", &self.method)] {
            if !value.is_empty() {
                fields.insert(name.to_owned(), json!(value));
            }
        }
        if let Some(Data::B64(b64)) = &self.data {
            fields.insert("encoding".to_owned(), json!("binary"));
            fields.insert("b64data".to_owned(), json!(b64));
        }
        let body = request(&self.user, self.meta.as_ref(), Value::Object(fields));
        match &self.data {
            Some(Data::Json(text)) => with_raw_data(&body, text),
            _ => body,
        }
    }

    pub fn connect_message(&self) -> proto::ConnectRequest {
        message!(
            self,
            ConnectRequest {
                name: "js".to_owned(),
                data: self.data_bytes(),
                b64data: self.b64data(),
            }
        )
    }

    pub fn refresh_message(&self) -> proto::RefreshRequest {
        message!(
            self,
            RefreshRequest {
                user: self.user.clone(),
                meta: self.meta_bytes(),
            }
        )
    }

    pub fn subscribe_message(&self) -> proto::SubscribeRequest {
        message!(
            self,
            SubscribeRequest {
                user: self.user.clone(),
                meta: self.meta_bytes(),
                channel: self.channel.clone(),
                data: self.data_bytes(),
                b64data: self.b64data(),
            }
        )
    }

    pub fn sub_refresh_message(&self) -> proto::SubRefreshRequest {
        message!(
            self,
            SubRefreshRequest {
                user: self.user.clone(),
                meta: self.meta_bytes(),
                channel: self.channel.clone(),
            }
        )
    }

    pub fn publish_message(&self) -> proto::PublishRequest {
        message!(
            self,
            PublishRequest {
                user: self.user.clone(),
                meta: self.meta_bytes(),
                channel: self.channel.clone(),
                data: self.data_bytes(),
                b64data: self.b64data(),
            }
        )
    }

    pub fn rpc_message(&self) -> proto::RpcRequest {
        message!(
            self,
            RpcRequest {
                user: self.user.clone(),
                meta: self.meta_bytes(),
                method: self.method.clone(),
                data: self.data_bytes(),
                b64data: self.b64data(),
            }
        )
    }

    /// Sends the call as `kind` on `client` with `secrets`; the answer as the HTTP body.
    pub async fn grpc_via(
        &self,
        client: &mut Client,
        kind: Kind,
        secrets: &[&str],
    ) -> Result<Value, tonic::Status> {
        // One line a method: the call, its secrets, and the answer read back.
        macro_rules! send {
            ($method:ident, $message:expr) => {
                client
                    .$method(with_secrets($message, secrets))
                    .await?
                    .into_inner()
                    .body()
            };
        }
        let answer = match kind {
            Kind::Connect => send!(connect, self.connect_message()),
            Kind::Refresh => send!(refresh, self.refresh_message()),
            Kind::Subscribe => send!(subscribe, self.subscribe_message()),
            Kind::SubRefresh => send!(sub_refresh, self.sub_refresh_message()),
            Kind::Publish => send!(publish, self.publish_message()),
            Kind::Rpc => send!(rpc, self.rpc_message()),
        };
        Ok(answer)
    }

    /// Sends the call as `kind` over gRPC with the right secret; status OK is required.
    pub async fn grpc(&self, app: &TestApp, kind: Kind) -> Value {
        self.grpc_via(&mut app.grpc(), kind, &[SECRET])
            .await
            .unwrap_or_else(|status| panic!("{kind:?} {self:?}: status {status:?}"))
    }

    /// Sends the call as `kind` over HTTP, signed.
    pub async fn http(&self, app: &TestApp, kind: Kind) -> TestResponse {
        app.post_signed(kind.route(), &self.http_body()).await
    }

    /// Both transports answer `want` (gRPC first). Only for calls that change nothing a
    /// second call would see: a connect that reaches identity-service uses its ticket up.
    pub async fn answers(&self, app: &TestApp, kind: Kind, want: &Value) {
        let grpc = self.grpc(app, kind).await;
        assert_eq!(&grpc, want, "gRPC {kind:?} {self:?}");
        let http = self.http(app, kind).await;
        assert_eq!(&http.json(), want, "HTTP {kind:?} {self:?}: {}", http.text);
        if kind != Kind::Connect {
            assert_eq!(http.status, 200, "HTTP {kind:?} {self:?}: {}", http.text);
        }
    }
}

/// Each row's call answers its `want` over both transports.
pub async fn assert_rows(app: &TestApp, kind: Kind, rows: &[(&str, Call, Value)]) {
    for (case, call, want) in rows {
        let grpc = call.grpc(app, kind).await;
        let http = call.http(app, kind).await;
        assert_eq!(
            (&grpc, &http.json()),
            (want, want),
            "{kind:?} {case}: gRPC answered {grpc}, HTTP {} {}",
            http.status,
            http.text
        );
    }
}

/// Scripts `answer` for two tickets `<tag>-http` and `<tag>-grpc` and connects with each over
/// its transport (`call` makes the connect for a ticket): the HTTP answer and the gRPC one.
pub async fn connect_both(
    app: &TestApp,
    tag: &str,
    answer: &Scripted,
    call: impl Fn(&str) -> Call,
) -> (TestResponse, proto::ConnectResponse) {
    let (http_ticket, grpc_ticket) = (format!("{tag}-http"), format!("{tag}-grpc"));
    app.identity.add_ticket(&http_ticket, answer.clone());
    app.identity.add_ticket(&grpc_ticket, answer.clone());
    let http = call(&http_ticket).http(app, Kind::Connect).await;
    let grpc = app
        .grpc()
        .connect(signed(call(&grpc_ticket).connect_message()))
        .await
        .unwrap_or_else(|status| panic!("{tag}: status {status:?}"))
        .into_inner();
    (http, grpc)
}

/// One call of each type by `user` of `Scripted::success(user)`, each one the default policy
/// allows: a connect with `ticket`, then the calls of the connection (the rpc to route `ok`).
pub fn one_of_each(ticket: &str, user: &str) -> [(Kind, Call); 6] {
    let meta = default_meta(user);
    let call = Call::new(user, Some(&meta));
    let family = format!("family-of-{user}");
    [
        (Kind::Connect, Call::connect(ticket)),
        (Kind::Refresh, call.clone()),
        (Kind::Subscribe, call.clone().channel("broadcast:news")),
        (
            Kind::SubRefresh,
            call.clone().channel(&format!("family:{family}")),
        ),
        (
            Kind::Publish,
            call.clone()
                .channel(&format!("chat:{family}"))
                .json(r#"{"text":"hi"}"#),
        ),
        (Kind::Rpc, call.method("ok.get").json("{}")),
    ]
}

/// Connects `who` over gRPC with `ticket` and returns the meta it gets.
pub async fn connect_grpc(app: &TestApp, who: &Who, ticket: &str) -> Value {
    app.identity.add_ticket(ticket, who.scripted());
    let body = Call::connect(ticket).grpc(app, Kind::Connect).await;
    assert_eq!(body["result"]["user"], json!(who.user), "{body}");
    body["result"]["meta"].clone()
}

/// A connect message of exactly `len` protobuf bytes carrying `ticket`.
pub fn connect_message_of_len(ticket: &str, len: usize) -> proto::ConnectRequest {
    use prost::Message as _;
    let shaped = |pad: usize| {
        Call::default()
            .json(&json!({"token": ticket, "pad": "x".repeat(pad)}).to_string())
            .connect_message()
    };
    let base = shaped(0).encoded_len();
    assert!(len >= base, "{len} < {base}");
    // A longer `data` may need a longer length prefix: step back until it fits.
    let mut pad = len - base;
    while shaped(pad).encoded_len() > len {
        pad -= 1;
    }
    let message = shaped(pad);
    assert_eq!(message.encoded_len(), len);
    message
}

/// `realtime_centrifugo_connect_total` for `outcome` over `transport`.
pub async fn connect_outcome(app: &TestApp, outcome: &str, transport: &str) -> f64 {
    app.metric(&format!(
        "realtime_centrifugo_connect_total{{outcome=\"{outcome}\",transport=\"{transport}\"}}"
    ))
    .await
}

/// `realtime_proxy_decisions_total` for `kind` and `outcome` over `transport`.
pub async fn decisions(app: &TestApp, kind: Kind, outcome: &str, transport: &str) -> f64 {
    app.metric(&format!(
        "realtime_proxy_decisions_total{{proxy=\"{}\",outcome=\"{outcome}\",transport=\"{transport}\"}}",
        kind.route()
    ))
    .await
}

/// A gRPC response read back as the JSON body HTTP sends for the same decision.
pub trait Body {
    fn body(&self) -> Value;
}

/// HTTP's envelope: exactly one of result, error (with `temporary` only when true) or
/// disconnect.
fn envelope(
    result: Option<Value>,
    error: Option<&proto::Error>,
    disconnect: Option<&proto::Disconnect>,
) -> Value {
    match (result, error, disconnect) {
        (Some(result), None, None) => json!({ "result": result }),
        (None, Some(e), None) if e.temporary => {
            json!({"error":{"code":e.code,"message":e.message,"temporary":true}})
        }
        (None, Some(e), None) => json!({"error":{"code":e.code,"message":e.message}}),
        (None, None, Some(d)) => json!({"disconnect":{"code":d.code,"reason":d.reason}}),
        other => panic!("not exactly one of result, error and disconnect: {other:?}"),
    }
}

/// A result's fields as a JSON object: only the ones that are set (HTTP leaves out what it
/// does not send), `bytes` fields parsed as the JSON text they carry, and anything else
/// that is set shown by its debug form, so an unexpected field fails the comparison.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Fields {
    fn put(mut self, name: &str, set: bool, value: impl FnOnce() -> Value) -> Self {
        if set {
            self.0.insert(name.to_owned(), value());
        }
        self
    }

    fn text(self, name: &str, value: &str) -> Self {
        self.put(name, !value.is_empty(), || json!(value))
    }

    fn int(self, name: &str, value: i64) -> Self {
        self.put(name, value != 0, || json!(value))
    }

    fn flag(self, name: &str, value: bool) -> Self {
        self.put(name, value, || json!(true))
    }

    fn json(self, name: &str, bytes: &[u8]) -> Self {
        self.put(name, !bytes.is_empty(), || {
            serde_json::from_slice(bytes)
                .unwrap_or_else(|_| json!(format!("not JSON: {}", String::from_utf8_lossy(bytes))))
        })
    }

    fn other(self, name: &str, set: bool, debug: impl std::fmt::Debug) -> Self {
        self.put(name, set, || json!(format!("{debug:?}")))
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

macro_rules! body {
    ($($response:ident => |$r:ident| $fields:expr;)+) => {$(
        impl Body for proto::$response {
            fn body(&self) -> Value {
                envelope(
                    self.result.as_ref().map(|$r| $fields.done()),
                    self.error.as_ref(),
                    self.disconnect.as_ref(),
                )
            }
        }
    )+};
}

body! {
    ConnectResponse => |r| Fields::default()
        .text("user", &r.user)
        .int("expire_at", r.expire_at)
        .json("info", &r.info)
        .text("b64info", &r.b64info)
        .json("data", &r.data)
        .text("b64data", &r.b64data)
        .other("channels", !r.channels.is_empty(), &r.channels)
        .other("subs", !r.subs.is_empty(), &r.subs)
        .json("meta", &r.meta)
        .other("caps", !r.caps.is_empty(), &r.caps)
        .other("labels", !r.labels.is_empty(), &r.labels);
    RefreshResponse => |r| Fields::default()
        .flag("expired", r.expired)
        .int("expire_at", r.expire_at)
        .json("info", &r.info)
        .text("b64info", &r.b64info)
        .json("meta", &r.meta)
        .other("caps", !r.caps.is_empty(), &r.caps);
    SubscribeResponse => |r| Fields::default()
        .int("expire_at", r.expire_at)
        .json("info", &r.info)
        .text("b64info", &r.b64info)
        .json("data", &r.data)
        .text("b64data", &r.b64data)
        .other("override", r.r#override.is_some(), r.r#override)
        .other("allow", !r.allow.is_empty(), &r.allow)
        .other("server_tags_filter", r.server_tags_filter.is_some(), &r.server_tags_filter);
    SubRefreshResponse => |r| Fields::default()
        .flag("expired", r.expired)
        .int("expire_at", r.expire_at)
        .json("info", &r.info)
        .text("b64info", &r.b64info);
    PublishResponse => |r| Fields::default()
        .json("data", &r.data)
        .text("b64data", &r.b64data)
        .flag("skip_history", r.skip_history)
        .other("tags", !r.tags.is_empty(), &r.tags)
        .text("idempotency_key", &r.idempotency_key)
        .flag("delta", r.delta)
        .int("version", i64::try_from(r.version).unwrap_or(i64::MAX))
        .text("version_epoch", &r.version_epoch);
    RpcResponse => |r| Fields::default()
        .json("data", &r.data)
        .text("b64data", &r.b64data);
}
