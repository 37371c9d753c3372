//! `docs/admin-api.json`, the admin API's OpenAPI document, against a running gateway: every
//! documented operation and status that can be provoked here is called, and the answer's status,
//! content type and JSON body (required fields, types, enums) must be as documented. The
//! statuses that cannot be provoked from a test are listed in `UNPROVOKED`, each with why, and
//! every other documented status must be provoked. The reverse direction (every route the
//! router serves is in the document, with its methods) is a unit test next to the router, in
//! `gateway/src/admin/routes.rs`; here the `Allow` header of each path's 405 must list exactly
//! the documented methods.

mod gateway_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway_support::{Gateway, Resp};
use serde_json::Value;

const DOC: &str = include_str!("../../docs/admin-api.json");
const KEY: &str = "openapi-key";

/// Documented statuses no test here can bring about, with the reason.
const UNPROVOKED: &[(&str, &str, &str, &str)] = &[
    ("/healthz", "get", "503", "needs a worker thread to die"),
    ("/healthz", "head", "503", "needs a worker thread to die"),
    ("/v1/connections/{id}/close", "post", "503", "needs a loop's command queue to stay full"),
    ("/v1/tls/reload", "post", "200", "needs TLS, which these gateways lack: tests/gateway_tls.rs"),
    ("/v1/tls/reload", "post", "500", "needs TLS, which these gateways lack: tests/gateway_tls.rs"),
];

/// One documented operation.
struct Op {
    path: String,
    method: String,
    op: Value,
}

fn doc() -> Value {
    serde_json::from_str(DOC).expect("docs/admin-api.json is JSON")
}

fn operations(doc: &Value) -> Vec<Op> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut ops = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            ops.push(Op { path: path.clone(), method: method.clone(), op: op.clone() });
        }
    }
    ops
}

/// Follows a `$ref` into `components`.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local $ref");
            resolve(doc, doc.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {r}")))
        }
        None => v,
    }
}

