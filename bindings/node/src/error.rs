//! The one error mapper of the binding: every core [`AuditError`] becomes a
//! JS `Error` whose `code` is `ERR_AUDIT_<KIND>` (from
//! [`agent_audit::ErrorKind::as_str`]) and whose message keeps the cause
//! chain. The TypeScript layer turns the code into an `AuditError`
//! subclass, so the mapping lives in exactly one place per language.

use std::error::Error as _;

use agent_audit::AuditError;
use napi::bindgen_prelude::{Env, JsObjectValue, JsValue, Status};

/// Stable JS error code of a core error.
pub fn code_of(e: &AuditError) -> String {
    format!("ERR_AUDIT_{}", e.kind().as_str())
}

/// The message of `e` followed by its causes, when they add something.
pub fn message_of(e: &AuditError) -> String {
    let mut msg = e.message().to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}

/// A JS error with `code` set, ready to be thrown or to reject a promise.
/// Must run on the JS thread of `env`.
pub fn to_js(env: &Env, code: &str, message: &str) -> napi::Error {
    let build = || -> napi::Result<napi::Error> {
        let mut obj = env.create_error(napi::Error::new(Status::GenericFailure, message))?;
        obj.set_named_property("code", code)?;
        Ok(napi::Error::from(obj.to_unknown()))
    };
    // If the environment cannot even build an object, fall back to napi's
    // own error (its `code` is then the status name).
    build()
        .unwrap_or_else(|_| napi::Error::new(Status::GenericFailure, format!("{code}: {message}")))
}

/// Maps a core error to a JS error (see [`to_js`]).
pub fn audit_to_js(env: &Env, e: &AuditError) -> napi::Error {
    to_js(env, &code_of(e), &message_of(e))
}

/// A core error moved off the JS thread, rebuilt as a JS error later.
#[derive(Debug)]
pub struct Failure {
    /// `ERR_AUDIT_…`
    pub code: String,
    /// Message with causes.
    pub message: String,
}

impl From<AuditError> for Failure {
    fn from(e: AuditError) -> Self {
        Failure {
            code: code_of(&e),
            message: message_of(&e),
        }
    }
}

impl Failure {
    /// The JS error for this failure (JS thread only).
    pub fn to_js(&self, env: &Env) -> napi::Error {
        to_js(env, &self.code, &self.message)
    }
}
