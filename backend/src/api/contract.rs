//! The answers every operation can give besides its own, added to the OpenAPI document in one
//! place: the layers in front of the handlers (host check, rate limits, authentication, scopes,
//! idempotency, body limits, timeouts) answer the same way on every route they cover, so each
//! operation's own list stays about the operation and none can forget one.

use utoipa::Modify;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Required, ResponseBuilder};

use crate::{idempotency, perimeter};

/// The `Idempotency-Key` header as the idempotency middleware accepts it.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]+$";

pub struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            // The perimeter lets these through untouched (no host check, no per-IP limit).
            let operational = perimeter::is_operational(path);
            for (is_post, operation) in [
                (false, item.get.as_mut()),
                (true, item.post.as_mut()),
                (false, item.delete.as_mut()),
            ] {
                if let Some(operation) = operation {
                    add_answers(operation, is_post, operational);
                }
            }
        }
    }
}

fn add_answers(operation: &mut Operation, is_post: bool, operational: bool) {
    let schemes = security_schemes(operation);
    let secret_key = schemes.iter().any(|scheme| scheme == "api_key");
    let mut answers: Vec<(&str, &str)> = Vec::new();
    if !operational {
        answers.push(("400", "Malformed request, or a host name not served here"));
        answers.push(("429", "Rate limited; retry after `Retry-After` seconds"));
    }
    if !schemes.is_empty() {
        answers.push(("401", "Missing or invalid credentials"));
    }
    if secret_key {
        answers.push(("403", "The API key lacks the operation's scope"));
    }
    if is_post {
        answers.push(("413", "The body exceeds the configured limit"));
    }
    if operation.request_body.is_some() {
        answers.push(("415", "The body is not of the documented media type"));
        answers.push(("422", "Invalid fields; `errors` lists them"));
    }
    if is_post && secret_key {
        answers.push((
            "409",
            "A request with this Idempotency-Key is still running",
        ));
        answers.push((
            "422",
            "This Idempotency-Key was used with another request, or invalid fields",
        ));
        add_idempotency_key(operation);
    }
    answers.push(("500", "Internal error; the request id is in `instance`"));
    answers.push((
        "503",
        "Temporarily unavailable (a dependency is down or the request timed out); retry after `Retry-After`",
    ));
    for (status, description) in answers {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| problem(description));
    }
}

/// The security scheme names an operation accepts (`api_key`, `client_token`).
fn security_schemes(operation: &Operation) -> Vec<String> {
    let Ok(serde_json::Value::Array(requirements)) = serde_json::to_value(&operation.security)
    else {
        return Vec::new();
    };
    requirements
        .iter()
        .filter_map(serde_json::Value::as_object)
        .flat_map(|requirement| requirement.keys().cloned())
        .collect()
}

fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                idyntra_types::Problem::CONTENT_TYPE,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

fn add_idempotency_key(operation: &mut Operation) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    parameters.retain(|parameter| !parameter.name.eq_ignore_ascii_case(idempotency::HEADER));
    parameters.push(idempotency_key());
}

fn idempotency_key() -> Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes retries safe: the same key and request within 24 h answer the first \
             answer again. 1 to 255 visible ASCII characters; use a new one per request.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(idempotency::MAX_KEY_LEN))
                .pattern(Some(IDEMPOTENCY_KEY_PATTERN)),
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::*;
    use crate::api::ApiDoc;

    fn operation(
        document: &utoipa::openapi::OpenApi,
        path: &str,
        method: &str,
    ) -> serde_json::Value {
        let document = serde_json::to_value(document).unwrap();
        document["paths"][path][method].clone()
    }

    fn statuses(operation: &serde_json::Value) -> Vec<String> {
        operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn secret_key_posts_document_the_layers_answers_and_one_idempotency_key() {
        let document = ApiDoc::openapi();
        let create = operation(&document, "/v1/sessions", "post");
        for status in [
            "201", "400", "401", "403", "409", "413", "415", "422", "429", "500", "503",
        ] {
            assert!(statuses(&create).contains(&status.to_owned()), "{status}");
        }
        // The operation's own descriptions win over the common ones.
        assert_eq!(
            create["responses"]["403"]["description"],
            "The key lacks sessions:write"
        );
        let keys: Vec<_> = create["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == "Idempotency-Key")
            .collect();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["schema"]["maxLength"], 255);
        assert_eq!(keys[0]["schema"]["pattern"], IDEMPOTENCY_KEY_PATTERN);
    }

    #[test]
    fn the_webhook_url_schema_states_the_servers_own_pattern() {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let url = &document["components"]["schemas"]["CreateWebhookEndpoint"]["properties"]["url"];
        assert_eq!(url["pattern"], crate::webhooks::RECEIVER_URL_PATTERN);
    }

    #[test]
    fn list_parameters_are_optional_query_parameters() {
        let list = operation(&ApiDoc::openapi(), "/v1/sessions", "get");
        let parameters = list["parameters"].as_array().unwrap();
        assert_eq!(parameters.len(), 3);
        for parameter in parameters {
            assert_eq!(parameter["in"], "query", "{parameter}");
            assert_eq!(parameter["required"], false, "{parameter}");
        }
    }

    #[test]
    fn each_operation_gets_only_the_answers_its_layers_give() {
        let document = ApiDoc::openapi();
        let retrieve = statuses(&operation(&document, "/v1/sessions/{id}", "get"));
        assert!(retrieve.contains(&"403".to_owned()));
        assert!(!retrieve.contains(&"415".to_owned()), "no body, no 415");
        let upload = statuses(&operation(&document, "/v1/sessions/{id}/media", "post"));
        assert!(upload.contains(&"401".to_owned()));
        let healthz = statuses(&operation(&document, "/healthz", "get"));
        assert_eq!(healthz, ["200", "500", "503"], "no credentials, no limits");
        let jwks = statuses(&operation(&document, "/.well-known/jwks.json", "get"));
        assert!(jwks.contains(&"429".to_owned()) && !jwks.contains(&"401".to_owned()));
    }
}