/// Checks `value` against the subset of JSON Schema the document uses: `type`, `enum`,
/// `required`, `properties`, `additionalProperties`, `items`, `oneOf`. Returns what is wrong.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let errors: Vec<String> = options.iter().filter_map(|s| check(doc, s, value, at).err()).collect();
        return if errors.len() < options.len() { Ok(()) } else { Err(errors.join("; ")) };
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    let Some(kind) = schema.get("type").and_then(Value::as_str) else { return Ok(()) };
    let ok = match kind {
        "string" => value.is_string(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => return Err(format!("{at}: unknown type {other} in the document")),
    };
    if !ok {
        return Err(format!("{at}: {value} is not a {kind}"));
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_i64) {
        if value.as_i64().is_some_and(|n| n < min) {
            return Err(format!("{at}: {value} below {min}"));
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    if let Some(object) = value.as_object() {
        for field in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let field = field.as_str().expect("required names");
            if !object.contains_key(field) {
                return Err(format!("{at}: lacks required {field:?} in {value}"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, v) in object {
            match (properties.and_then(|p| p.get(name)), schema.get("additionalProperties")) {
                (Some(s), _) => check(doc, s, v, &format!("{at}.{name}"))?,
                (None, Some(Value::Bool(false))) => return Err(format!("{at}: undocumented {name:?}")),
                (None, Some(s)) if s.is_object() => check(doc, s, v, &format!("{at}.{name}"))?,
                (None, _) => {}
            }
        }
    }
    Ok(())
}

/// One request on a fresh connection, with exactly the headers given (see
/// [`gateway_support::request`]).
fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    gateway_support::request(addr, method, path, headers, body)
}

/// Which gateway a request goes to: `Main` has the API key, the demo and `admin_allowed_hosts`;
/// `Plain` has no demo, and is drained (SIGTERM) before its 503s are asked for.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Target {
    Main,
    Plain,
    Draining,
}

struct Call {
    target: Target,
    method: String,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// The request that should bring about `status` from `op`, or `None` when this file has no way
/// to (the test then requires the pair in `UNPROVOKED`).
fn call_for(op: &Op, status: &str, conn: &str) -> Option<Call> {
    let (path, method) = (op.path.as_str(), op.method.to_uppercase());
    let concrete = |name: &str, id: &str| {
        path.replace("{name}", name)
            .replace("{id}", if path.starts_with("/v1/connections") { conn } else { id })
    };
    let auth = ("Authorization", format!("Bearer {KEY}"));
    let mut call = Call {
        target: Target::Main,
        method: method.clone(),
        path: concrete("news", "alice"),
        headers: vec![auth.clone()],
        body: Vec::new(),
    };
    let json_type = ("Content-Type", "application/json".to_owned());
    let good_body: &[u8] = match path {
        "/v1/publish" => br#"{"channel":"news","data":{"n":1}}"#,
        "/v1/publish/batch" => br#"{"messages":[{"channel":"news","data":1},{"channel":"other"}]}"#,
        "/v1/connections/{id}/close" => br#"{"code":4000,"reason":"bye"}"#,
        _ => b"hello",
    };
    if method == "POST" {
        call.headers.push(json_type.clone());
        call.body = good_body.to_vec();
    }
    match status {
        // Without TLS (as here) the reload answers 409 only.
        "200" if path == "/v1/tls/reload" => return None,
        "409" if path == "/v1/tls/reload" => {}
        "200" => {}
        "401" => call.headers.retain(|(n, _)| *n != "Authorization"),
        "421" => call.headers.push(("Host", "evil.test".to_owned())),
        "405" => call.method = "DELETE".into(),
        "413" => {
            call.body.clear();
            call.headers.push(("Content-Length", (2 << 20).to_string()));
        }
        "415" => {
            call.headers.retain(|(n, _)| *n != "Content-Type");
            call.headers.push(("Content-Type", "text/plain".to_owned()));
        }
        "400" => match path {
            "/v1/publish" | "/v1/publish/batch" => call.body = b"{".to_vec(),
            "/v1/channels/{name}" => call.path = concrete("bad%20name", ""),
            "/v1/users/{id}" => call.path = concrete("", "%ZZ"),
            "/v1/connections/{id}/close" => call.path = "/v1/connections/abc/close".into(),
            _ => return None,
        },
        "404" => match path {
            "/" => call.target = Target::Plain,
            "/v1/connections/{id}/close" => call.path = "/v1/connections/999999999/close".into(),
            _ => return None,
        },
        "503" => match path {
            "/readyz" | "/v1/publish" | "/v1/publish/batch" | "/v1/channels/{name}" | "/v1/users/{id}" => {
                call.target = Target::Draining
            }
            _ => return None,
        },
        _ => return None,
    }
    Some(call)
}

fn issue(gw: &Gateway, call: &Call) -> Resp {
    let headers: Vec<(&str, &str)> = call.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    send(gw.admin, &call.method, &call.path, &headers, &call.body)
}

/// Checks one answer against the documented response for `status`.
fn verify(doc: &Value, op: &Op, status: &str, call: &Call, resp: &Resp) {
    let what = format!("{} {} -> {status} (sent {} {})", op.method, op.path, call.method, call.path);
    assert_eq!(resp.status.to_string(), status, "{what}: {}", resp.body);
    if call.method == "HEAD" {
        assert!(resp.body.is_empty(), "{what}: HEAD with a body {:?}", resp.body);
        return;
    }
    let documented = resolve(doc, &op.op["responses"][status]);
    let Some(content) = documented.get("content").and_then(Value::as_object) else { return };
    let (media, spec) = content.iter().next().expect("one media type");
    let given = resp.header("content-type").unwrap_or("");
    assert!(given.starts_with(media.as_str()), "{what}: Content-Type {given:?}, documented {media}");
    if media == "application/json" {
        let body: Value =
            serde_json::from_str(&resp.body).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"));
        if let Err(e) = check(doc, &spec["schema"], &body, "body") {
            panic!("{what}: {e}");
        }
    }
    if status == "405" {
        let mut allowed: Vec<String> =
            resp.header("allow").unwrap_or("").split(", ").map(str::to_lowercase).collect();
        let item = doc["paths"][&op.path].as_object().unwrap();
        let mut documented: Vec<String> = item.keys().cloned().collect();
        allowed.sort();
        documented.sort();
        assert_eq!(allowed, documented, "{what}: the Allow header against the documented methods");
    }
}

fn wait_ready(gw: &Gateway, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.get("/readyz").status != status {
        assert!(Instant::now() < deadline, "/readyz never answered {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_documented_answer_is_what_the_gateway_sends() {
    let doc = doc();
    let ops = operations(&doc);
    assert!(ops.len() >= 15, "the document lists {} operations", ops.len());
    let config = format!("api_key = \"{KEY}\"\ndemo = true\nadmin_allowed_hosts = [\"127.0.0.1\"]\n");
    let main = Gateway::start(Some(&config), &[]);
    let plain = Gateway::start(Some("drain_timeout = \"30s\"\n"), &[]);
    let ws = main.connect("/ws?channels=news");
    let conn = ws.conn();

    let mut planned = Vec::new();
    for op in &ops {
        let responses = op.op["responses"].as_object().expect("responses");
        for status in responses.keys() {
            let unprovoked =
                UNPROVOKED.iter().any(|(p, m, s, _)| (*p, *m, *s) == (&op.path, &op.method, status.as_str()));
            match call_for(op, status, &conn) {
                Some(call) => {
                    assert!(
                        !unprovoked,
                        "{} {} {status} is provoked: take it out of UNPROVOKED",
                        op.method, op.path
                    );
                    planned.push((op, status.clone(), call));
                }
                None => assert!(unprovoked, "no request provokes {} {} {status}", op.method, op.path),
            }
        }
    }
    for (p, m, s, _) in UNPROVOKED {
        assert!(
            doc["paths"][p][m]["responses"].get(s).is_some(),
            "UNPROVOKED lists undocumented {m} {p} {s}"
        );
    }
    // Closing the test connection ends it: that call goes last.
    planned.sort_by_key(|(op, status, call)| {
        (
            call.target != Target::Main,
            call.target == Target::Draining,
            op.path.contains("/close") && status == "200",
        )
    });
    let mut silent = None;
    for (op, status, call) in &planned {
        let gw = match call.target {
            Target::Main => &main,
            Target::Plain => &plain,
            Target::Draining => {
                if silent.is_none() {
                    // A client that never answers the close keeps the drain (and the 503s) going.
                    silent = Some(plain.connect("/ws"));
                    plain.signal(libc::SIGTERM);
                    wait_ready(&plain, 503);
                }
                &plain
            }
        };
        let resp = issue(gw, call);
        verify(&doc, op, status, call, &resp);
    }
    assert!(silent.is_some(), "the draining answers were checked");
}

#[test]
fn the_schema_check_catches_wrong_bodies() {
    // The checker must be able to fail, or the test above proves nothing.
    let doc = doc();
    let queued = serde_json::json!({"$ref": "#/components/schemas/Queued"});
    assert!(check(&doc, &queued, &serde_json::json!({"channel": "a", "queued": 1}), "b").is_ok());
    assert!(check(&doc, &queued, &serde_json::json!({"channel": "a"}), "b").is_err(), "missing field");
    assert!(check(&doc, &queued, &serde_json::json!({"channel": 1, "queued": 1}), "b").is_err(), "type");
    let ready = serde_json::json!({"$ref": "#/components/schemas/Ready"});
    assert!(check(&doc, &ready, &serde_json::json!({"status": "meh", "broker": "local"}), "b").is_err());
}
