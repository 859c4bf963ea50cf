//! OCSF output: maps one native event (the sensor's JSON object, see
//! `schema/event.schema.json`) to one [OCSF](https://schema.ocsf.io) 1.8.0
//! event.
//!
//! | native `event.action` | OCSF class | activity |
//! |---|---|---|
//! | `model_call` | API Activity (6003), profile `ai_operation` | by HTTP method: 1 Create (POST), 2 Read (GET), 3 Update (PUT, PATCH), 4 Delete, 99 Other, 0 Unknown |
//! | `connect` | Network Activity (4001) | 1 Open; on failure 5 Refuse (`ECONNREFUSED`) or 4 Fail |
//! | `process_exec` / `process_exit` | Process Activity (1007) | 1 Launch (actor: the parent) / 2 Terminate (actor: the process) |
//! | `credential_shared` | Detection Finding (2004) | 1 Create (two actors), 2 Update (more) |
//! | `policy_violation` | Detection Finding (2004) | 1 Create; the rule is the analytic |
//! | `sensor_health` | Application Lifecycle (6002) | 3 Start (`ready`), 4 Stop (`stopped`), 99 `Heartbeat` (`running`, `degraded`) |
//! | `sensor_checkpoint` | Application Lifecycle (6002) | 99 `Checkpoint` |
//! | anything else | Base Event (0) | 99 Other, `activity_name` = the action |
//!
//! A known action whose event lacks what its class requires (the process
//! of a process event, the server of a connect, ...) is written as a Base
//! Event too, so every output is a valid OCSF event.
//!
//! `unmapped` holds every native field that no OCSF attribute carries, in
//! its native nested structure (`unmapped.event.sequence`,
//! `unmapped.sensor.kernel.ringbuf_drops`). A native field counts as
//! carried when its value is in an OCSF attribute, converted to OCSF units
//! where they differ (ns times and durations to ms, rounded down: the exact
//! `@timestamp` stays in `metadata.original_time`). A field of an
//! unexpected type, or out of the OCSF attribute's range, is not mapped
//! and stays in `unmapped`. An array is carried only when all of its items
//! are; the per-actor leftovers of `credential.actors` go in each
//! evidence's `data`. Null values are dropped.
//!
//! Integrity fields a sink adds after encoding: the per-sink sequence
//! number can go in `metadata.sequence` (OCSF `integer_t`, 32-bit signed:
//! a larger value makes the event invalid) or, unbounded, in
//! `unmapped.event.sequence`; the chain hashes in `unmapped.event.hash` and
//! `unmapped.event.prev_hash` (`unmapped` is free-form). The encoder never
//! sets `metadata.sequence`; a native record that already carries
//! `event.sequence`, `event.hash` or `event.prev_hash` has them in
//! `unmapped.event`, where a sink overwrites them.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::{Map, Value, json};

/// OCSF schema version the encoder targets.
pub const OCSF_VERSION: &str = "1.8.0";

/// `metadata.product.name` (and `app.name` of the sensor's own lifecycle).
pub const PRODUCT_NAME: &str = "sensor";

/// `metadata.product.vendor_name`.
pub const VENDOR_NAME: &str = "sensor project";

type Obj = Map<String, Value>;

/// Maps one native event (the sensor's JSON object) to an OCSF event.
pub fn encode(event: &Value) -> Value {
    if !event.is_object() {
        return not_an_object(event);
    }
    let mut native = Native::new(event);
    let built = match native.peek_str("event.action") {
        Some("model_call") => model_call(&mut native),
        Some("connect") => connect(&mut native),
        Some("process_exec") => process_activity(&mut native, Launch::Exec),
        Some("process_exit") => process_activity(&mut native, Launch::Exit),
        Some("credential_shared") => credential_shared(&mut native),
        Some("blind_spot") => blind_spot(&mut native),
        Some("policy_violation") => policy_violation(&mut native),
        Some("sensor_health") => sensor_lifecycle(&mut native, false),
        Some("sensor_checkpoint") => sensor_lifecycle(&mut native, true),
        _ => None,
    };
    match built {
        Some(out) => Value::Object(out),
        None => Value::Object(base_event(&mut Native::new(event))),
    }
}

// ---------------------------------------------------------------------
// Classes

struct Class {
    uid: i64,
    name: &'static str,
    category_uid: i64,
    category_name: &'static str,
}

const BASE_EVENT: Class = Class {
    uid: 0,
    name: "Base Event",
    category_uid: 0,
    category_name: "Uncategorized",
};
const PROCESS_ACTIVITY: Class = Class {
    uid: 1007,
    name: "Process Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const DETECTION_FINDING: Class = Class {
    uid: 2004,
    name: "Detection Finding",
    category_uid: 2,
    category_name: "Findings",
};
const NETWORK_ACTIVITY: Class = Class {
    uid: 4001,
    name: "Network Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const APPLICATION_LIFECYCLE: Class = Class {
    uid: 6002,
    name: "Application Lifecycle",
    category_uid: 6,
    category_name: "Application Activity",
};
const API_ACTIVITY: Class = Class {
    uid: 6003,
    name: "API Activity",
    category_uid: 6,
    category_name: "Application Activity",
};

/// The classification attributes. For activity 99 (Other) `activity_name`
/// is our own label and `type_name` the schema's "<class>: Other".
fn classify(out: &mut Obj, class: &Class, activity_id: i64, activity_name: &str) {
    let type_caption = if activity_id == 99 {
        "Other"
    } else {
        activity_name
    };
    out.insert("class_uid".into(), json!(class.uid));
    out.insert("class_name".into(), json!(class.name));
    out.insert("category_uid".into(), json!(class.category_uid));
    out.insert("category_name".into(), json!(class.category_name));
    out.insert("activity_id".into(), json!(activity_id));
    out.insert("activity_name".into(), json!(activity_name));
    out.insert("type_uid".into(), json!(class.uid * 100 + activity_id));
    out.insert(
        "type_name".into(),
        json!(format!("{}: {type_caption}", class.name)),
    );
}

fn severity(out: &mut Obj, id: i64) {
    let caption = match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        5 => "Critical",
        6 => "Fatal",
        _ => "Unknown",
    };
    out.insert("severity_id".into(), json!(id));
    out.insert("severity".into(), json!(caption));
}

fn status(out: &mut Obj, id: i64, caption: &str) {
    out.insert("status_id".into(), json!(id));
    out.insert("status".into(), json!(caption));
}

/// `event.outcome` to the base `status_id` (0 Unknown, 1 Success, 2 Failure).
fn outcome(out: &mut Obj, n: &mut Native) -> Option<&'static str> {
    let outcome = n.peek_str("event.outcome")?;
    let (id, caption) = match outcome {
        "success" => (1, "Success"),
        "failure" => (2, "Failure"),
        "unknown" => (0, "Unknown"),
        _ => return None,
    };
    n.take("event.outcome");
    status(out, id, caption);
    Some(match id {
        1 => "success",
        2 => "failure",
        _ => "unknown",
    })
}

/// Which profiles the event uses: `metadata.profiles`.
#[derive(Default)]
struct Ctx {
    profiles: BTreeSet<&'static str>,
}

impl Ctx {
    fn uses(&mut self, profile: &'static str) {
        self.profiles.insert(profile);
    }
}

/// Attributes every class gets: time, device, message, duration, error
/// code. The metadata and `unmapped` come last, in [`finish`].
fn common(out: &mut Obj, n: &mut Native) {
    match n.peek_str("@timestamp").and_then(parse_rfc3339) {
        Some((ms, offset)) => {
            out.insert("time".into(), json!(ms));
            out.insert("timezone_offset".into(), json!(offset));
        }
        None => {
            out.insert("time".into(), json!(now_ms()));
        }
    }
    if let Some(device) = device(n) {
        out.insert("device".into(), Value::Object(device));
    }
    put(out, "message", n.str("message"));
    if let Some(ns) = n.uint("event.duration") {
        out.insert("duration".into(), json!(ns / 1_000_000));
    }
    put(out, "status_code", n.str("error.code"));
}

/// Adds `metadata` and `unmapped`. The `host` profile (`actor`, `device`
/// in most classes) is always declared: every event comes from a host.
fn finish(mut out: Obj, mut n: Native, mut cx: Ctx) -> Obj {
    cx.uses("host");
    let mut product = Obj::new();
    product.insert("name".into(), json!(PRODUCT_NAME));
    product.insert("vendor_name".into(), json!(VENDOR_NAME));
    put(&mut product, "version", n.str("observer.version"));
    if n.peek_str("observer.type") == Some(PRODUCT_NAME) {
        n.take("observer.type");
    }
    let mut metadata = Obj::new();
    metadata.insert("version".into(), json!(OCSF_VERSION));
    metadata.insert("product".into(), Value::Object(product));
    put(&mut metadata, "uid", n.str("event.id"));
    put(&mut metadata, "original_time", n.str("@timestamp"));
    put(&mut metadata, "event_code", n.str("event.action"));
    put(&mut metadata, "log_version", n.str("event.schema_version"));
    metadata.insert(
        "profiles".into(),
        Value::Array(cx.profiles.iter().map(|p| json!(p)).collect()),
    );
    out.insert("metadata".into(), Value::Object(metadata));
    if let Some(rest) = n.into_rest() {
        out.insert("unmapped".into(), Value::Object(rest));
    }
    out
}

// ---------------------------------------------------------------------
// model_call: API Activity

