//! Shipped deployment files: the Grafana dashboard queries only metrics lightcl exports; the
//! compose file (raw and as each network's env file renders it) passes the Compose
//! Specification's schema and the Kubernetes manifests pass the Kubernetes API schemas, each
//! checked by a maintained validator from PyPI (check-jsonschema, kubernetes-validate) that
//! `scripts/test.sh` installs; a broken copy of each must fail, so the check can fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `lightcl_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("lightcl_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The series names a scrape can hold, from its `# TYPE` lines.
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
        let base = name.trim_end_matches("_total");
        match kind {
            // Prometheus stores a counter's samples under `_total` only.
            "counter" => {
                out.insert(format!("{base}_total"));
            }
            "histogram" => {
                for s in ["", "_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {
                out.insert(name.to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn every_dashboard_panel_queries_a_metric_lightcl_exports() {
    let text =
        std::fs::read_to_string(root().join("monitoring/grafana/lightcl.json")).expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    for e in &exprs {
        assert!(e.contains("$instance"), "every query follows the instance selector: {e}");
    }

    // A lightcl with nothing to reach still serves /metrics, describing every family.
    let dir = tempfile::tempdir().expect("tempdir");
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("a").port();
    std::fs::write(dir.path().join("jwt.hex"), "ab".repeat(32)).expect("jwt");
    let config = format!(
        "chain = \"ethereum\"\nchain_id = 1337\nsources = [\"http://127.0.0.1:1\"]\n\
         deposit_contract = \"0x0000000000000000000000000000000000006110\"\n\
         state_dir = \"{0}/state\"\n[engine]\nurl = \"http://127.0.0.1:1\"\n\
         jwt_secret_file = \"{0}/jwt.hex\"\nrpc_url = \"http://127.0.0.1:1\"\n\
         [api]\nlisten = \"127.0.0.1:{port}\"\n",
        dir.path().display()
    );
    std::fs::write(dir.path().join("c.toml"), config).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lightcl"))
        .args(["run", "--config"])
        .arg(dir.path().join("c.toml"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start lightcl");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut scrape = None;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(&url).await {
            scrape = r.text().await.ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let scrape = scrape.expect("lightcl served /metrics");
    let have = exported(&scrape);
    let mut queried = BTreeSet::new();
    for e in &exprs {
        queried.extend(metric_names(e));
    }
    let unknown: Vec<&String> = queried.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics lightcl does not export: {unknown:?}"
    );
    // What the dashboard is for: lag, labels, sources, latency, engine calls, recoveries,
    // halts, bootstrap, rate limiting.
    for needed in [
        "lightcl_lag_blocks",
        "lightcl_local_head_block",
        "lightcl_source_up",
        "lightcl_source_request_duration_seconds_bucket",
        "lightcl_engine_request_duration_seconds_bucket",
        "lightcl_recoveries_total",
        "lightcl_halted",
        "lightcl_el_sync_block",
        "lightcl_source_rate_limited_seconds_total",
    ] {
        assert!(queried.contains(needed), "no panel shows {needed}");
    }
}

/// A validator installed by scripts/test.sh (in its tools folder, or on PATH).
fn tool(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("TESTBED_PYTOOLS") {
        let p = Path::new(&dir).join(name);
        if p.exists() {
            return p;
        }
    }
    let local = root().join(".cache/pytools/bin").join(name);
    if local.exists() {
        return local;
    }
    match Command::new(name).arg("--help").output() {
        Ok(_) => PathBuf::from(name),
        Err(_) => panic!(
            "{name} is not installed; scripts/test.sh installs it (PyPI) into .cache/pytools"
        ),
    }
}

fn validate(tool: &Path, args: &[&str], file: &Path) -> (bool, String) {
    let o = Command::new(tool).args(args).arg(file).output().expect("validator runs");
    let text =
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.success(), text)
}

/// `${NAME}`, `${NAME:-default}` and `${NAME:?message}` as Compose reads them from `env`.
fn interpolate(text: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 2..];
        let end = tail.find('}').ok_or("an unclosed ${")?;
        let expr = &tail[..end];
        let (name, op) = match expr.find([':', '-', '?']) {
            Some(j) => (&expr[..j], &expr[j..]),
            None => (expr, ""),
        };
        let value = env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let value = match (value, op) {
            (Some(v), _) if !v.is_empty() => v,
            (_, op) if op.starts_with(":-") => op[2..].to_string(),
            (_, op) if op.starts_with(":?") => return Err(format!("{name}: {}", &op[2..])),
            _ => String::new(),
        };
        out.push_str(&value);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .expect("env file")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_compose_file_passes_the_compose_schema_for_every_network() {
    let check = tool("check-jsonschema");
    let args = ["--builtin-schema", "vendor.compose-spec"];
    let dir = root().join("deploy/compose");
    let compose = std::fs::read_to_string(dir.join("compose.yaml")).expect("compose.yaml");
    let (ok, text) = validate(&check, &args, &dir.join("compose.yaml"));
    assert!(ok, "compose.yaml: {text}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut networks = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/compose") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "env") {
            continue;
        }
        let mut env = env_file(&path);
        let network = env.iter().find(|(k, _)| k == "NETWORK").map(|(_, v)| v.clone());
        let network = network.unwrap_or_else(|| panic!("{} sets no NETWORK", path.display()));
        assert!(
            lightcl::config::network::find(&network).is_some(),
            "{}: `{network}` is not a lightcl network preset",
            path.display()
        );
        // The operator's provider URL, which the env files leave out on purpose.
        env.push(("SOURCE_URL".into(), "https://provider.example/v2/key".into()));
        let rendered = interpolate(&compose, &env)
            .unwrap_or_else(|e| panic!("{} leaves a required variable unset: {e}", path.display()));
        let out = tmp.path().join(format!("{network}.yaml"));
        std::fs::write(&out, rendered).expect("write");
        let (ok, text) = validate(&check, &args, &out);
        assert!(ok, "compose.yaml with {}: {text}", path.display());
        networks += 1;
    }
    assert!(networks >= 3, "{networks} env files");
    // The check can fail: a misspelt dependency condition is refused.
    let broken = tmp.path().join("broken.yaml");
    std::fs::write(&broken, compose.replace("service_started", "service_up")).expect("write");
    let (ok, text) = validate(&check, &args, &broken);
    assert!(!ok, "a broken compose file passed: {text}");
}

#[test]
fn the_kubernetes_manifests_pass_the_api_schemas() {
    let check = tool("kubernetes-validate");
    let dir = root().join("deploy/k8s");
    for file in ["follower.yaml", "fleet.yaml"] {
        let (ok, text) = validate(&check, &["--strict"], &dir.join(file));
        assert!(ok && !text.contains("ERROR"), "{file}: {text}");
    }
    // The check can fail: a field the API does not have is refused.
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(dir.join("follower.yaml")).expect("manifest");
    let broken = tmp.path().join("broken.yaml");
    std::fs::write(&broken, text.replace("readinessProbe:", "readynessProbe:")).expect("write");
    let (ok, out) = validate(&check, &["--strict"], &broken);
    assert!(!ok, "a broken manifest passed: {out}");

    // The fleet's lightcl.toml is a configuration lightcl loads.
    let fleet = std::fs::read_to_string(dir.join("fleet.yaml")).expect("fleet.yaml");
    let start = fleet.find("lightcl.toml: |\n").expect("the ConfigMap's lightcl.toml") + 16;
    let toml: String = fleet[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let jwt = tmp.path().join("jwt.hex");
    std::fs::write(&jwt, "ab".repeat(32)).expect("jwt");
    let toml = toml.replace("/jwt/jwt.hex", &jwt.display().to_string());
    let file = tmp.path().join("lightcl.toml");
    std::fs::write(&file, &toml).expect("write");
    let mut flags = figment::value::Dict::new();
    flags.insert("sources".into(), vec!["https://provider.example/v2/key".to_string()].into());
    let c = lightcl::Config::load(Some(&file), lightcl::config::FlagValues(flags))
        .unwrap_or_else(|e| panic!("the fleet's lightcl.toml loads: {e}\n{toml}"));
    assert_eq!((c.chain_id, c.engines.len()), (10, 3), "{toml}");
}
