//! RFC 9457 problem details, the body of every error answer.

use serde::{Deserialize, Serialize};

/// An error answer (`application/problem+json`).
///
/// `code` is the stable, machine-readable reason a client should branch on; `title` and `detail` are
/// for people and may change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine-readable code, e.g. `invalid_json` or `rate_limited`.
    pub code: String,
    /// The request id, also sent in the `x-request-id` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Problems with individual fields of the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// JSON pointer or parameter name of the field.
    pub field: String,
    pub message: String,
    /// Stable machine-readable code of this field's problem, where it has one (e.g. `too_dark`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl Problem {
    /// The media type of a problem body.
    pub const CONTENT_TYPE: &'static str = "application/problem+json";

    /// A problem with the given status, code and title; the type URI is derived from the code.
    pub fn new(status: u16, code: impl Into<String>, title: impl Into<String>) -> Self {
        let code = code.into();
        Self {
            problem_type: format!("https://idyntra.dev/problems/{code}"),
            title: title.into(),
            status,
            detail: None,
            code,
            request_id: None,
            errors: Vec::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_rfc9457_member_names() {
        let problem = Problem::new(404, "not_found", "Not found").with_detail("no such session");
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(json["type"], "https://idyntra.dev/problems/not_found");
        assert_eq!(json["status"], 404);
        assert_eq!(json["detail"], "no such session");
        assert!(json.get("errors").is_none(), "empty errors are omitted");
        let back: Problem = serde_json::from_value(json).unwrap();
        assert_eq!(back, problem);
    }
}
