//! Shipped files: the systemd unit verifies; the example config loads and documents every key.

use std::process::Command;

#[test]
fn systemd_unit_verifies() {
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = std::fs::read_to_string(format!("{root}/systemd/lightcl.service")).expect("unit");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lightcl.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/lightcl", env!("CARGO_BIN_EXE_lightcl")))
        .expect("write");
    let Ok(out) = Command::new("systemd-analyze").arg("verify").arg(&path).output() else {
        eprintln!("systemd-analyze is not installed here; unit not verified");
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn example_config_documents_every_key_and_loads() {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/config.example.toml")).expect("example");
    let dir = tempfile::tempdir().expect("tempdir");
    let jwt = dir.path().join("jwt.hex");
    std::fs::write(&jwt, "ab".repeat(32)).expect("jwt");
    let file = dir.path().join("c.toml");
    let text = text.replace("/etc/lightcl/jwt.hex", &jwt.display().to_string());
    std::fs::write(&file, &text).expect("write");
    let c = lightcl::Config::load(Some(&file), Default::default()).expect("example config loads");
    let defaults = lightcl::Config::default();
    let want = lightcl::Config {
        chain_id: c.chain_id,
        sources: c.sources.clone(),
        engine: lightcl::config::EngineConfig {
            jwt_secret_file: jwt.clone(),
            ..defaults.engine.clone()
        },
        ..defaults
    };
    assert_eq!(c, want, "every value in the example is the default (except the required ones)");
    let keys = serde_json::to_value(lightcl::Config::default()).expect("json");
    for (k, v) in keys.as_object().expect("object") {
        match v.as_object() {
            Some(inner) => {
                assert!(text.contains(&format!("[{k}]")), "table [{k}] undocumented");
                for ik in inner.keys() {
                    assert!(text.contains(&format!("\n{ik} =")), "key {k}.{ik} undocumented");
                }
            }
            None => assert!(text.contains(&format!("\n{k} =")), "key {k} undocumented"),
        }
    }
}

#[test]
fn check_command_reports_bad_config_with_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_lightcl"))
        .args(["check", "--chain-id", "0", "--source", "http://127.0.0.1:1"])
        .output()
        .expect("run lightcl");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`chain_id` (from command-line flag)"), "{stderr}");
}

/// GitHub-style anchor of a Markdown heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
        .collect::<String>()
        .replace(' ', "-")
}

#[test]
fn every_alert_has_a_runbook_section() {
    let root = env!("CARGO_MANIFEST_DIR");
    let rules = std::fs::read_to_string(format!("{root}/monitoring/alerts.yml")).expect("rules");
    let runbook = std::fs::read_to_string(format!("{root}/docs/runbook.md")).expect("runbook");
    let anchors: Vec<String> =
        runbook.lines().filter_map(|l| l.strip_prefix("## ")).map(slug).collect();
    let alerts = rules.matches("- alert:").count();
    let links: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook: \"docs/runbook.md#"))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert!(alerts >= 6, "expected at least 6 alerts, found {alerts}");
    assert_eq!(links.len(), alerts, "every alert needs a runbook annotation");
    for link in links {
        assert!(
            anchors.iter().any(|a| a == link),
            "runbook has no section #{link} (has {anchors:?})"
        );
    }
}

#[test]
fn alert_rules_pass_promtool() {
    let root = env!("CARGO_MANIFEST_DIR");
    let Ok(out) = Command::new("promtool")
        .args(["check", "rules", &format!("{root}/monitoring/alerts.yml")])
        .output()
    else {
        panic!(
            "promtool is not installed; scripts/test.sh installs it (Debian package prometheus)"
        );
    };
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check rules failed:\n{text}");
    let rules = std::fs::read_to_string(format!("{root}/monitoring/alerts.yml")).expect("rules");
    let alerts = rules.matches("- alert:").count();
    assert!(text.contains(&format!("{alerts} rules found")), "{text}");
}

/// A second lightcl on a state folder another process holds stops at start with exit code 3,
/// naming the holder, before it touches the EL (none is running here).
#[test]
fn a_second_process_on_one_state_dir_exits_with_code_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jwt = dir.path().join("jwt.hex");
    std::fs::write(&jwt, "ab".repeat(32)).expect("jwt");
    let state = dir.path().join("state");
    let held = lightcl::state::StateLock::acquire(&state).expect("the test holds the folder");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "chain = \"ethereum\"\nchain_id = 1337\nsources = [\"http://127.0.0.1:1\"]\n\
             deposit_contract = \"0x0000000000000000000000000000000000006110\"\n\
             state_dir = \"{}\"\n[engine]\nurl = \"http://127.0.0.1:1\"\n\
             jwt_secret_file = \"{}\"\nrpc_url = \"http://127.0.0.1:1\"\n",
            state.display(),
            jwt.display()
        ),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_lightcl"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run lightcl");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("in use by another lightcl process"), "{text}");
    assert!(text.contains(&format!("pid {}", std::process::id())), "names the holder: {text}");
    drop(held);
}
