//! Who acted, on the host: the human behind a process (audit login uid and
//! session), its ancestry, and one API key used by two humans.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::Command;

use sensor_tests::{
    FakeApi, WAIT, action, assert_schema_valid, fake_key, pid_of, run_client, shared_sensor,
};
use serde_json::Value;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"who am i"}]}"#;

/// curl run by a shell that first sets its audit login uid (what pam_loginuid
/// does at an ssh or console login; children inherit it), then execs curl.
fn curl_as_login(api: &FakeApi, key: &str, loginuid: u32) -> Command {
    let url = format!("{}/chat/completions", api.openai_base());
    let script = format!(
        "echo {loginuid} > /proc/self/loginuid && exec curl -sS --fail-with-body --cacert \"$CA\" \
         -H \"Authorization: Bearer $KEY\" -H 'content-type: application/json' -d \"$BODY\" \"$URL\""
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script])
        .env("CA", &api.ca)
        .env("KEY", key)
        .env("BODY", CHAT)
        .env("URL", url);
    cmd
}

fn one_model_call(pid: u32) -> Value {
    let sensor = shared_sensor();
    let mine = |e: &Value| action(e) == "model_call" && pid_of(e) == Some(u64::from(pid));
    sensor
        .wait_for(WAIT, mine)
        .unwrap_or_else(|| panic!("no model_call for pid {pid}:\n{}", sensor.stderr_text()))
}

#[test]
fn login_uid_session_user_and_ancestry() {
    shared_sensor();
    let api = FakeApi::start("identity-login");
    let key = fake_key("login");
    let (pid, _) = run_client(curl_as_login(&api, &key, 4242));
    let e = one_model_call(pid);
    assert_eq!(e["process"]["loginuid"], 4242, "{e:#}");
    assert!(
        e["process"]["sessionid"].as_u64().is_some(),
        "setting a login uid starts an audit session: {e:#}"
    );
    assert_eq!(e["user"]["id"], "4242");
    assert_eq!(e["process"]["user"]["name"], "root");
    assert_eq!(e["process"]["user"]["id"], 0);
    assert!(e["process"]["start"].as_str().is_some(), "{e:#}");
    assert!(
        e["process"]["entity_id"]
            .as_str()
            .is_some_and(|id| id.starts_with(&format!("{pid}-"))),
        "{e:#}"
    );
    // The chain of parents: this test process first (sh exec'd curl, so the
    // pid's parent is the test binary), up to init.
    let ancestry = e["process"]["ancestry"].as_array().expect("ancestry");
    assert_eq!(ancestry[0]["pid"], std::process::id(), "{ancestry:#?}");
    assert!(
        ancestry[0]["executable"].as_str().is_some() && ancestry[0]["start"].as_str().is_some()
    );
    assert_eq!(
        ancestry.last().unwrap()["pid"],
        1,
        "up to init: {ancestry:#?}"
    );
    // Not in a container: no container fields.
    assert!(e.get("container").is_none(), "{e:#}");
    assert_schema_valid(std::slice::from_ref(&e));
    shared_sensor().assert_never_printed(&key);
}

#[test]
fn one_key_two_humans_is_a_shared_credential() {
    let sensor = shared_sensor();
    let api = FakeApi::start("identity-shared-host");
    let key = fake_key("sharedhost");
    let (first, _) = run_client(curl_as_login(&api, &key, 5001));
    let e1 = one_model_call(first);
    assert!(
        e1["credential"].get("shared").is_none(),
        "one actor so far: {e1:#}"
    );
    let fp = e1["credential"]["fingerprint"].as_str().unwrap().to_owned();
    let (second, _) = run_client(curl_as_login(&api, &key, 5002));
    let e2 = one_model_call(second);
    assert_eq!(e2["credential"]["shared"], true, "{e2:#}");
    assert_eq!(e2["credential"]["actor_count"], 2);
    let shared = sensor
        .wait_for(WAIT, |e| {
            action(e) == "credential_shared" && e["credential"]["fingerprint"] == fp.as_str()
        })
        .expect("credential_shared event");
    let actors = shared["credential"]["actors"].as_array().expect("actors");
    let logins: Vec<_> = actors
        .iter()
        .map(|a| a["process"]["loginuid"].clone())
        .collect();
    assert_eq!(logins, [5001, 5002], "{shared:#}");
    assert_eq!(actors[0]["last_event_id"], e1["event"]["id"]);
    assert_eq!(shared["credential"]["kind"], "openai_api_key");
    assert_schema_valid(std::slice::from_ref(&shared));
    sensor.assert_never_printed(&key);
}
