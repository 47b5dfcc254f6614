//! Calls from this machine to the gateway: one agent (30 s, statuses as answers), answers read
//! as JSON that report a broken read as what it is, and refusals worded one way.

use anyhow::{Context, Result};
use parapet_api::ErrorBody;
use parapet_device::DeviceSecrets;
use serde_json::Value;

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into()
}

/// The JSON of the gateway's answer. A success whose body cannot be read or parsed (the
/// connection broke on the way, say) is an error that says so, never an empty answer; a refusal
/// without a JSON body reads as null, and its status tells what happened.
pub fn answer_json(res: &mut ureq::http::Response<ureq::Body>) -> Result<Value> {
    let status = res.status();
    match res.body_mut().read_json::<Value>() {
        Ok(v) => Ok(v),
        Err(e) if status.is_success() => Err(anyhow::Error::new(e).context(format!(
            "reading the gateway's answer (HTTP {})",
            status.as_u16()
        ))),
        Err(_) => Ok(Value::Null),
    }
}

/// An answer read as its wire type (`parapet_api`); an answer of another shape is an error that
/// names what was expected.
pub fn typed<T: serde::de::DeserializeOwned>(body: Value) -> Result<T> {
    serde_json::from_value(body).with_context(|| {
        format!(
            "the gateway's answer is not a {}",
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("known answer")
        )
    })
}

/// A string field of a JSON answer.
pub fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The gateway's error body, when the answer is one.
fn error_body(body: &Value) -> Option<ErrorBody> {
    serde_json::from_value(body.clone()).ok()
}

/// The gateway's error `message` (or the status) for a refused call.
pub fn refusal(status: u16, body: &Value) -> String {
    error_body(body).map_or_else(|| format!("HTTP {status}"), |e| e.message)
}

pub fn device_get(secrets: &DeviceSecrets, path: &str) -> Result<Value> {
    let mut res = agent()
        .get(&format!("{}{path}", secrets.gateway))
        .header("authorization", &format!("Device {}", secrets.device_token))
        .call()
        .with_context(|| format!("reaching {}", secrets.gateway))?;
    let status = res.status().as_u16();
    let body: Value = answer_json(&mut res)?;
    if status != 200 {
        return Err(refused(status, &body));
    }
    Ok(body)
}

pub fn device_post(secrets: &DeviceSecrets, path: &str, body: &Value) -> Result<(u16, Value)> {
    let mut res = agent()
        .post(&format!("{}{path}", secrets.gateway))
        .header("authorization", &format!("Device {}", secrets.device_token))
        .send_json(body)
        .with_context(|| format!("reaching {}", secrets.gateway))?;
    let status = res.status().as_u16();
    Ok((status, answer_json(&mut res)?))
}

pub fn post_json(url: &str, auth: Option<&str>, body: &Value) -> Result<(u16, Value)> {
    let mut req = agent().post(url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let mut res = req
        .send_json(body)
        .with_context(|| format!("reaching {url}"))?;
    let status = res.status().as_u16();
    Ok((status, answer_json(&mut res)?))
}

/// A refused call as an error: the gateway's message and code.
pub fn refused(status: u16, body: &Value) -> anyhow::Error {
    match error_body(body) {
        Some(e) => anyhow::anyhow!("the gateway refused: {} ({})", e.message, e.code),
        None => anyhow::anyhow!("the gateway refused: HTTP {status} (?)"),
    }
}
