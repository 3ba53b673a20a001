//! The Worker's abuse ledger: a Durable Object per client (its failures) and per session (its
//! attempts), bound as `ABUSE_LEDGER` in `wrangler.toml`. Cloudflare runs each object once, in
//! one place, so every isolate that asks counts against the same failures and attempts — what an
//! isolate's own memory cannot do. The rules are the core's ([`FailureLog`], [`next_attempt`]);
//! the isolate's own guard still applies, and decides alone if the object cannot be reached.

use serde::{Deserialize, Serialize};
use worker::wasm_bindgen::JsValue;
use worker::{
    DurableObject, Env, Method, ObjectNamespace, Request, RequestInit, Response, State,
    durable_object,
};

use crate::abuse::{AbuseLimits, FailureLog, Refusal, next_attempt};

/// The binding's name in `wrangler.toml`.
const BINDING: &str = "ABUSE_LEDGER";

/// What the Worker asks an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Ask {
    /// Whether the client may try (a client's object).
    Check,
    /// Record a failure of the client (a client's object).
    Fail,
    /// Count an attempt of the session, whose token expires at `expires_at` (a session's object).
    Admit { expires_at: i64 },
}

#[derive(Debug, Serialize, Deserialize)]
struct Call {
    ask: Ask,
    limits: AbuseLimits,
    /// Unix seconds, from the asking isolate: the same clock its own guard uses.
    now: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Answer {
    refusal: Option<Refusal>,
}

/// The ledger of one client or one session. Only `fetch` and `alarm` are bound: nothing else
/// reaches it.
#[durable_object(alarm)]
pub struct AbuseLedger {
    state: State,
}

impl AbuseLedger {
    async fn answer(&self, call: &Call) -> worker::Result<Answer> {
        let storage = self.state.storage();
        let refusal = match call.ask {
            Ask::Check => {
                let mut log: FailureLog = storage.get("failures").await?.unwrap_or_default();
                log.check(&call.limits, call.now).err()
            }
            Ask::Fail => {
                let mut log: FailureLog = storage.get("failures").await?.unwrap_or_default();
                log.record(&call.limits, call.now);
                storage.put("failures", &log).await?;
                let forgotten_at = log.forgotten_at(&call.limits).unwrap_or(call.now);
                self.forget_at(forgotten_at, call.now).await?;
                None
            }
            Ask::Admit { expires_at } => {
                let made: u32 = storage.get("attempts").await?.unwrap_or(0);
                match next_attempt(made, &call.limits) {
                    Ok(made) => {
                        storage.put("attempts", made).await?;
                        // A minute past the token's expiry, as the native hosts keep it.
                        self.forget_at(expires_at.saturating_add(60), call.now)
                            .await?;
                        None
                    }
                    Err(refusal) => Some(refusal),
                }
            }
        };
        Ok(Answer { refusal })
    }

    /// Sets the alarm that empties this object once nothing in it counts any more.
    async fn forget_at(&self, at: i64, now: i64) -> worker::Result<()> {
        let offset_ms = at.saturating_sub(now).max(1).saturating_mul(1000);
        self.state.storage().set_alarm(offset_ms).await
    }
}

impl DurableObject for AbuseLedger {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    async fn fetch(&self, mut request: Request) -> worker::Result<Response> {
        let call: Call = request.json().await?;
        Response::from_json(&self.answer(&call).await?)
    }

    async fn alarm(&self) -> worker::Result<Response> {
        self.state.storage().delete_all().await?;
        Response::ok("")
    }
}

/// The ledger as an isolate uses it; absent when the Worker has no `ABUSE_LEDGER` binding.
pub struct Ledger {
    objects: ObjectNamespace,
    limits: AbuseLimits,
}

impl Ledger {
    pub fn bound(env: &Env, limits: AbuseLimits) -> Option<Self> {
        env.durable_object(BINDING)
            .ok()
            .map(|objects| Self { objects, limits })
    }

    async fn ask(&self, name: &str, ask: Ask, now: i64) -> worker::Result<Answer> {
        let call = Call {
            ask,
            limits: self.limits,
            now,
        };
        let body =
            serde_json::to_string(&call).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_body(Some(JsValue::from_str(&body)));
        let request = Request::new_with_init("https://abuse-ledger/", &init)?;
        let stub = self.objects.id_from_name(name)?.get_stub()?;
        stub.fetch_with_request(request).await?.json().await
    }

    /// An answer, or none when the object could not be asked (the isolate's guard decides then).
    async fn ask_or_log(&self, name: &str, ask: Ask, now: i64) -> Option<Refusal> {
        match self.ask(name, ask, now).await {
            Ok(answer) => answer.refusal,
            Err(error) => {
                worker::console_error!("abuse ledger unavailable: {error}");
                None
            }
        }
    }

    /// Whether `client` may try, and `session` has attempts left; counts the attempt when both
    /// hold. The client is asked first, so a locked-out client uses none of the session's.
    pub async fn admit(
        &self,
        client: &str,
        session: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), Refusal> {
        if let Some(refusal) = self
            .ask_or_log(&format!("client:{client}"), Ask::Check, now)
            .await
        {
            return Err(refusal);
        }
        match self
            .ask_or_log(
                &format!("session:{session}"),
                Ask::Admit { expires_at },
                now,
            )
            .await
        {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    pub async fn record_failure(&self, client: &str, now: i64) {
        self.ask_or_log(&format!("client:{client}"), Ask::Fail, now)
            .await;
    }
}