fn model_call(n: &mut Native) -> Option<Obj> {
    let mut cx = Ctx::default();
    let mut out = Obj::new();

    let method = n.peek_str("http.request.method");
    let (activity_id, activity_name) = match method {
        Some("POST") => (1, "Create"),
        Some("GET") => (2, "Read"),
        Some("PUT" | "PATCH") => (3, "Update"),
        Some("DELETE") => (4, "Delete"),
        Some(other) if !other.is_empty() => (99, other),
        _ => (0, "Unknown"),
    };
    classify(&mut out, &API_ACTIVITY, activity_id, activity_name);
    severity(&mut out, 1);

    // Required: actor, src_endpoint, api.operation.
    let mut actor = actor(n, &mut cx)?;
    let src = src_endpoint(n)?;
    let operation = match n.peek_str("gen_ai.operation.name") {
        Some(op) => {
            n.take("gen_ai.operation.name");
            op.to_owned()
        }
        None => {
            let path = n.peek_str("url.path")?;
            format!("{} {path}", method.unwrap_or("?"))
        }
    };
    let provider = n.str("gen_ai.provider.name");

    let fingerprint = n.str("credential.fingerprint");
    if let Some(fp) = fingerprint {
        actor.insert("session".into(), json!({ "credential_uid": fp }));
    }
    out.insert("actor".into(), Value::Object(actor));
    out.insert("src_endpoint".into(), Value::Object(src));
    if let Some(dst) = dst_endpoint(n) {
        out.insert("dst_endpoint".into(), Value::Object(dst));
    }

    let status_code = n.int("http.response.status_code", 100, 999);
    let mut api = Obj::new();
    api.insert("operation".into(), json!(operation));
    if let Some(p) = provider {
        api.insert("service".into(), json!({ "name": p }));
    }
    if let Some(code) = status_code {
        api.insert("response".into(), json!({ "code": code }));
    }
    if let Some(fp) = fingerprint {
        let kind = n.peek_str("credential.kind");
        let (type_id, type_caption) = match kind {
            Some(k) if k.ends_with("api_key") => (7, "API Token"),
            Some(k) => (99, k),
            None => (0, "Unknown"),
        };
        api.insert(
            "token".into(),
            json!({ "uid": fp, "type_id": type_id, "type": type_caption }),
        );
    }
    out.insert("api".into(), Value::Object(api));

    // http_request
    let mut request = Obj::new();
    if let Some(m) = method.filter(|m| HTTP_METHODS.contains(m)) {
        n.take("http.request.method");
        request.insert("http_method".into(), json!(m));
    }
    if let Some(path) = n.str("url.path") {
        let mut url = Obj::new();
        url.insert("path".into(), json!(path));
        put(&mut url, "hostname", n.str("url.domain"));
        put(&mut url, "query_string", n.str("url.query"));
        put(&mut url, "port", n.peek_int("server.port", 0, 65535));
        if n.peek_str("tls.library").is_some() {
            url.insert("scheme".into(), json!("https"));
        }
        request.insert("url".into(), Value::Object(url));
    }
    put(&mut request, "user_agent", n.str("user_agent.original"));
    if n.peek_str("network.protocol.name") == Some("http")
        && let Some(v) = n.str("network.protocol.version")
    {
        n.take("network.protocol.name");
        request.insert("version".into(), json!(format!("HTTP/{v}")));
    }
    put(&mut request, "length", n.int32("http.request.size"));
    put(
        &mut request,
        "body_length",
        n.int32("http.request.body.size"),
    );
    if !request.is_empty() {
        out.insert("http_request".into(), Value::Object(request));
    }

    // http_response: `code` is required.
    if let Some(code) = status_code {
        let mut response = Obj::new();
        response.insert("code".into(), json!(code));
        put(&mut response, "length", n.int32("http.response.size"));
        put(
            &mut response,
            "body_length",
            n.int32("http.response.body.size"),
        );
        if let Some(ns) = n.peek_uint("gen_ai.server.time_to_first_byte")
            && let Ok(ms) = i32::try_from(ns / 1_000_000)
        {
            n.take("gen_ai.server.time_to_first_byte");
            response.insert("latency".into(), json!(ms));
        }
        out.insert("http_response".into(), Value::Object(response));
    }

    // ai_operation profile: the model and the token counts.
    if let Some(p) = provider {
        let model = match n.str("gen_ai.request.model") {
            Some(m) => Some(m),
            None => n.str("gen_ai.response.model"),
        };
        if let Some(m) = model {
            cx.uses("ai_operation");
            out.insert("ai_model".into(), json!({ "name": m, "ai_provider": p }));
        }
        let input = n.int32("gen_ai.usage.input_tokens");
        let output = n.int32("gen_ai.usage.output_tokens");
        if input.is_some() || output.is_some() {
            cx.uses("ai_operation");
            let mut context = Obj::new();
            context.insert("service".into(), json!({ "name": p }));
            put(&mut context, "prompt_tokens", input);
            put(&mut context, "completion_tokens", output);
            if let (Some(i), Some(o)) = (input, output)
                && let Ok(total) = i32::try_from(i + o)
            {
                context.insert("total_tokens".into(), json!(total));
            }
            out.insert("message_context".into(), Value::Object(context));
        }
    }

    outcome(&mut out, n);
    common(&mut out, n);
    Some(finish(out, std::mem::take(n), cx))
}

const HTTP_METHODS: [&str; 9] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

// ---------------------------------------------------------------------
// connect: Network Activity

fn connect(n: &mut Native) -> Option<Obj> {
    let mut cx = Ctx::default();
    let mut out = Obj::new();
    let failed = n.peek_str("event.outcome") == Some("failure");
    let (activity_id, activity_name) = match (failed, n.peek_str("error.code")) {
        (true, Some("ECONNREFUSED")) => (5, "Refuse"),
        (true, _) => (4, "Fail"),
        (false, _) => (1, "Open"),
    };
    classify(&mut out, &NETWORK_ACTIVITY, activity_id, activity_name);
    severity(&mut out, 1);

    // Required: src_endpoint or dst_endpoint.
    let dst = dst_endpoint(n)?;
    let loopback = dst
        .get("ip")
        .and_then(Value::as_str)
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback());
    out.insert("dst_endpoint".into(), Value::Object(dst));
    // The local process connected: the destination is the server.
    out.insert("is_src_dst_assignment_known".into(), json!(true));
    if let Some(actor) = actor(n, &mut cx) {
        out.insert("actor".into(), Value::Object(actor));
    }

    let mut info = Obj::new();
    let (direction_id, direction) = if loopback {
        (4, "Local")
    } else {
        (2, "Outbound")
    };
    info.insert("direction_id".into(), json!(direction_id));
    info.insert("direction".into(), json!(direction));
    if n.peek_str("network.transport") == Some("tcp") {
        n.take("network.transport");
        info.insert("protocol_num".into(), json!(6));
        info.insert("protocol_name".into(), json!("tcp"));
    }
    let version = match n.peek_str("network.type") {
        Some("ipv4") => Some((4, "Internet Protocol version 4 (IPv4)")),
        Some("ipv6") => Some((6, "Internet Protocol version 6 (IPv6)")),
        _ => None,
    };
    if let Some((id, caption)) = version {
        n.take("network.type");
        info.insert("protocol_ver_id".into(), json!(id));
        info.insert("protocol_ver".into(), json!(caption));
    }
    out.insert("connection_info".into(), Value::Object(info));

    outcome(&mut out, n);
    common(&mut out, n);
    Some(finish(out, std::mem::take(n), cx))
}

// ---------------------------------------------------------------------
// process_exec / process_exit: Process Activity

#[derive(Clone, Copy, PartialEq)]
enum Launch {
    Exec,
    Exit,
}

fn process_activity(n: &mut Native, which: Launch) -> Option<Obj> {
    let mut cx = Ctx::default();
    let mut out = Obj::new();
    let (activity_id, activity_name) = match which {
        Launch::Exec => (1, "Launch"),
        Launch::Exit => (2, "Terminate"),
    };
    classify(&mut out, &PROCESS_ACTIVITY, activity_id, activity_name);
    severity(&mut out, 1);

    // Required: process, actor, device. The actor of a launch is the
    // parent; a process ends itself (exit, or a signal's default action:
    // the sender is not known), so the actor of a termination is the
    // process.
    n.peek_str("host.name")?;
    let mut process = process(n, &mut cx, true)?;
    let mut actor = Obj::new();
    let actor_process = match which {
        Launch::Exec => process.get("parent_process").cloned(),
        Launch::Exit => Some(Value::Object(
            ["pid", "uid", "name", "file", "created_time"]
                .iter()
                .filter_map(|k| Some(((*k).to_owned(), process.get(*k)?.clone())))
                .collect(),
        )),
    };
    if let Some(p) = actor_process {
        actor.insert("process".into(), p);
    }
    if let Some(user) = identity_user(n) {
        actor.insert("user".into(), Value::Object(user));
    }
    if actor.is_empty() {
        return None;
    }
    out.insert("actor".into(), Value::Object(actor));
    if which == Launch::Exec {
        out.insert("launch_type_id".into(), json!(3));
        out.insert("launch_type".into(), json!("Exec"));
    } else if let Some(time) = n.peek_time("@timestamp") {
        process.insert("terminated_time".into(), json!(time));
    }
    out.insert("process".into(), Value::Object(process));

    outcome(&mut out, n);
    common(&mut out, n);
    Some(finish(out, std::mem::take(n), cx))
}

// ---------------------------------------------------------------------
// credential_shared: Detection Finding

fn credential_shared(n: &mut Native) -> Option<Obj> {
    let mut cx = Ctx::default();
    let mut out = Obj::new();
    // The same finding (one per credential) grows as actors join.
    let update = n
        .peek_int("credential.actor_count", 0, i64::MAX)
        .is_some_and(|c| c > 2);
    let (activity_id, activity_name) = if update { (2, "Update") } else { (1, "Create") };
    finding(&mut out, activity_id, activity_name, 4);

    let uid = match n.peek_str("credential.fingerprint") {
        Some(fp) => format!("credential_shared:{fp}"),
        None => format!("credential_shared:{}", n.peek_str("event.id")?),
    };
    out.insert(
        "finding_info".into(),
        json!({
            "uid": uid,
            "title": "Model API credential used by several actors",
            "types": ["credential_shared"],
            "analytic": {
                "type_id": 1,
                "type": "Rule",
                "name": "credential_shared",
                "uid": "sensor.credential_shared",
            },
        }),
    );

    if let Some(items) = n.peek("credential.actors").and_then(Value::as_array) {
        let evidences: Vec<Value> = items
            .iter()
            .map(|item| Value::Object(evidence(item, &mut cx)))
            .collect();
        n.take("credential.actors");
        if !evidences.is_empty() {
            out.insert("evidences".into(), Value::Array(evidences));
        }
    }

    common(&mut out, n);
    Some(finish(out, std::mem::take(n), cx))
}

// ---------------------------------------------------------------------
// blind_spot: Detection Finding

