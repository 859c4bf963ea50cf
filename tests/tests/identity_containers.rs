//! Who acted, in containers and pods: a real client (curl from the test
//! image, its own libssl) calls the fake model API from inside docker,
//! podman and containerd containers and from a Kubernetes-shaped pod made
//! through containerd's CRI plugin. Every model call must carry the
//! container the runtime reports, and the pod's name, namespace, uid,
//! container name, service account, SPIFFE ID and cloud role; one key used
//! from two pods must be reported as shared.
//!
//! The runtimes are set up by `cargo xtask test`; when one cannot run, these
//! tests fail (they never skip).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use sensor_tests::{
    FakeApi, WAIT, action, assert_schema_valid, fake_key,
    runtime::{self, PodFinished, PodOpts, RunOpts, service_account_token},
    scratch, shared_sensor, unique,
};
use serde_json::Value;

const CA_IN_CONTAINER: &str = "/etc/sensor-test/ca.pem";

/// The client: curl from the image, the key from the environment (never on
/// a command line).
fn curl_script(api: &FakeApi, model: &str) -> Vec<String> {
    let url = format!("{}/chat/completions", api.openai_base());
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let script = format!(
        "exec curl -sS --fail-with-body --cacert {CA_IN_CONTAINER} \
         -H \"Authorization: Bearer $API_KEY\" -H 'content-type: application/json' \
         -d '{body}' {url}"
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

/// The model call made from container `id`.
fn model_call_from(container_id: &str, model: &str) -> Value {
    let sensor = shared_sensor();
    let found = sensor.wait_for(WAIT, |e| {
        action(e) == "model_call"
            && e["container"]["id"] == container_id
            && e["gen_ai"]["request"]["model"] == model
    });
    found.unwrap_or_else(|| {
        panic!(
            "no model_call from container {container_id}\nmodel calls: {:#?}\nsensor log:\n{}",
            sensor.events(|e| action(e) == "model_call"),
            sensor.stderr_text()
        )
    })
}

fn common_checks(e: &Value, key: &str) {
    // The process is the container's curl, seen from the host.
    assert_eq!(e["process"]["executable"]["path"], "/usr/bin/curl", "{e:#}");
    assert_eq!(e["process"]["user"]["name"], "root", "{e:#}");
    // The ancestry stays inside the container: curl was exec'd by the
    // container's first process, so there is no parent inside it, or only
    // the container's own processes.
    for parent in e["process"]["ancestry"].as_array().into_iter().flatten() {
        assert_ne!(parent["pid"], 1, "ancestry left the container: {e:#}");
    }
    assert!(e.get("identity").is_none(), "all identity resolved: {e:#}");
    assert_schema_valid(std::slice::from_ref(e));
    shared_sensor().assert_never_printed(key);
}

fn run_opts(api: &FakeApi, key: &str, model: &str) -> RunOpts {
    RunOpts::new(&curl_script(api, model))
        .env("API_KEY", key)
        .bind_ro(&api.ca, CA_IN_CONTAINER)
}

#[test]
fn docker_container() {
    shared_sensor();
    let api = FakeApi::start("id-docker");
    let key = fake_key("docker");
    let model = format!("gpt-docker-{}", unique());
    let f = runtime::docker_run(&run_opts(&api, &key, &model));
    f.assert_success();
    let e = model_call_from(&f.id, &model);
    assert_eq!(e["container"]["runtime"], "docker");
    assert_eq!(e["container"]["name"], f.name.as_str());
    assert_eq!(e["container"]["image"]["name"], f.image.as_str());
    assert!(e.get("k8s").is_none(), "not a pod: {e:#}");
    common_checks(&e, &key);
}

#[test]
fn podman_container() {
    shared_sensor();
    let api = FakeApi::start("id-podman");
    let key = fake_key("podman");
    let model = format!("gpt-podman-{}", unique());
    let f = runtime::podman_run(&run_opts(&api, &key, &model));
    f.assert_success();
    let e = model_call_from(&f.id, &model);
    assert_eq!(e["container"]["runtime"], "podman");
    assert_eq!(e["container"]["name"], f.name.as_str());
    assert_eq!(e["container"]["image"]["name"], f.image.as_str());
    common_checks(&e, &key);
}

#[test]
fn containerd_container() {
    shared_sensor();
    let api = FakeApi::start("id-ctr");
    let key = fake_key("ctr");
    let model = format!("gpt-ctr-{}", unique());
    let f = runtime::ctr_run(&run_opts(&api, &key, &model));
    f.assert_success();
    let e = model_call_from(&f.id, &model);
    assert_eq!(e["container"]["runtime"], "containerd");
    // The image is known only to containerd's metadata (its API).
    assert_eq!(e["container"]["image"]["name"], f.image.as_str(), "{e:#}");
    common_checks(&e, &key);
}

/// A projected service-account token as the API server issues it (the
/// signature is not checked by the sensor; the claims are what it reads).
struct Pod {
    finished: PodFinished,
    service_account: String,
    token: String,
}

/// Runs the client in a pod with a token naming `service_account` and an
/// IRSA role.
fn pod(api: &FakeApi, key: &str, model: &str, service_account: &str, role: &str) -> Pod {
    let namespace = format!("team-{}", &unique()[..6]);
    let name = format!("agent-{}", unique());
    let pod_uid = runtime::random_uuid();
    let token = service_account_token(&namespace, service_account, &name, &pod_uid);
    let dir = scratch(&format!("token-{name}"));
    let token_path = dir.join("token");
    std::fs::write(&token_path, &token).unwrap();
    let finished = runtime::cri_pod(
        &PodOpts::new(&curl_script(api, model))
            .name(&name)
            .namespace(&namespace)
            .uid(&pod_uid)
            .container_name("agent")
            .env("API_KEY", key)
            .env("AWS_ROLE_ARN", role)
            .env(
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
            )
            .bind_ro(&api.ca, CA_IN_CONTAINER)
            .service_account_token(&token_path),
    );
    finished.assert_success();
    Pod {
        finished,
        service_account: service_account.to_owned(),
        token,
    }
}

fn assert_pod_identity(e: &Value, pod: &Pod, role: &str) {
    let f = &pod.finished;
    assert_eq!(e["container"]["runtime"], "containerd", "{e:#}");
    assert_eq!(e["k8s"]["pod"]["name"], f.pod_name.as_str(), "{e:#}");
    assert_eq!(e["k8s"]["pod"]["uid"], f.pod_uid.as_str());
    assert_eq!(e["k8s"]["namespace"]["name"], f.namespace.as_str());
    assert_eq!(e["k8s"]["container"]["name"], "agent");
    assert_eq!(
        e["k8s"]["service_account"]["name"],
        pod.service_account.as_str()
    );
    assert_eq!(e["k8s"]["node"]["name"], "it-node");
    assert_eq!(
        e["workload"]["spiffe_id"],
        format!(
            "spiffe://cluster.local/ns/{}/sa/{}",
            f.namespace, pod.service_account
        )
        .as_str()
    );
    assert_eq!(e["workload"]["spiffe_id_source"], "derived");
    assert_eq!(e["workload"]["cloud_identity"], role);
    assert_eq!(e["workload"]["cloud_provider"], "aws");
    assert_eq!(e["container"]["image"]["name"], f.image.as_str());
    let sensor = shared_sensor();
    // The token is read, never shown.
    sensor.assert_never_printed(&pod.token);
    sensor.assert_never_printed(pod.token.split('.').nth(1).unwrap());
}

#[test]
fn kubernetes_pod_through_cri() {
    shared_sensor();
    let api = FakeApi::start("id-pod");
    let key = fake_key("pod");
    let model = format!("gpt-pod-{}", unique());
    let role = "arn:aws:iam::123456789012:role/agent-runner";
    let pod = pod(&api, &key, &model, "agent-runner", role);
    let e = model_call_from(&pod.finished.container_id, &model);
    assert_pod_identity(&e, &pod, role);
    common_checks(&e, &key);
}

#[test]
fn one_key_two_pods_is_shared() {
    let sensor = shared_sensor();
    let api = FakeApi::start("id-shared-pods");
    let key = fake_key("sharedpods");
    let role = "arn:aws:iam::123456789012:role/shared";
    let m1 = format!("gpt-share1-{}", unique());
    let m2 = format!("gpt-share2-{}", unique());
    let p1 = pod(&api, &key, &m1, "billing", role);
    let e1 = model_call_from(&p1.finished.container_id, &m1);
    let p2 = pod(&api, &key, &m2, "support", role);
    let e2 = model_call_from(&p2.finished.container_id, &m2);
    let fp = e1["credential"]["fingerprint"].as_str().unwrap();
    assert_eq!(
        e2["credential"]["fingerprint"], fp,
        "same key, same fingerprint"
    );
    assert_eq!(e2["credential"]["shared"], true, "{e2:#}");
    let shared = sensor
        .wait_for(WAIT, |e| {
            action(e) == "credential_shared" && e["credential"]["fingerprint"] == fp
        })
        .expect("credential_shared event");
    let actors = shared["credential"]["actors"].as_array().expect("actors");
    assert_eq!(actors.len(), 2, "{shared:#}");
    for (actor, pod) in actors.iter().zip([&p1, &p2]) {
        assert_eq!(
            actor["k8s"]["pod"]["name"],
            pod.finished.pod_name.as_str(),
            "{shared:#}"
        );
        assert_eq!(actor["k8s"]["pod"]["uid"], pod.finished.pod_uid.as_str());
        assert_eq!(
            actor["k8s"]["service_account"]["name"],
            pod.service_account.as_str()
        );
        assert_eq!(actor["container"]["id"], pod.finished.container_id.as_str());
    }
    assert_eq!(actors[0]["last_event_id"], e1["event"]["id"]);
    assert_schema_valid(std::slice::from_ref(&shared));
    sensor.assert_never_printed(&key);
}

/// Every container of an image maps the layer's libssl through its own
/// overlay mount; the sensor must recognise it as the file it already
/// probed (from the image layers), not probe it once more per container:
/// a second probe on the same inode runs every probe twice, which shows as
/// returns without a matching entry.
#[test]
fn containers_of_one_image_share_one_probe() {
    let sensor = shared_sensor();
    let api = FakeApi::start("id-one-probe");
    let key = fake_key("oneprobe");
    let health_after = |seq: u64| {
        sensor
            .wait_for(WAIT, |e| {
                action(e) == "sensor_health" && e["event"]["sequence"].as_u64() > Some(seq)
            })
            .expect("a sensor_health event")
    };
    let last_seq = || {
        sensor
            .events(|_| true)
            .iter()
            .filter_map(|e| e["event"]["sequence"].as_u64())
            .max()
            .unwrap_or(0)
    };
    let model = format!("gpt-first-{}", unique());
    let f = runtime::docker_run(&run_opts(&api, &key, &model));
    f.assert_success();
    model_call_from(&f.id, &model);
    let before = health_after(last_seq());
    for round in 0..2 {
        let model = format!("gpt-again-{round}-{}", unique());
        let f = runtime::docker_run(&run_opts(&api, &key, &model));
        f.assert_success();
        model_call_from(&f.id, &model);
    }
    let after = health_after(last_seq());
    // TLS libraries only: programs are probed at their first run, and
    // the other tests of this file run podman, ctr and the like meanwhile.
    let probed = |e: &Value| {
        e["sensor"]["tls"]["files_probed"]
            .as_array()
            .map_or(0, |files| {
                files
                    .iter()
                    .filter(|f| f["path"].as_str().is_some_and(|p| p.contains("/lib")))
                    .count()
            })
    };
    assert_eq!(
        probed(&after),
        probed(&before),
        "the same image's libssl was probed again:\nbefore: {before:#}\nafter: {after:#}"
    );
    assert_eq!(
        after["sensor"]["kernel"]["tls_orphan_returns"],
        before["sensor"]["kernel"]["tls_orphan_returns"],
        "probes ran twice: {after:#}"
    );
}
