//! Verification sessions as the server-to-server API shows them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Created,
    Submitted,
    Processing,
    Verified,
    Rejected,
    NeedsReview,
    Canceled,
    Expired,
}

impl SessionStatus {
    pub const ALL: [SessionStatus; 8] = [
        Self::Created,
        Self::Submitted,
        Self::Processing,
        Self::Verified,
        Self::Rejected,
        Self::NeedsReview,
        Self::Canceled,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Submitted => "submitted",
            Self::Processing => "processing",
            Self::Verified => "verified",
            Self::Rejected => "rejected",
            Self::NeedsReview => "needs_review",
            Self::Canceled => "canceled",
            Self::Expired => "expired",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
    }

    /// A decided, canceled or expired session does not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Verified | Self::Rejected | Self::NeedsReview | Self::Canceled | Self::Expired
        )
    }

    /// Only sessions that have not been decided or started processing may be canceled.
    pub fn is_cancelable(self) -> bool {
        matches!(self, Self::Created | Self::Submitted)
    }
}

/// How liveness is proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LivenessMode {
    /// A single selfie judged by the passive presentation-attack model.
    Passive,
    /// Passive checks plus a head-turn and colour-flash challenge derived from the session nonce.
    #[default]
    Active,
}

/// Options chosen when a session is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionOptions {
    /// Whether an identity document photo is required (default `true`).
    #[serde(default = "default_true")]
    pub require_document: bool,
    #[serde(default)]
    pub liveness: LivenessMode,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            require_document: true,
            liveness: LivenessMode::default(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// Body of `POST /v1/sessions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// The caller's own identifier for this verification: 1 to 255 characters, no control
    /// characters.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub reference: Option<String>,
    /// Up to 20 string key/value pairs stored with the session and returned as given: keys of 1
    /// to 40 characters without control characters, values of at most 500 characters without NUL.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = metadata_schema))]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "object_or_null")]
    pub options: Option<SessionOptions>,
}

/// Options as a JSON object (or `null`) only: serde would also read a struct from an array of
/// its fields in order, which no client means.
fn object_or_null<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SessionOptions>, D::Error> {
    struct ObjectOrNull;
    impl<'de> serde::de::Visitor<'de> for ObjectOrNull {
        type Value = Option<SessionOptions>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("an object or null")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(
            self,
            inner: D,
        ) -> Result<Self::Value, D::Error> {
            inner.deserialize_map(self)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            SessionOptions::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    deserializer.deserialize_option(ObjectOrNull)
}

/// The limits the API enforces on `metadata`, for its schema.
#[cfg(feature = "openapi")]
fn metadata_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let text = |max: usize, pattern: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(max))
            .pattern(Some(pattern))
    };
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .max_properties(Some(20))
        .property_names(Some(
            text(40, r"^[^\u0000-\u001f\u007f-\u009f]*$").min_length(Some(1)),
        ))
        .additional_properties(Some(text(500, r"^[^\u0000]*$")))
        .build()
}

/// A verification session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    /// `ses_…`
    pub id: String,
    /// Always `"verification_session"`.
    pub object: String,
    pub status: SessionStatus,
    pub reference: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Map<String, Value>,
    pub options: SessionOptions,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds after which the session can no longer be submitted.
    pub expires_at: i64,
    /// Unix seconds of the last status change.
    pub updated: i64,
    /// The token the browser uses for this session; only in the answer to the create call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// The decision and every score, once decided.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub result: Option<Value>,
    /// Unix seconds of a redaction of the session's biometric data.
    pub redacted_at: Option<i64>,
}

impl Session {
    pub const OBJECT: &'static str = "verification_session";
}

/// A page of a cursor-paginated list (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// Always `"list"`.
    pub object: String,
    pub data: Vec<T>,
    /// Whether more items follow the last one; fetch them with `starting_after=<last id>`.
    pub has_more: bool,
}

impl<T> Page<T> {
    pub fn new(data: Vec<T>, has_more: bool) -> Self {
        Self {
            object: "list".to_owned(),
            data,
            has_more,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_an_object_or_null_never_an_array() {
        let read = |json: &str| serde_json::from_str::<CreateSessionRequest>(json);
        assert_eq!(read(r#"{"options": null}"#).unwrap().options, None);
        assert_eq!(read("{}").unwrap().options, None);
        let options = read(r#"{"options": {"require_document": false}}"#)
            .unwrap()
            .options
            .unwrap();
        assert!(!options.require_document);
        assert!(read(r#"{"options": []}"#).is_err());
        assert!(read(r#"{"options": [false]}"#).is_err());
        assert!(read(r#"{"options": {"unknown": 1}}"#).is_err());
    }

    #[test]
    fn status_names_round_trip() {
        for status in SessionStatus::ALL {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, status.as_str());
            assert_eq!(SessionStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(SessionStatus::parse("done"), None);
    }

    #[test]
    fn create_request_defaults_and_rejects_unknown_fields() {
        let request: CreateSessionRequest = serde_json::from_str(r#"{"options": {}}"#).unwrap();
        assert_eq!(request.options, Some(SessionOptions::default()));
        assert!(SessionOptions::default().require_document);
        assert!(serde_json::from_str::<CreateSessionRequest>(r#"{"refrence": "x"}"#).is_err());
        assert!(
            serde_json::from_str::<CreateSessionRequest>(r#"{"options": {"liveness": "blink"}}"#)
                .is_err()
        );
    }
}