fn blind_spot(n: &mut Native) -> Option<Obj> {
    let mut cx = Ctx::default();
    let mut out = Obj::new();
    finding(&mut out, 1, "Create", 3);
    let reason = n
        .peek_str("blind_spot.reason")
        .unwrap_or("unknown")
        .to_owned();
    out.insert(
        "finding_info".into(),
        json!({
            "uid": format!("blind_spot:{}", n.peek_str("event.id")?),
            "title": "Model API connection not visible to the sensor",
            "types": ["blind_spot", reason],
            "analytic": {
                "type_id": 1,
                "type": "Rule",
                "name": "blind_spot",
                "uid": "sensor.blind_spot",
            },
        }),
    );
    destination_evidence(&mut out, n, &mut cx);
    common(&mut out, n);
    Some(finish(out, std::mem::take(n), cx))
}

// ---------------------------------------------------------------------
// policy_violation: Detection Finding

fn policy_violation(n: &mut Native) -> Option<Obj> {
    let mut cx = Ctx::default();
    let mut out = Obj::new();
    let decision = n.peek_str("policy.decision").unwrap_or("alert").to_owned();
    finding(
        &mut out,
        1,
        "Create",
        if decision == "deny" { 4 } else { 3 },
    );
    let rule = n.peek_str("policy.rule")?.to_owned();
    out.insert(
        "finding_info".into(),
        json!({
            "uid": format!("policy_violation:{}", n.peek_str("event.id")?),
            "title": format!("Policy {decision}: rule {rule}"),
            "types": ["policy_violation", decision],
            "analytic": {
                "type_id": 1,
                "type": "Rule",
                "name": rule,
                "uid": format!("policy.{rule}"),
            },
        }),
    );
    destination_evidence(&mut out, n, &mut cx);
    common(&mut out, n);
    Some(finish(out, std::mem::take(n), cx))
}

/// A Detection Finding's class, activity, severity, and the fields every
/// finding of the sensor shares (new, an alert, high confidence).
fn finding(out: &mut Obj, activity_id: i64, activity_name: &str, severity_id: i64) {
    classify(out, &DETECTION_FINDING, activity_id, activity_name);
    severity(out, severity_id);
    status(out, 1, "New");
    out.insert("is_alert".into(), json!(true));
    out.insert("confidence_id".into(), json!(3));
    out.insert("confidence".into(), json!("High"));
}

/// The one evidence of a finding about a connection: where it went and
/// which process made it.
fn destination_evidence(out: &mut Obj, n: &mut Native, cx: &mut Ctx) {
    let mut evidence = Obj::new();
    if let Some(dst) = dst_endpoint(n) {
        evidence.insert("dst_endpoint".into(), Value::Object(dst));
    }
    if let Some(process) = process(n, cx, true) {
        evidence.insert("process".into(), Value::Object(process));
    }
    if !evidence.is_empty() {
        out.insert("evidences".into(), json!([Value::Object(evidence)]));
    }
}

/// One actor of `credential.actors`. Actors carry no pid (they stand for
/// a pod, container or user over time), so there is no `process` unless
/// the item has one: the workload or login identity is `actor.user`, the
/// OS user `user`, the executable `file`, and the item's other fields
/// (first and last seen, model calls, last event id) `data`.
fn evidence(item: &Value, cx: &mut Ctx) -> Obj {
    let mut ev = Obj::new();
    if !item.is_object() {
        ev.insert("data".into(), item.clone());
        return ev;
    }
    let mut n = Native::new(item);
    put(&mut ev, "uid", n.str("actor.key"));
    let user = identity_user(&mut n);
    if let Some(process) = process(&mut n, cx, true) {
        ev.insert("process".into(), Value::Object(process));
    } else {
        if let Some(container) = container(&mut n, cx) {
            ev.insert("container".into(), Value::Object(container));
        }
        if let Some(os_user) = os_user(&mut n) {
            ev.insert("user".into(), Value::Object(os_user));
        }
        if let Some(path) = n.str("process.executable.path") {
            ev.insert("file".into(), Value::Object(executable(path)));
        }
    }
    if let Some(user) = user {
        ev.insert("actor".into(), json!({ "user": user }));
    }
    match n.into_rest() {
        Some(rest) => {
            ev.insert("data".into(), Value::Object(rest));
        }
        // `data` also makes an evidence that has nothing else valid.
        None if !["process", "container", "user", "file", "actor"]
            .iter()
            .any(|k| ev.contains_key(*k)) =>
        {
            ev.insert("data".into(), item.clone());
        }
        None => {}
    }
    ev
}

// ---------------------------------------------------------------------
// sensor_health / sensor_checkpoint: Application Lifecycle

fn sensor_lifecycle(n: &mut Native, checkpoint: bool) -> Option<Obj> {
    let cx = Ctx::default();
    let mut out = Obj::new();
    let state = n.peek_str("sensor.status");
    let (activity_id, activity_name) = match (checkpoint, state) {
        (true, _) => (99, "Checkpoint"),
        (false, Some("ready")) => (3, "Start"),
        (false, Some("stopped")) => (4, "Stop"),
        (false, _) => (99, "Heartbeat"),
    };
    classify(&mut out, &APPLICATION_LIFECYCLE, activity_id, activity_name);
    let (severity_id, status_id, status_caption) = match state {
        Some("ready" | "running" | "stopped") => (1, 1, "Success"),
        Some("degraded") => (3, 99, "Degraded"),
        _ => (1, 0, ""),
    };
    severity(&mut out, severity_id);
    if !status_caption.is_empty() {
        status(&mut out, status_id, status_caption);
    }
    put(&mut out, "status_detail", n.str("sensor.status"));

    let mut app = Obj::new();
    app.insert("name".into(), json!(PRODUCT_NAME));
    app.insert("vendor_name".into(), json!(VENDOR_NAME));
    put(&mut app, "version", n.peek_str("observer.version"));
    out.insert("app".into(), Value::Object(app));
    if n.peek("message").is_none() {
        let message = match (checkpoint, state) {
            (true, _) => "sensor checkpoint".to_owned(),
            (false, Some(s)) => format!("sensor {s}"),
            (false, None) => "sensor health".to_owned(),
        };
        out.insert("message".into(), json!(message));
    }

    common(&mut out, n);
    Some(finish(out, std::mem::take(n), cx))
}

// ---------------------------------------------------------------------
// Anything else: Base Event

fn base_event(n: &mut Native) -> Obj {
    let mut cx = Ctx::default();
    let mut out = Obj::new();
    match n.peek_str("event.action").filter(|a| !a.is_empty()) {
        Some(action) => classify(&mut out, &BASE_EVENT, 99, action),
        None => classify(&mut out, &BASE_EVENT, 0, "Unknown"),
    }
    severity(&mut out, 1);
    if let Some(actor) = actor(n, &mut cx) {
        out.insert("actor".into(), Value::Object(actor));
    }
    outcome(&mut out, n);
    common(&mut out, n);
    finish(out, std::mem::take(n), cx)
}

/// A native event that is not a JSON object: a Base Event carrying it as
/// `raw_data`.
fn not_an_object(event: &Value) -> Value {
    let mut out = Obj::new();
    classify(&mut out, &BASE_EVENT, 0, "Unknown");
    severity(&mut out, 0);
    out.insert("time".into(), json!(now_ms()));
    out.insert("raw_data".into(), json!(event.to_string()));
    out.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "product": { "name": PRODUCT_NAME, "vendor_name": VENDOR_NAME },
        }),
    );
    Value::Object(out)
}

// ---------------------------------------------------------------------
// Objects

/// The acting process and who it acts for.
fn actor(n: &mut Native, cx: &mut Ctx) -> Option<Obj> {
    let mut actor = Obj::new();
    if let Some(process) = process(n, cx, true) {
        actor.insert("process".into(), Value::Object(process));
    }
    if let Some(user) = identity_user(n) {
        actor.insert("user".into(), Value::Object(user));
    }
    (!actor.is_empty()).then_some(actor)
}

/// `process.*` to an OCSF process; None without a pid or entity id.
fn process(n: &mut Native, cx: &mut Ctx, with_container: bool) -> Option<Obj> {
    n.peek_int("process.pid", 0, I32_MAX)
        .map(|_| ())
        .or_else(|| n.peek_str("process.entity_id").map(|_| ()))?;
    let mut p = Obj::new();
    put(&mut p, "pid", n.int("process.pid", 0, I32_MAX));
    put(&mut p, "uid", n.str("process.entity_id"));
    put(&mut p, "ptid", n.int("process.thread.id", 0, i64::MAX));
    put(&mut p, "name", n.str("process.executable.name"));
    put(&mut p, "cmd_line", n.str("process.command_line"));
    put(&mut p, "created_time", n.time("process.start"));
    if let Some(path) = n.str("process.executable.path") {
        p.insert("file".into(), Value::Object(executable(path)));
    }
    if let Some(user) = os_user(n) {
        p.insert("user".into(), Value::Object(user));
    }
    if let Some(gid) = n.int("process.group.id", 0, i64::MAX) {
        cx.uses("linux/linux_users");
        p.insert("group".into(), json!({ "uid": gid.to_string() }));
    }
    if let Some(auid) = n.int("process.loginuid", 0, I32_MAX) {
        cx.uses("linux/linux_users");
        p.insert("auid".into(), json!(auid));
    }
    let mut session = Obj::new();
    if let Some(id) = n.int("process.sessionid", 0, i64::MAX) {
        session.insert("uid".into(), json!(id.to_string()));
    }
    put(&mut session, "terminal", n.str("process.tty"));
    if !session.is_empty() {
        p.insert("session".into(), Value::Object(session));
    }

    // Parent: `parent_pid`, and what `ancestry[0]` says about it.
    if let Some(ppid) = n.int("process.parent_pid", 0, I32_MAX) {
        let mut parent = Obj::new();
        parent.insert("pid".into(), json!(ppid));
        let first = n.peek("process.ancestry").and_then(|a| a.get(0));
        if let Some(first) = first.filter(|f| f.get("pid").and_then(Value::as_i64) == Some(ppid)) {
            if let Some(path) = first.get("executable").and_then(Value::as_str) {
                parent.insert("file".into(), Value::Object(executable(path)));
            }
            if let Some(t) = first
                .get("start")
                .and_then(Value::as_str)
                .and_then(parse_rfc3339_ms)
            {
                parent.insert("created_time".into(), json!(t));
            }
        }
        p.insert("parent_process".into(), Value::Object(parent));
    }
    if let Some(items) = n.peek("process.ancestry").and_then(Value::as_array) {
        let entities: Vec<Value> = items.iter().filter_map(process_entity).collect();
        if entities.len() == items.len() {
            n.take("process.ancestry");
        }
        if !entities.is_empty() {
            p.insert("ancestry".into(), Value::Array(entities));
        }
    }

    if with_container && let Some(c) = container(n, cx) {
        p.insert("container".into(), Value::Object(c));
    }
    Some(p)
}

