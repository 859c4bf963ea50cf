//! The container runtimes the tests use work on this host: each runs a
//! command in a fresh container from the test image, with an environment
//! variable, a read-only bind mount and the host network, and the id the
//! runtime reports is the one in the container's cgroup paths (what the
//! sensor reads to attribute a process to a container).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::PathBuf;

use sensor_tests::{
    runtime::{self, Finished, PodOpts, RunOpts},
    scratch, unique,
};

/// Prints the cgroup file and checks that every hierarchy (each v1
/// controller and the unified `0::` line) names the container.
fn assert_cgroups_name(runtime: &str, cgroup: &str, id: &str) {
    eprintln!("{runtime} /proc/self/cgroup:\n{cgroup}");
    let lines: Vec<&str> = cgroup.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("0::")),
        "{runtime}: no unified (0::) line in\n{cgroup}"
    );
    for line in &lines {
        assert!(
            line.contains(id),
            "{runtime}: cgroup line {line:?} does not name container {id}"
        );
    }
}

/// A marker file to bind-mount, standing in for a CA certificate.
fn marker_file(name: &str) -> (PathBuf, String) {
    let marker = format!("marker-{}", unique());
    let path = scratch(name).join("marker.pem");
    std::fs::write(&path, &marker).unwrap();
    (path, marker)
}

const SCRIPT: &str = "cat /proc/self/cgroup; echo ---; \
                      curl --version | head -n1; echo ---; \
                      cat /etc/sensor-test/ca.pem; echo; echo \"env=$SENSOR_MARKER\"";

fn check(f: &Finished, marker: &str, env: &str) {
    f.assert_success();
    let (cgroup, rest) = f.stdout.split_once("---\n").expect("script output");
    assert_cgroups_name(&f.runtime.to_string(), cgroup, &f.id);
    assert!(rest.contains("curl 7."), "no curl in the image:\n{rest}");
    assert!(rest.contains(marker), "bind mount not seen:\n{rest}");
    assert!(
        rest.contains(&format!("env={env}")),
        "env not seen:\n{rest}"
    );
    assert_eq!(f.image, runtime::test_image());
}

fn opts(marker_path: &PathBuf, env: &str) -> RunOpts {
    RunOpts::new(&["/bin/sh", "-c", SCRIPT])
        .env("SENSOR_MARKER", env)
        .bind_ro(marker_path, "/etc/sensor-test/ca.pem")
}

#[test]
fn docker_container_cgroup_names_its_id() {
    let (path, marker) = marker_file("smoke-docker");
    let f = runtime::docker_run(&opts(&path, "docker-env"));
    assert_eq!(f.id.len(), 64, "docker id {}", f.id);
    check(&f, &marker, "docker-env");
}

#[test]
fn podman_container_cgroup_names_its_id() {
    let (path, marker) = marker_file("smoke-podman");
    let f = runtime::podman_run(&opts(&path, "podman-env"));
    assert_eq!(f.id.len(), 64, "podman id {}", f.id);
    check(&f, &marker, "podman-env");
}

#[test]
fn containerd_container_cgroup_names_its_id() {
    let (path, marker) = marker_file("smoke-ctr");
    let f = runtime::ctr_run(&opts(&path, "ctr-env"));
    check(&f, &marker, "ctr-env");
}

#[test]
fn container_exit_status_and_streams() {
    let f = runtime::docker_run(&RunOpts::new(&[
        "/bin/sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]));
    assert_eq!(
        (f.exit_code, f.stdout.as_str(), f.stderr.as_str()),
        (3, "out\n", "err\n")
    );
}

#[test]
fn cri_pod_cgroup_names_pod_and_container() {
    let version = runtime::cri_version();
    assert_eq!(
        (
            version.runtime_name.as_str(),
            version.runtime_api_version.as_str()
        ),
        ("containerd", "v1"),
        "{version:?}"
    );
    let (token, token_text) = marker_file("smoke-cri");
    let role = "arn:aws:iam::123456789012:role/sensor-test";
    let pod = runtime::cri_pod(
        &PodOpts::new(&[
            "/bin/sh",
            "-c",
            "cat /proc/self/cgroup; echo ---; curl --version | head -n1; \
             cat /var/run/secrets/kubernetes.io/serviceaccount/token; echo; \
             echo \"role=$AWS_ROLE_ARN\"",
        ])
        .env("AWS_ROLE_ARN", role)
        .service_account_token(&token),
    );
    pod.assert_success();
    let stdout = pod.stdout();
    let (cgroup, rest) = stdout.split_once("---\n").expect("script output");
    assert_cgroups_name("cri", cgroup, &pod.container_id);
    let expected = format!(
        "/kubepods/besteffort/pod{}/{}",
        pod.pod_uid, pod.container_id
    );
    assert!(
        cgroup.lines().all(|l| l.ends_with(&expected)),
        "cri: cgroup paths are not {expected}:\n{cgroup}"
    );
    assert!(rest.contains("curl 7."), "no curl in the image:\n{rest}");
    assert!(rest.contains(&token_text), "token not mounted:\n{rest}");
    assert!(
        rest.contains(&format!("role={role}")),
        "env not seen:\n{rest}"
    );
    assert_eq!(pod.container_id.len(), 64);
    assert_eq!(pod.namespace, "sensor-test");
    assert_eq!(pod.container_name, "app");
    eprintln!(
        "cri pod {}/{} uid {} sandbox {} container {}",
        pod.namespace, pod.pod_name, pod.pod_uid, pod.sandbox_id, pod.container_id
    );
}