/// One `process.ancestry` item, only when every field of it maps.
fn process_entity(item: &Value) -> Option<Value> {
    let obj = item.as_object()?;
    let mut e = Obj::new();
    for (k, v) in obj {
        match (k.as_str(), v) {
            ("pid", v) => {
                let pid = v.as_i64().filter(|p| (0..=I32_MAX).contains(p))?;
                e.insert("pid".into(), json!(pid));
            }
            ("executable", Value::String(path)) => {
                e.insert("path".into(), json!(path));
            }
            ("start", Value::String(s)) => {
                e.insert("created_time".into(), json!(parse_rfc3339_ms(s)?));
            }
            (_, Value::Null) => {}
            _ => return None,
        }
    }
    (!e.is_empty()).then_some(Value::Object(e))
}

/// An executable as an OCSF file.
fn executable(path: &str) -> Obj {
    let name = path
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(path);
    let mut f = Obj::new();
    f.insert("name".into(), json!(name));
    f.insert("path".into(), json!(path));
    f.insert("type_id".into(), json!(1));
    f.insert("type".into(), json!("Regular File"));
    f
}

/// The OS user the process runs as.
fn os_user(n: &mut Native) -> Option<Obj> {
    let mut u = Obj::new();
    if let Some(id) = n.int("process.user.id", 0, i64::MAX) {
        u.insert("uid".into(), json!(id.to_string()));
    }
    put(&mut u, "name", n.str("process.user.name"));
    (!u.is_empty()).then_some(u)
}

/// Who the process acts for: the workload (SPIFFE ID, cloud identity) as
/// a Service user, else the human behind the login uid.
fn identity_user(n: &mut Native) -> Option<Obj> {
    let mut u = Obj::new();
    if let Some(spiffe) = n.str("workload.spiffe_id") {
        u.insert("uid".into(), json!(spiffe));
    }
    if let Some(identity) = n.str("workload.cloud_identity") {
        let (type_id, caption) = match n.peek_str("workload.cloud_provider") {
            Some("aws") => (4, "AWS IAM Role"),
            Some("gcp") => (5, "GCP Account"),
            Some("azure") => (6, "Azure AD Account"),
            _ => (0, "Unknown"),
        };
        if type_id != 0 {
            n.take("workload.cloud_provider");
        }
        u.insert(
            "account".into(),
            json!({ "uid": identity, "type_id": type_id, "type": caption }),
        );
    }
    if !u.is_empty() {
        u.insert("type_id".into(), json!(4));
        u.insert("type".into(), json!("Service"));
        return Some(u);
    }
    // The login user: `user.*`, the same as `process.login_user.*`.
    let id = n.peek_str("user.id").map(str::to_owned).or_else(|| {
        n.peek_int("process.login_user.id", 0, i64::MAX)
            .map(|i| i.to_string())
    })?;
    let name = n
        .peek_str("user.name")
        .or_else(|| n.peek_str("process.login_user.name"));
    if n.peek_str("user.id") == Some(id.as_str()) {
        n.take("user.id");
    }
    if n.peek_int("process.login_user.id", 0, i64::MAX)
        .is_some_and(|i| i.to_string() == id)
    {
        n.take("process.login_user.id");
    }
    for path in ["user.name", "process.login_user.name"] {
        if name.is_some() && n.peek_str(path) == name {
            n.take(path);
        }
    }
    u.insert("uid".into(), json!(id));
    put(&mut u, "name", name);
    u.insert("type_id".into(), json!(1));
    u.insert("type".into(), json!("User"));
    Some(u)
}

/// `container.*` and `k8s.*` as an OCSF container. Kubernetes has no
/// object of its own: namespace, pod, container and service account names
/// go in `tags` under their native paths; the pod uid is `pod_uuid` when
/// it is a UUID, else a tag.
fn container(n: &mut Native, cx: &mut Ctx) -> Option<Obj> {
    if n.peek_str("container.id").is_none() && n.peek_str("container.name").is_none() {
        return None;
    }
    let mut c = Obj::new();
    put(&mut c, "uid", n.str("container.id"));
    put(&mut c, "name", n.str("container.name"));
    put(&mut c, "runtime", n.str("container.runtime"));
    let mut tags = Vec::new();
    for path in [
        "k8s.namespace.name",
        "k8s.pod.name",
        "k8s.container.name",
        "k8s.service_account.name",
    ] {
        if let Some(value) = n.str(path) {
            tags.push(json!({ "name": path, "value": value }));
        }
    }
    match n.peek_str("k8s.pod.uid") {
        Some(uid) if is_uuid(uid) => {
            n.take("k8s.pod.uid");
            c.insert("pod_uuid".into(), json!(uid));
        }
        Some(uid) => {
            n.take("k8s.pod.uid");
            tags.push(json!({ "name": "k8s.pod.uid", "value": uid }));
        }
        None => {}
    }
    if !tags.is_empty() || c.contains_key("pod_uuid") {
        c.insert("orchestrator".into(), json!("Kubernetes"));
    }
    if !tags.is_empty() {
        c.insert("tags".into(), Value::Array(tags));
    }
    cx.uses("container");
    Some(c)
}

/// `host.name` (and `k8s.node.name`) as the device. The device type is
/// not known to the sensor: 0 Unknown; the OS is Linux.
fn device(n: &mut Native) -> Option<Obj> {
    let host = n.str("host.name")?;
    let mut d = Obj::new();
    d.insert("hostname".into(), json!(host));
    put(&mut d, "name", n.str("k8s.node.name"));
    d.insert("type_id".into(), json!(0));
    d.insert("type".into(), json!("Unknown"));
    d.insert(
        "os".into(),
        json!({ "name": "Linux", "type_id": 200, "type": "Linux" }),
    );
    Some(d)
}

/// `server.*`; None without an address or IP.
fn dst_endpoint(n: &mut Native) -> Option<Obj> {
    let ip = n
        .peek_str("server.ip")
        .filter(|ip| ip.parse::<IpAddr>().is_ok());
    let address = n.peek_str("server.address");
    let address_is_ip = address.is_some_and(|a| a.parse::<IpAddr>().is_ok());
    let mut e = Obj::new();
    if let Some(ip) = ip {
        n.take("server.ip");
        e.insert("ip".into(), json!(ip));
    }
    match address {
        Some(a) if address_is_ip && ip.is_none_or(|ip| ip == a) => {
            n.take("server.address");
            e.insert("ip".into(), json!(a));
        }
        Some(a) if !address_is_ip && !a.is_empty() => {
            n.take("server.address");
            e.insert("hostname".into(), json!(a));
        }
        _ => {}
    }
    if e.is_empty() {
        return None;
    }
    put(&mut e, "port", n.int("server.port", 0, 65535));
    Some(e)
}

/// `client.*`; without it, the host the sensor runs on (the caller is a
/// local process). None without either.
fn src_endpoint(n: &mut Native) -> Option<Obj> {
    let mut e = Obj::new();
    match n.peek_str("client.address") {
        Some(a) if a.parse::<IpAddr>().is_ok() => {
            n.take("client.address");
            e.insert("ip".into(), json!(a));
        }
        Some(a) if !a.is_empty() => {
            n.take("client.address");
            e.insert("hostname".into(), json!(a));
        }
        _ => {
            e.insert("hostname".into(), json!(n.peek_str("host.name")?));
        }
    }
    put(&mut e, "port", n.int("client.port", 0, 65535));
    Some(e)
}

const I32_MAX: i64 = i32::MAX as i64;

fn put<V: Into<Value>>(obj: &mut Obj, key: &str, value: Option<V>) {
    if let Some(v) = value {
        obj.insert(key.into(), v.into());
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

// ---------------------------------------------------------------------
// The native event, and what is left of it

/// A native event being mapped: reads by dotted path from the event, and
/// removes what it maps from `rest`, which becomes `unmapped`.
#[derive(Default)]
struct Native<'a> {
    src: Option<&'a Value>,
    rest: Value,
}

impl<'a> Native<'a> {
    fn new(src: &'a Value) -> Self {
        Self {
            src: Some(src),
            rest: without_nulls(src),
        }
    }

    /// The value at `path`, not marked as mapped; None for null.
    fn peek(&self, path: &str) -> Option<&'a Value> {
        let mut v = self.src?;
        for key in path.split('.') {
            v = v.as_object()?.get(key)?;
        }
        (!v.is_null()).then_some(v)
    }

    fn peek_str(&self, path: &str) -> Option<&'a str> {
        self.peek(path)?.as_str()
    }

    fn peek_int(&self, path: &str, min: i64, max: i64) -> Option<i64> {
        self.peek(path)?
            .as_i64()
            .filter(|v| (min..=max).contains(v))
    }

    fn peek_uint(&self, path: &str) -> Option<u64> {
        self.peek(path)?.as_u64()
    }

    fn peek_time(&self, path: &str) -> Option<i64> {
        parse_rfc3339_ms(self.peek_str(path)?)
    }

    /// Marks `path` as mapped.
    fn take(&mut self, path: &str) {
        let keys: Vec<&str> = path.split('.').collect();
        remove_path(&mut self.rest, &keys);
    }

    fn str(&mut self, path: &str) -> Option<&'a str> {
        let v = self.peek_str(path)?;
        self.take(path);
        Some(v)
    }

    fn int(&mut self, path: &str, min: i64, max: i64) -> Option<i64> {
        let v = self.peek_int(path, min, max)?;
        self.take(path);
        Some(v)
    }

    fn int32(&mut self, path: &str) -> Option<i64> {
        self.int(path, 0, I32_MAX)
    }

    fn uint(&mut self, path: &str) -> Option<u64> {
        let v = self.peek_uint(path)?;
        self.take(path);
        Some(v)
    }

    fn time(&mut self, path: &str) -> Option<i64> {
        let v = self.peek_time(path)?;
        self.take(path);
        Some(v)
    }

    /// What was not mapped; None when nothing is left.
    fn into_rest(self) -> Option<Obj> {
        match self.rest {
            Value::Object(m) if !m.is_empty() => Some(m),
            _ => None,
        }
    }
}

/// Removes `keys` from `v`, and every object the removal left empty.
/// Returns whether `v` is now an empty object.
fn remove_path(v: &mut Value, keys: &[&str]) -> bool {
    let Value::Object(obj) = v else {
        return false;
    };
    match keys {
        [] => return false,
        [key] => {
            obj.remove(*key);
        }
        [key, rest @ ..] => {
            if obj
                .get_mut(*key)
                .is_some_and(|child| remove_path(child, rest))
            {
                obj.remove(*key);
            }
        }
    }
    obj.is_empty()
}

/// A copy without null members (absent means unknown).
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------
// Time

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 (`2026-11-22T09:58:38.380181117Z`, any fraction, `Z` or
/// `±hh:mm`) to ms since the epoch, rounded down.
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    parse_rfc3339(s).map(|(ms, _)| ms)
}

/// [`parse_rfc3339_ms`], and the offset from UTC in minutes.
fn parse_rfc3339(s: &str) -> Option<(i64, i64)> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let sep = |at: usize, set: &[u8]| b.get(at).is_some_and(|c| set.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            millis *= 10;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(c @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *c == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset * 60;
    Some((seconds * 1_000 + millis, offset))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "3f1c2a9e8b7d6c5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19";
    const POD_UID: &str = "6f1d2c3b-4a59-4e8f-9a7b-1c2d3e4f5a6b";
    const FP: &str = "hmac-sha256:5bbc28b856f1ea468f9d768550e9f736";

    fn head(action: &str, seq: u64) -> Value {
        json!({
            "@timestamp": "2026-11-22T09:58:38.380181117Z",
            "event": {
                "action": action,
                "id": format!("46a66c3b262597d1-{seq:012x}"),
                "sequence": seq,
                "schema_version": "1.2.0",
                "kind": "event",
            },
            "host": { "name": "node-1" },
            "observer": { "type": "sensor", "version": "0.1.0" },
        })
    }

    /// Deep-merges `extra` into `base`.
    fn with(mut base: Value, extra: Value) -> Value {
        fn merge(a: &mut Value, b: Value) {
            match (a, b) {
                (Value::Object(a), Value::Object(b)) => {
                    for (k, v) in b {
                        match a.get_mut(&k) {
                            Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                            _ => {
                                a.insert(k, v);
                            }
                        }
                    }
                }
                (a, b) => *a = b,
            }
        }
        merge(&mut base, extra);
        base
    }

    fn pod_process() -> Value {
        json!({
            "process": {
                "pid": 4242, "parent_pid": 4200, "thread": { "id": 4243 },
                "executable": { "path": "/usr/local/bin/python3.11", "name": "python3" },
                "command_line": "python3 app.py --api-key=****",
                "user": { "id": 1000, "name": "app" }, "group": { "id": 1000 },
                "cgroup": { "id": 8812, "path": format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6f1d2c3b_4a59_4e8f_9a7b_1c2d3e4f5a6b.slice/cri-containerd-{CID}.scope") },
                "io": { "fd": 7 },
                "attribution_source": "exec",
                "start": "2026-11-22T09:50:01.000000001Z",
                "entity_id": "4242-7024720754124",
                "ancestry": [
                    { "pid": 4200, "executable": "/usr/bin/bash", "start": "2026-11-22T09:49:00.5Z" },
                    { "pid": 4100, "executable": "/pause" }
                ]
            },
            "container": {
                "id": CID, "runtime": "containerd", "name": "chat-worker",
                "image": { "name": "registry.local/chat-worker:1.4" }
            },
            "k8s": {
                "pod": { "name": "chat-worker-7d9f-abcde", "uid": POD_UID },
                "namespace": { "name": "ml" },
                "container": { "name": "worker" },
                "service_account": { "name": "chat-worker" },
                "node": { "name": "node-1.cluster" }
            },
            "workload": {
                "spiffe_id": "spiffe://cluster.local/ns/ml/sa/chat-worker",
                "spiffe_id_source": "derived",
                "cloud_identity": "arn:aws:iam::123456789012:role/chat",
                "cloud_provider": "aws",
                "cloud_identity_source": "irsa"
            }
        })
    }

    fn host_login_process() -> Value {
        json!({
            "process": {
                "pid": 15019, "parent_pid": 14538,
                "executable": { "path": "/usr/bin/curl", "name": "curl" },
                "command_line": "curl -H Authorization: **** https://api.anthropic.com/v1/messages",
                "user": { "id": 0, "name": "root" }, "group": { "id": 0 },
                "attribution_source": "exec",
                "loginuid": 1000, "sessionid": 3,
                "login_user": { "id": 1000, "name": "alice" },
                "tty": "pts/0",
                "start": "2026-11-22T09:58:38.1Z",
                "entity_id": "15019-7024720754124",
                "ancestry": [
                    { "pid": 14538, "executable": "/usr/bin/bash", "start": "2026-11-22T08:00:00.000000000Z" },
                    { "pid": 14000, "executable": "/usr/bin/sudo" },
                    { "pid": 1, "executable": "/usr/lib/systemd/systemd" }
                ]
            },
            "user": { "id": "1000", "name": "alice" }
        })
    }

    fn model_call_pod() -> Value {
        let call = json!({
            "event": { "category": ["network", "api"], "outcome": "success", "duration": 842_123_456 },
            "client": { "address": "10.42.0.17", "port": 51544 },
            "server": { "address": "api.openai.com", "ip": "162.159.140.245", "port": 443 },
            "network": { "transport": "tcp", "type": "ipv4", "protocol": { "name": "http", "version": "1.1" } },
            "http": {
                "request": { "method": "POST", "size": 812, "body": { "size": 89, "truncated": false } },
                "response": { "status_code": 200, "size": 1533, "body": { "size": 1100, "truncated": false } }
            },
            "url": { "path": "/v1/chat/completions", "domain": "api.openai.com" },
            "user_agent": { "original": "OpenAI/Python 3.54.0" },
            "gen_ai": {
                "provider": { "name": "openai" }, "operation": { "name": "chat" },
                "request": { "model": "gpt-4o-mini", "stream": false, "max_tokens": 256, "temperature": 0.2 },
                "response": { "model": "gpt-4o-mini-2024-07-18", "id": "chatcmpl-abc", "finish_reasons": ["stop"] },
                "usage": { "input_tokens": 23, "output_tokens": 118 },
                "server": { "time_to_first_byte": 611_000_000 }
            },
            "credential": { "kind": "openai_api_key", "fingerprint": FP, "source": "authorization", "shared": true, "actor_count": 2 },
            "tls": { "library": "openssl", "session": { "id": 3 } }
        });
        with(with(head("model_call", 2), pod_process()), call)
    }

    /// Streaming, no response seen (the connection ended first).
    fn model_call_no_response() -> Value {
        let call = json!({
            "event": { "outcome": "unknown", "duration": 30_000_000_000u64 },
            "server": { "address": "api.anthropic.com", "port": 443 },
            "http": { "request": { "method": "POST", "size": 700 }, "response": { "missing": true } },
            "url": { "path": "/v1/messages", "domain": "api.anthropic.com" },
            "gen_ai": {
                "provider": { "name": "anthropic" }, "operation": { "name": "chat" },
                "request": { "model": "claude-sonnet-4", "stream": true }
            },
            "credential": { "kind": "anthropic_api_key", "fingerprint": FP },
            "tls": { "library": "boringssl" }
        });
        with(with(head("model_call", 3), host_login_process()), call)
    }

    /// A 429, streaming, bearer token, only output tokens known.
    fn model_call_error() -> Value {
        let call = json!({
            "event": { "outcome": "failure", "duration": 120_000_000 },
            "server": { "address": "10.0.0.5", "ip": "10.0.0.5", "port": 8443 },
            "http": { "request": { "method": "POST" }, "response": { "status_code": 429 } },
            "url": { "path": "/v1/embeddings", "domain": "10.0.0.5", "query": "api-version=2024-02-01&key=****" },
            "gen_ai": {
                "provider": { "name": "openai-compatible" }, "operation": { "name": "embeddings" },
                "usage": { "output_tokens": 0 },
                "parse_error": true
            },
            "credential": { "kind": "bearer_jwt", "fingerprint": FP },
            "tls": { "library": "unknown" },
            "identity": { "unresolved": ["container.name"] }
        });
        with(with(head("model_call", 4), pod_process()), call)
    }

    fn connect_ok() -> Value {
        with(
            with(head("connect", 5), pod_process()),
            json!({
                "event": { "category": ["network"], "type": ["connection", "start"], "outcome": "success" },
                "server": { "address": "162.159.140.245", "ip": "162.159.140.245", "port": 443 },
                "network": { "transport": "tcp", "type": "ipv4", "connect": { "in_progress": true } },
            }),
        )
    }

    fn policy_violation() -> Value {
        with(
            with(head("policy_violation", 21), pod_process()),
            json!({
                "event": { "kind": "alert", "category": ["network"], "type": ["denied"], "outcome": "failure" },
                "server": { "address": "10.0.4.12", "ip": "10.0.4.12", "port": 443 },
                "error": { "code": "ECONNREFUSED" },
                "causation": { "parent_event_id": "46a66c3b262597d1-000000000014" },
                "policy": {
                    "decision": "deny", "rule": "batch-no-model-apis",
                    "reason": "rule `batch-no-model-apis` matched service_account=batch, host=10.0.4.12",
                    "version": "4e4f8250148e5fc5", "enforcement": "blocked", "trigger": "connect",
                    "violation": { "suppressed": 0 },
                },
                "message": "deny by rule `batch-no-model-apis`: pod ml/chat (service account batch) connect to 10.0.4.12: refused in the kernel",
            }),
        )
    }

    fn connect_refused() -> Value {
        with(
            with(head("connect", 6), host_login_process()),
            json!({
                "event": { "outcome": "failure" },
                "server": { "address": "::1", "ip": "::1", "port": 8080 },
                "network": { "transport": "tcp", "type": "ipv6", "connect": { "in_progress": false } },
                "error": { "code": "ECONNREFUSED" },
            }),
        )
    }

    fn connect_timeout() -> Value {
        with(
            with(head("connect", 7), host_login_process()),
            json!({
                "event": { "outcome": "failure" },
                "server": { "address": "2606:4700::6810:84e5", "ip": "2606:4700::6810:84e5", "port": 443 },
                "network": { "transport": "tcp", "type": "ipv6" },
                "error": { "code": "ETIMEDOUT" },
            }),
        )
    }

    fn process_exec() -> Value {
        with(
            with(head("process_exec", 8), host_login_process()),
            json!({ "event": { "category": ["process"], "type": ["start"] } }),
        )
    }

    fn process_exit() -> Value {
        with(
            with(head("process_exit", 9), pod_process()),
            json!({ "event": { "category": ["process"], "type": ["end"] } }),
        )
    }

    fn credential_shared() -> Value {
        with(
            head("credential_shared", 10),
            json!({
                "event": { "kind": "alert", "category": ["iam"], "type": ["info"] },
                "message": format!("credential {FP} used by 3 distinct actors"),
                "credential": {
                    "fingerprint": FP, "kind": "openai_api_key", "actor_count": 3,
                    "share_window_seconds": 3600,
                    "actors": [
                        {
                            "actor": { "key": format!("pod:{POD_UID}") },
                            "container": { "id": CID, "name": "chat-worker", "runtime": "containerd", "image": { "name": "registry.local/chat-worker:1.4" } },
                            "k8s": { "pod": { "name": "chat-worker-7d9f-abcde", "uid": POD_UID }, "namespace": { "name": "ml" }, "service_account": { "name": "chat-worker" } },
                            "workload": { "spiffe_id": "spiffe://cluster.local/ns/ml/sa/chat-worker" },
                            "process": { "user": { "id": 1000, "name": "app" }, "executable": { "path": "/usr/local/bin/python3.11" } },
                            "first_seen_boot_ns": 7_000_000_000_000u64, "last_seen_boot_ns": 7_020_000_000_000u64,
                            "model_calls": 12, "last_event_id": "46a66c3b262597d1-000000000002"
                        },
                        {
                            "actor": { "key": "host-login:1000" },
                            "process": { "user": { "id": 0, "name": "root" }, "loginuid": 1000, "executable": { "path": "/usr/bin/curl" } },
                            "first_seen_boot_ns": 7_010_000_000_000u64, "last_seen_boot_ns": 7_010_000_000_000u64,
                            "model_calls": 1
                        },
                        {
                            "actor": { "key": "host-process:999" },
                            "process": { "pid": 999 },
                            "first_seen_boot_ns": 7_021_000_000_000u64, "last_seen_boot_ns": 7_021_000_000_000u64,
                            "model_calls": 1
                        }
                    ]
                }
            }),
        )
    }

    fn health(status: &str, drops: u64) -> Value {
        with(
            head("sensor_health", 11),
            json!({
                "event": { "kind": "metric" },
                "sensor": {
                    "status": status, "instance": "46a66c3b262597d1",
                    "kernel": { "ringbuf_drops": drops, "tls_read_errors": 0, "tls_bytes_truncated": 0, "tls_orphan_returns": 0 },
                    "pipeline": { "records": 12345, "decode_errors": 0, "events_emitted": { "model_call": 2 }, "sink_errors": 0 },
                    "sessions": { "parse_errors": 0, "bytes_lost": 0 },
                    "processes_tracked": 103,
                    "identity": { "containers": 4 },
                    "credentials_tracked": 2,
                    "tls": { "files_checked": 81, "attach_failures": 0, "check_failures": 0,
                             "files_probed": [{ "path": "/lib/x86_64-linux-gnu/libssl.so.3", "library": "openssl", "functions": ["SSL_write", "SSL_read"] }] }
                }
            }),
        )
    }

    fn checkpoint() -> Value {
        with(
            head("sensor_checkpoint", 12),
            json!({
                "event": { "kind": "event" },
                "sensor": { "checkpoint": { "records": 18_234u64, "last_hash": "9f2c4e1b7a05d3c8e6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7" } }
            }),
        )
    }

    fn unknown_action() -> Value {
        with(
            with(head("file_open", 13), host_login_process()),
            json!({ "file": { "path": "/etc/shadow" }, "event": { "outcome": "failure" } }),
        )
    }

    /// Wrong types and missing parts everywhere.
    fn odd_events() -> Vec<Value> {
        vec![
            // Process event whose pid is a string: no process, Base Event.
            with(
                head("process_exec", 20),
                json!({ "process": { "pid": "4242", "parent_pid": -1, "user": { "id": "root" } } }),
            ),
            // Model call without a process: no actor, Base Event.
            with(
                head("model_call", 21),
                json!({ "server": { "address": "api.openai.com", "port": "443" }, "gen_ai": { "operation": { "name": "chat" } } }),
            ),
            // Model call with odd types that still maps.
            with(
                with(head("model_call", 22), host_login_process()),
                json!({
                    "@timestamp": "yesterday",
                    "event": { "outcome": "maybe", "duration": -5, "id": 17 },
                    "server": { "address": "", "ip": "not-an-ip", "port": 70000 },
                    "http": { "request": { "method": "post", "size": 5_000_000_000u64 }, "response": { "status_code": "200" } },
                    "url": { "path": ["/v1"], "domain": null },
                    "gen_ai": { "provider": { "name": 7 }, "operation": { "name": "chat" }, "usage": { "input_tokens": 1.5, "output_tokens": -3 } },
                    "credential": { "fingerprint": 12 },
                    "process": { "ancestry": [{ "pid": 1, "executable": 5 }], "start": "2026-02-30T00:00:00Z", "thread": "x" },
                    "container": { "id": 5, "name": "c" },
                    "k8s": { "pod": { "uid": "not-a-uuid" } },
                    "workload": { "spiffe_id": false, "cloud_identity": "sa@proj.iam.gserviceaccount.com", "cloud_provider": "ibm" }
                }),
            ),
            // Connect without a server: Base Event.
            with(
                head("connect", 23),
                json!({ "event": { "outcome": "success" }, "server": { "port": 443 } }),
            ),
            // Credential finding with junk actors and no fingerprint.
            with(
                head("credential_shared", 24),
                json!({ "credential": { "actor_count": "3", "actors": [1, {}, { "actor": { "key": 5 } }] } }),
            ),
            // Health with an unknown status, no observer, host name a number.
            json!({ "@timestamp": "2026-11-22T09:58:38Z", "event": { "action": "sensor_health" }, "host": { "name": 5 }, "sensor": { "status": "weird" } }),
            // No event object at all.
            json!({ "event": "model_call", "foo": { "bar": [1, null, 2] }, "nothing": null }),
            json!({}),
            json!([1, 2, 3]),
            json!("a string"),
        ]
    }

    fn samples() -> Vec<Value> {
        let mut all = vec![
            model_call_pod(),
            model_call_no_response(),
            model_call_error(),
            connect_ok(),
            connect_refused(),
            connect_timeout(),
            process_exec(),
            process_exit(),
            credential_shared(),
            policy_violation(),
            health("ready", 0),
            health("running", 0),
            health("degraded", 17),
            health("stopped", 17),
            checkpoint(),
            unknown_action(),
        ];
        all.extend(odd_events());
        all
    }

    fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
        let mut v = v;
        for key in path.split('.') {
            v = match key.parse::<usize>() {
                Ok(i) => &v[i],
                Err(_) => &v[key],
            };
        }
        v
    }

    fn has(v: &Value, path: &str) -> bool {
        !at(v, path).is_null()
    }

    fn profiles(v: &Value) -> Vec<&str> {
        at(v, "metadata.profiles")
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    fn classification(v: &Value) -> (i64, i64, i64) {
        (
            at(v, "class_uid").as_i64().unwrap_or(-1),
            at(v, "activity_id").as_i64().unwrap_or(-1),
            at(v, "type_uid").as_i64().unwrap_or(-1),
        )
    }

    #[test]
    fn model_call_in_a_pod() {
        let o = encode(&model_call_pod());
        assert_eq!(classification(&o), (6003, 1, 600301));
        assert_eq!(o["type_name"], "API Activity: Create");
        assert_eq!(o["time"], 1_795_341_518_380i64);
        assert_eq!(o["duration"], 842);
        assert_eq!(o["timezone_offset"], 0);
        assert_eq!(o["status_id"], 1);
        assert_eq!(o["status"], "Success");
        assert_eq!(at(&o, "metadata.version"), OCSF_VERSION);
        assert_eq!(at(&o, "metadata.uid"), "46a66c3b262597d1-000000000002");
        assert_eq!(
            at(&o, "metadata.original_time"),
            "2026-11-22T09:58:38.380181117Z"
        );
        assert_eq!(at(&o, "metadata.event_code"), "model_call");
        assert_eq!(at(&o, "metadata.product.version"), "0.1.0");
        assert!(!has(&o, "metadata.sequence"), "left to the sink");
        let p = profiles(&o);
        for want in ["ai_operation", "container", "host", "linux/linux_users"] {
            assert!(p.contains(&want), "{want} in {p:?}");
        }
        assert_eq!(at(&o, "ai_model.name"), "gpt-4o-mini");
        assert_eq!(at(&o, "ai_model.ai_provider"), "openai");
        assert_eq!(at(&o, "message_context.prompt_tokens"), 23);
        assert_eq!(at(&o, "message_context.completion_tokens"), 118);
        assert_eq!(at(&o, "message_context.total_tokens"), 141);
        assert_eq!(at(&o, "api.operation"), "chat");
        assert_eq!(at(&o, "api.response.code"), 200);
        assert_eq!(at(&o, "api.token.type_id"), 7);
        assert_eq!(at(&o, "api.token.uid"), FP);
        assert_eq!(at(&o, "http_request.http_method"), "POST");
        assert_eq!(at(&o, "http_request.url.hostname"), "api.openai.com");
        assert_eq!(at(&o, "http_request.url.path"), "/v1/chat/completions");
        assert_eq!(at(&o, "http_request.url.port"), 443);
        assert_eq!(at(&o, "http_request.user_agent"), "OpenAI/Python 3.54.0");
        assert_eq!(at(&o, "http_request.version"), "HTTP/1.1");
        assert_eq!(at(&o, "http_response.code"), 200);
        assert_eq!(at(&o, "http_response.latency"), 611);
        assert_eq!(at(&o, "dst_endpoint.hostname"), "api.openai.com");
        assert_eq!(at(&o, "dst_endpoint.ip"), "162.159.140.245");
        assert_eq!(at(&o, "dst_endpoint.port"), 443);
        assert_eq!(at(&o, "src_endpoint.ip"), "10.42.0.17");
        assert_eq!(at(&o, "src_endpoint.port"), 51544);
        let p = at(&o, "actor.process");
        assert_eq!(p["pid"], 4242);
        assert_eq!(p["uid"], "4242-7024720754124");
        assert_eq!(p["name"], "python3");
        assert_eq!(p["cmd_line"], "python3 app.py --api-key=****");
        assert_eq!(at(p, "file.path"), "/usr/local/bin/python3.11");
        assert_eq!(at(p, "file.name"), "python3.11");
        assert_eq!(at(p, "user.uid"), "1000");
        assert_eq!(at(p, "user.name"), "app");
        assert_eq!(at(p, "parent_process.pid"), 4200);
        assert_eq!(at(p, "parent_process.file.path"), "/usr/bin/bash");
        assert_eq!(at(p, "parent_process.created_time"), 1_795_340_940_500i64);
        assert_eq!(at(p, "ancestry").as_array().map(Vec::len), Some(2));
        assert_eq!(at(p, "container.uid"), CID);
        assert_eq!(at(p, "container.pod_uuid"), POD_UID);
        assert_eq!(at(p, "container.orchestrator"), "Kubernetes");
        assert_eq!(at(p, "container.tags.0.name"), "k8s.namespace.name");
        assert_eq!(at(p, "container.tags.0.value"), "ml");
        assert_eq!(
            at(&o, "actor.user.uid"),
            "spiffe://cluster.local/ns/ml/sa/chat-worker"
        );
        assert_eq!(at(&o, "actor.user.type_id"), 4);
        assert_eq!(at(&o, "actor.user.account.type_id"), 4);
        assert_eq!(
            at(&o, "actor.user.account.uid"),
            "arn:aws:iam::123456789012:role/chat"
        );
        assert_eq!(at(&o, "actor.session.credential_uid"), FP);
        assert_eq!(at(&o, "device.hostname"), "node-1");
        assert_eq!(at(&o, "device.name"), "node-1.cluster");
        // What OCSF has no place for stays, natively nested.
        let u = &o["unmapped"];
        assert_eq!(
            at(u, "container.image.name"),
            "registry.local/chat-worker:1.4"
        );
        assert_eq!(at(u, "credential.shared"), true);
        assert_eq!(at(u, "credential.actor_count"), 2);
        assert_eq!(at(u, "credential.kind"), "openai_api_key");
        assert_eq!(at(u, "event.sequence"), 2);
        assert_eq!(at(u, "gen_ai.response.model"), "gpt-4o-mini-2024-07-18");
        assert_eq!(at(u, "workload.spiffe_id_source"), "derived");
        assert_eq!(at(u, "tls.library"), "openssl");
        assert_eq!(at(u, "process.cgroup.id"), 8812);
        // ... and what is mapped does not.
        for gone in [
            "process.pid",
            "process.executable",
            "process.ancestry",
            "server",
            "client",
            "url",
            "k8s",
            "container.id",
            "gen_ai.usage",
            "gen_ai.request.model",
            "http.request.method",
            "event.id",
            "event.action",
            "event.outcome",
            "host",
            "observer",
            "@timestamp",
        ] {
            assert!(!has(u, gone), "{gone} left in unmapped");
        }
    }

    #[test]
    fn model_call_without_response_from_a_login_session() {
        let o = encode(&model_call_no_response());
        assert_eq!(classification(&o), (6003, 1, 600301));
        assert_eq!(o["status_id"], 0);
        assert!(!has(&o, "http_response"));
        assert!(!has(&o, "api.response"));
        assert!(!has(&o, "message_context"), "no token counts");
        assert_eq!(at(&o, "ai_model.name"), "claude-sonnet-4");
        assert_eq!(o["duration"], 30_000);
        assert_eq!(at(&o, "unmapped.http.response.missing"), true);
        assert_eq!(at(&o, "unmapped.gen_ai.request.stream"), true);
        // No client: the caller is on this host.
        assert_eq!(at(&o, "src_endpoint.hostname"), "node-1");
        assert_eq!(at(&o, "dst_endpoint.hostname"), "api.anthropic.com");
        assert!(!has(&o, "dst_endpoint.ip"));
        // The human behind sudo.
        assert_eq!(at(&o, "actor.user.uid"), "1000");
        assert_eq!(at(&o, "actor.user.name"), "alice");
        assert_eq!(at(&o, "actor.user.type_id"), 1);
        assert_eq!(at(&o, "actor.process.auid"), 1000);
        assert_eq!(at(&o, "actor.process.user.name"), "root");
        assert_eq!(at(&o, "actor.process.session.terminal"), "pts/0");
        assert_eq!(at(&o, "actor.process.session.uid"), "3");
        assert!(!has(&o, "actor.process.container"));
        assert!(!profiles(&o).contains(&"container"));
        assert!(!has(&o, "unmapped.user"));
        assert!(!has(&o, "unmapped.process.login_user"));
    }

    #[test]
    fn model_call_failure() {
        let o = encode(&model_call_error());
        assert_eq!(o["status_id"], 2);
        assert_eq!(o["status"], "Failure");
        assert_eq!(at(&o, "http_response.code"), 429);
        assert_eq!(at(&o, "api.operation"), "embeddings");
        assert_eq!(at(&o, "api.token.type_id"), 99);
        assert_eq!(at(&o, "api.token.type"), "bearer_jwt");
        assert_eq!(
            at(&o, "http_request.url.query_string"),
            "api-version=2024-02-01&key=****"
        );
        assert_eq!(at(&o, "dst_endpoint.ip"), "10.0.0.5");
        assert!(!has(&o, "ai_model"), "no model known");
        assert_eq!(at(&o, "message_context.completion_tokens"), 0);
        assert!(!has(&o, "message_context.total_tokens"));
        assert_eq!(at(&o, "unmapped.gen_ai.parse_error"), true);
        assert_eq!(at(&o, "unmapped.identity.unresolved.0"), "container.name");
    }

    #[test]
    fn connects() {
        let o = encode(&connect_ok());
        assert_eq!(classification(&o), (4001, 1, 400101));
        assert_eq!(at(&o, "dst_endpoint.ip"), "162.159.140.245");
        assert_eq!(at(&o, "connection_info.direction_id"), 2);
        assert_eq!(at(&o, "connection_info.protocol_num"), 6);
        assert_eq!(at(&o, "connection_info.protocol_ver_id"), 4);
        assert_eq!(at(&o, "actor.process.pid"), 4242);
        assert_eq!(at(&o, "unmapped.network.connect.in_progress"), true);
        assert_eq!(at(&o, "unmapped.process.io.fd"), 7);

        let o = encode(&connect_refused());
        assert_eq!(classification(&o), (4001, 5, 400105));
        assert_eq!(o["status_id"], 2);
        assert_eq!(o["status_code"], "ECONNREFUSED");
        assert_eq!(at(&o, "connection_info.direction_id"), 4, "loopback");
        assert_eq!(at(&o, "connection_info.protocol_ver_id"), 6);

        let o = encode(&connect_timeout());
        assert_eq!(classification(&o), (4001, 4, 400104));
        assert_eq!(o["status_code"], "ETIMEDOUT");
    }

    #[test]
    fn processes() {
        let o = encode(&process_exec());
        assert_eq!(classification(&o), (1007, 1, 100701));
        assert_eq!(o["launch_type_id"], 3);
        assert_eq!(at(&o, "process.pid"), 15019);
        assert_eq!(at(&o, "process.created_time"), 1_795_341_518_100i64);
        assert_eq!(at(&o, "actor.process.pid"), 14538);
        assert_eq!(at(&o, "actor.process.file.name"), "bash");
        assert_eq!(at(&o, "actor.user.name"), "alice");
        assert_eq!(
            at(&o, "process.ancestry.2.path"),
            "/usr/lib/systemd/systemd"
        );
        assert!(has(&o, "device"));

        let o = encode(&process_exit());
        assert_eq!(classification(&o), (1007, 2, 100702));
        assert_eq!(at(&o, "actor.process.pid"), 4242, "ended itself");
        assert_eq!(at(&o, "actor.process.file.name"), "python3.11");
        assert_eq!(at(&o, "process.parent_process.pid"), 4200);
        assert_eq!(at(&o, "process.terminated_time"), &o["time"]);
        assert_eq!(at(&o, "process.container.uid"), CID);
        assert!(!has(&o, "exit_code"), "not in the native event");
        // Gone before user space looked: the kernel's facts only.
        let gone = with(
            head("process_exit", 30),
            json!({ "process": { "pid": 13640, "thread": { "id": 13640 }, "user": { "id": 0 },
                                 "group": { "id": 0 }, "cgroup": { "id": 1 }, "attribution_source": "kernel" } }),
        );
        let o = encode(&gone);
        assert_eq!(classification(&o), (1007, 2, 100702));
        assert_eq!(at(&o, "actor.process.pid"), 13640);
    }

    #[test]
    fn shared_credential() {
        let o = encode(&credential_shared());
        assert_eq!(classification(&o), (2004, 2, 200402), "third actor: update");
        assert_eq!(o["severity_id"], 4);
        assert_eq!(o["is_alert"], true);
        assert_eq!(
            at(&o, "finding_info.uid"),
            &json!(format!("credential_shared:{FP}"))
        );
        assert_eq!(
            o["message"],
            format!("credential {FP} used by 3 distinct actors")
        );
        let ev = at(&o, "evidences").as_array().cloned().unwrap_or_default();
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0]["uid"], format!("pod:{POD_UID}"));
        assert_eq!(at(&ev[0], "container.pod_uuid"), POD_UID);
        assert_eq!(
            at(&ev[0], "actor.user.uid"),
            "spiffe://cluster.local/ns/ml/sa/chat-worker"
        );
        assert_eq!(at(&ev[0], "user.name"), "app");
        assert_eq!(at(&ev[0], "file.path"), "/usr/local/bin/python3.11");
        assert_eq!(at(&ev[0], "data.model_calls"), 12);
        assert_eq!(
            at(&ev[0], "data.container.image.name"),
            "registry.local/chat-worker:1.4"
        );
        assert_eq!(
            at(&ev[1], "data.process.loginuid"),
            1000,
            "no pid: no process.auid"
        );
        assert_eq!(at(&ev[2], "process.pid"), 999);
        assert!(!has(&o, "unmapped.credential.actors"));
        assert_eq!(at(&o, "unmapped.credential.fingerprint"), FP);
        assert_eq!(at(&o, "unmapped.credential.share_window_seconds"), 3600);

        let mut two = credential_shared();
        two["credential"]["actor_count"] = json!(2);
        assert_eq!(classification(&encode(&two)), (2004, 1, 200401));
    }

    #[test]
    fn policy_violation_is_a_finding_of_its_rule() {
        let o = encode(&policy_violation());
        assert_eq!(classification(&o), (2004, 1, 200401));
        assert_eq!(o["severity_id"], 4, "deny: high");
        assert_eq!(at(&o, "finding_info.analytic.name"), "batch-no-model-apis");
        assert_eq!(at(&o, "finding_info.types.1"), "deny");
        assert_eq!(at(&o, "evidences.0.dst_endpoint.ip"), "10.0.4.12");
        assert_eq!(at(&o, "evidences.0.process.pid"), 4242);
        assert_eq!(at(&o, "unmapped.policy.enforcement"), "blocked");
        let mut alert = policy_violation();
        alert["policy"]["decision"] = json!("alert");
        assert_eq!(encode(&alert)["severity_id"], 3);
    }

    #[test]
    fn sensor_lifecycle_events() {
        let cases = [
            ("ready", 3, "Start", 1),
            ("running", 99, "Heartbeat", 1),
            ("degraded", 99, "Heartbeat", 99),
            ("stopped", 4, "Stop", 1),
        ];
        for (state, activity, name, status_id) in cases {
            let o = encode(&health(state, 17));
            assert_eq!(
                classification(&o),
                (6002, activity, 600200 + activity),
                "{state}"
            );
            assert_eq!(o["activity_name"], name);
            assert_eq!(o["status_id"], status_id);
            assert_eq!(o["status_detail"], state);
            assert_eq!(at(&o, "app.name"), PRODUCT_NAME);
            assert_eq!(at(&o, "unmapped.sensor.kernel.ringbuf_drops"), 17);
            assert_eq!(at(&o, "unmapped.sensor.instance"), "46a66c3b262597d1");
        }
        let o = encode(&health("degraded", 17));
        assert_eq!(o["type_name"], "Application Lifecycle: Other");
        assert_eq!(o["status"], "Degraded");
        assert_eq!(o["severity_id"], 3);

        let o = encode(&checkpoint());
        assert_eq!(classification(&o), (6002, 99, 600299));
        assert_eq!(o["activity_name"], "Checkpoint");
        assert_eq!(at(&o, "unmapped.sensor.checkpoint.records"), 18_234);
        assert!(at(&o, "unmapped.sensor.checkpoint.last_hash").is_string());
    }

    #[test]
    fn unknown_action_is_a_base_event() {
        let o = encode(&unknown_action());
        assert_eq!(classification(&o), (0, 99, 99));
        assert_eq!(o["activity_name"], "file_open");
        assert_eq!(o["type_name"], "Base Event: Other");
        assert_eq!(o["status_id"], 2);
        assert_eq!(at(&o, "actor.process.pid"), 15019);
        assert_eq!(at(&o, "unmapped.file.path"), "/etc/shadow");
        assert_eq!(at(&o, "metadata.event_code"), "file_open");
    }

    #[test]
    fn odd_fields_do_not_panic_and_are_kept() {
        let odd = odd_events();
        let outs: Vec<Value> = odd.iter().map(encode).collect();
        for o in &outs {
            assert!(o["class_uid"].is_i64());
            assert!(o["time"].is_i64());
            assert_eq!(at(o, "metadata.version"), OCSF_VERSION);
        }
        // A string pid: not a process, so a Base Event keeping it.
        assert_eq!(classification(&outs[0]), (0, 99, 99));
        assert_eq!(at(&outs[0], "unmapped.process.pid"), "4242");
        assert_eq!(at(&outs[0], "unmapped.process.parent_pid"), -1);
        // A model call without a process.
        assert_eq!(classification(&outs[1]), (0, 99, 99));
        assert_eq!(at(&outs[1], "unmapped.server.port"), "443");
        // Odd types that still make an API Activity.
        let o = &outs[2];
        assert_eq!(o["class_uid"], 6003);
        let u = &o["unmapped"];
        assert_eq!(at(o, "metadata.original_time"), "yesterday");
        assert!(!has(u, "@timestamp"), "carried verbatim by original_time");
        assert_eq!(at(u, "event.outcome"), "maybe");
        assert_eq!(at(u, "event.duration"), -5);
        assert_eq!(at(u, "event.id"), 17);
        assert_eq!(at(u, "server.address"), "");
        assert_eq!(at(u, "server.ip"), "not-an-ip");
        assert_eq!(at(u, "server.port"), 70000);
        assert_eq!(at(u, "http.request.method"), "post");
        assert_eq!(at(u, "http.request.size"), 5_000_000_000u64);
        assert_eq!(at(u, "http.response.status_code"), "200");
        assert_eq!(at(u, "url.path.0"), "/v1");
        assert_eq!(at(u, "gen_ai.provider.name"), 7);
        assert_eq!(at(u, "gen_ai.usage.input_tokens"), 1.5);
        assert_eq!(at(u, "credential.fingerprint"), 12);
        assert_eq!(at(u, "process.ancestry.0.executable"), 5);
        assert_eq!(at(u, "process.start"), "2026-02-30T00:00:00Z");
        assert_eq!(at(u, "container.id"), 5);
        assert_eq!(at(u, "workload.spiffe_id"), false);
        assert_eq!(at(u, "workload.cloud_provider"), "ibm");
        assert!(!has(u, "url.domain"), "nulls dropped");
        assert_eq!(at(o, "api.operation"), "chat");
        assert_eq!(at(o, "actor.process.container.name"), "c");
        assert_eq!(at(o, "actor.process.container.tags.0.value"), "not-a-uuid");
        assert!(!has(o, "actor.process.ancestry"), "an item does not map");
        assert_eq!(at(o, "actor.process.parent_process.pid"), 14538);
        assert_eq!(at(o, "actor.user.account.type_id"), 0);
        assert!(!has(o, "http_response"));
        // Connect without a server.
        assert_eq!(classification(&outs[3]), (0, 99, 99));
        // Finding with junk actors.
        assert_eq!(outs[4]["class_uid"], 2004);
        assert_eq!(at(&outs[4], "evidences.0.data"), 1);
        assert_eq!(at(&outs[4], "evidences.2.data.actor.key"), 5);
        // Health without host or version.
        assert_eq!(outs[5]["class_uid"], 6002);
        assert!(!has(&outs[5], "device"));
        assert_eq!(at(&outs[5], "unmapped.host.name"), 5);
        // No action.
        assert_eq!(classification(&outs[6]), (0, 0, 0));
        assert_eq!(at(&outs[6], "unmapped.event"), "model_call");
        assert_eq!(at(&outs[6], "unmapped.foo.bar.2"), 2);
        assert!(!has(&outs[6], "unmapped.nothing"));
        assert!(!has(&outs[7], "unmapped"));
        // Not an object.
        assert_eq!(outs[8]["raw_data"], "[1,2,3]");
    }

    /// A native record as written (with its chain fields) keeps them where
    /// a sink puts the OCSF chain fields.
    #[test]
    fn native_chain_fields_stay_in_unmapped_event() {
        let prev = "9f2c4e1b7a05d3c8e6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";
        let mut native = checkpoint();
        native["event"]["hash"] = json!(prev.replace('9', "a"));
        native["event"]["prev_hash"] = json!(prev);
        let o = encode(&native);
        assert_eq!(at(&o, "unmapped.event.prev_hash"), prev);
        assert!(at(&o, "unmapped.event.hash").is_string());
        assert_eq!(at(&o, "unmapped.event.sequence"), 12);
        assert!(!has(&o, "metadata.sequence"));
    }

    #[test]
    fn timestamps() {
        let ms = parse_rfc3339_ms;
        assert_eq!(ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            ms("2026-11-22T09:58:38.380181117Z"),
            Some(1_795_341_518_380)
        );
        assert_eq!(ms("2026-11-22T09:58:38Z"), Some(1_795_341_518_000));
        assert_eq!(ms("2026-11-22T09:58:38.3Z"), Some(1_795_341_518_300));
        assert_eq!(ms("2026-11-22T11:58:38.380+02:00"), Some(1_795_341_518_380));
        assert_eq!(ms("2026-11-22t09:58:38.380z"), Some(1_795_341_518_380));
        assert_eq!(ms("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(ms("1969-12-31T23:59:59.999Z"), Some(-1));
        assert_eq!(
            parse_rfc3339("2026-11-22T04:28:38-05:30"),
            Some((1_795_341_518_000, -330))
        );
        for bad in [
            "",
            "yesterday",
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T09:58:38.Z",
            "2026-11-22T09:58:38",
            "2026-11-22T09:58:38Zjunk",
            "2026-11-22T09:58:38+0200",
            "２026-11-22T09:58:38Z",
        ] {
            assert_eq!(ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn uuids() {
        assert!(is_uuid(POD_UID));
        assert!(!is_uuid("6f1d2c3b_4a59_4e8f_9a7b_1c2d3e4f5a6b"));
        assert!(!is_uuid("6f1d2c3b-4a59-4e8f-9a7b-1c2d3e4f5a6"));
    }

    /// With `OCSF_NATIVE_SAMPLES_OUT=FILE`, writes the native samples as
    /// JSON lines, to be encoded and checked with
    /// `tests/fixtures/validate_ocsf.py --strict`.
    #[test]
    fn samples_encode() {
        let all = samples();
        for s in &all {
            let o = encode(s);
            assert!(o.is_object());
            assert!(serde_json::to_string(&o).is_ok());
        }
        if let Some(path) = std::env::var_os("OCSF_NATIVE_SAMPLES_OUT") {
            let lines: Vec<String> = all.iter().map(Value::to_string).collect();
            std::fs::write(path, lines.join("\n") + "\n").unwrap();
        }
    }
}
