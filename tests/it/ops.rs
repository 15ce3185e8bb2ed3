//! The operations API end to end: /metrics, /readyz, /status and `lightcl status` during
//! catch-up, in sync, after a recovery and during a halt; no secret in any output.

use std::time::{Duration, Instant};

use lightcl_testbed::ChainKind;
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::proxy::Proxy;

use crate::follow::{lightcl_bin, source_chain, tail, wait_labels};
use crate::recovery::diverged;

/// The API base URL, from the log line lightcl prints when it binds.
pub async fn api_url(lc: &Lightcl) -> String {
    match lc.api_url().await {
        Some(url) => url,
        None => panic!("no API address in the log:\n{}", tail(&lc.log(), 10)),
    }
}

pub async fn get(url: &str) -> (u16, String) {
    let resp = reqwest::get(url).await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// The value of a metric line `name` (with labels as written, e.g. `x{label="safe"}`).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_readiness_and_status_through_catch_up_and_sync() {
    let (src, p) = source_chain(ChainKind::Optimism, 250, 250, 240).await;
    let el = src.follower("follower").await.expect("spawn");
    let proxy = Proxy::start(vec![src.http_url()]).await.expect("proxy");
    proxy.set_delay(Duration::from_millis(15));
    // A source URL with a password the proxy ignores: it must never be printed.
    let secret_url = proxy.url().replace("http://", "http://ops:Hunter2Secret@");
    let jwt_hex = std::fs::read_to_string(el.jwt_path()).expect("jwt");
    let cfg = FollowerConfig {
        sources: vec![secret_url],
        extra: "prefetch = 4\nfetch_concurrency = 1".into(),
        ..FollowerConfig::new(&src, &el)
    };
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    let api = api_url(&lc).await;

    // During catch-up: not ready, the head gauge moves, payloads are counted.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first = None;
    while Instant::now() < deadline {
        let (_, m) = get(&format!("{api}/metrics")).await;
        if let Some(h) = metric(&m, "lightcl_local_head_block{replica=\"el\",label=\"latest\"}")
            .filter(|h| *h > 10.0)
        {
            first = Some(h);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = first.expect("local head gauge never moved");
    let (code, body) = get(&format!("{api}/readyz")).await;
    assert_eq!(
        code,
        503,
        "ready during catch-up: {body}; status {}",
        get(&format!("{api}/status")).await.1
    );
    let (_, status) = get(&format!("{api}/status")).await;
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(v["state"]["mode"], "catching_up", "{status}");
    assert_eq!(v["ready"], false);
    // The head gauge follows the forkchoice, which moves every 64 blocks during catch-up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let (_, m) = get(&format!("{api}/metrics")).await;
        if metric(&m, "lightcl_local_head_block{replica=\"el\",label=\"latest\"}").expect("gauge")
            > first
        {
            break m;
        }
        assert!(Instant::now() < deadline, "head gauge did not move");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(metric(&m, "lightcl_payloads_inserted_total{replica=\"el\"}").expect("counter") > 0.0);
    assert!(metric(&m, "lightcl_lag_blocks{replica=\"el\"}").expect("lag") > 4.0, "{m}");
    assert_eq!(get(&format!("{api}/healthz")).await.0, 200);

    // In sync: ready, lag 0, status ready.
    let want = (p.hash_at(250).expect("h"), p.hash_at(250).expect("h"), p.hash_at(240).expect("h"));
    wait_labels(&el, want, Duration::from_secs(120), &lc).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&format!("{api}/readyz")).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready in sync: {}",
            get(&format!("{api}/readyz")).await.1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The lone EL is the replica `el`: its own readiness check, and a clear 404 for a typo.
    assert_eq!(get(&format!("{api}/readyz/el")).await.0, 200);
    let (code, body) = get(&format!("{api}/readyz/nope")).await;
    assert!(code == 404 && body.contains("replicas are: el"), "{code} {body}");
    let (_, m) = get(&format!("{api}/metrics")).await;
    assert_eq!(metric(&m, "lightcl_replica_ready{replica=\"el\"}"), Some(1.0));
    assert_eq!(metric(&m, "lightcl_lag_blocks{replica=\"el\"}"), Some(0.0));
    assert_eq!(
        metric(&m, "lightcl_local_head_block{replica=\"el\",label=\"finalized\"}"),
        Some(240.0)
    );
    assert_eq!(metric(&m, "lightcl_agreed_head_block{label=\"safe\"}"), Some(250.0));
    assert_eq!(metric(&m, "lightcl_el_up{replica=\"el\"}"), Some(1.0));
    assert_eq!(metric(&m, "lightcl_halted{replica=\"el\"}"), Some(0.0));
    latency_histograms_are_served(&api, &m).await;

    // `lightcl status` for a person.
    let out = std::process::Command::new(lightcl_bin())
        .args(["status", "--api", &api])
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("mode: following") && text.contains("ready: yes") && text.contains("#250"),
        "{text}"
    );

    // No secret anywhere: logs, metrics, status.
    let (_, status) = get(&format!("{api}/status")).await;
    for (what, body) in [
        ("log", lc.log()),
        ("metrics", m),
        ("status", status),
        ("status command", text.to_string()),
    ] {
        assert!(!body.contains("Hunter2Secret"), "URL password in the {what}");
        assert!(!body.contains(jwt_hex.trim()), "JWT secret in the {what}");
    }
}

/// The sum of the series of `name` whose labels contain `with`.
fn sum_of(text: &str, name: &str, with: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(with))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Engine calls and source requests have latency histograms (for p99 panels), the scrape is
/// well-formed for Prometheus, and the API answers like an HTTP server should.
async fn latency_histograms_are_served(api: &str, m: &str) {
    let calls = sum_of(m, "lightcl_engine_request_duration_seconds_count", "engine_newPayload");
    let in_inf = sum_of(
        m,
        "lightcl_engine_request_duration_seconds_bucket",
        "le=\"+Inf\",replica=\"el\",method=\"engine_newPayload",
    );
    assert!(calls >= 240.0 && in_inf == calls, "newPayload histogram: {calls} {in_inf}\n{m}");
    let fast = sum_of(
        m,
        "lightcl_engine_request_duration_seconds_bucket",
        "le=\"1.024\",replica=\"el\",method=\"engine_newPayload",
    );
    assert!(fast > 0.0 && fast <= calls, "{m}");
    assert!(sum_of(m, "lightcl_source_request_duration_seconds_count", "source=") > 0.0, "{m}");

    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test.sh installs it)");
    use std::io::Write;
    check.stdin.take().expect("stdin").write_all(m.as_bytes()).expect("write");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Prometheus asks for OpenMetrics and gets it; the rest get the classic format.
    let resp = reqwest::Client::new()
        .get(format!("{api}/metrics"))
        .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
        .send()
        .await
        .expect("GET");
    let ctype = resp.headers()["content-type"].to_str().expect("ascii").to_string();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let om = resp.text().await.expect("body");
    assert!(
        om.ends_with("# EOF\n") && om.contains("# TYPE lightcl_payloads_inserted counter"),
        "{om}"
    );
    let resp = reqwest::get(format!("{api}/metrics")).await.expect("GET");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4")
    );
    let resp = reqwest::get(format!("{api}/status")).await.expect("GET");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let (code, body) = get(&format!("{api}/nope")).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("/metrics"), "{body}");
}

#[tokio::test]
async fn metrics_count_a_recovery_and_report_a_halt() {
    let d = diverged(crate::follow::op_follower(), 40, 3, 30).await;
    let lc = Lightcl::start(lightcl_bin(), &FollowerConfig::new(&d.src, &d.local)).expect("start");
    let api = api_url(&lc).await;
    assert!(lc.wait_log(" recovered", Duration::from_secs(60)).await, "{}", tail(&lc.log(), 20));
    let (_, m) = get(&format!("{api}/metrics")).await;
    assert_eq!(metric(&m, "lightcl_recoveries_total{replica=\"el\"}"), Some(1.0), "{m}");
    assert!(metric(&m, "lightcl_divergences_total{replica=\"el\"}").expect("divergences") >= 1.0);
    assert_eq!(metric(&m, "lightcl_last_recovery_depth_blocks{replica=\"el\"}"), Some(3.0));
    drop(lc);

    let d = diverged(crate::follow::op_follower(), 40, 10, 45).await;
    let cfg = FollowerConfig { json_logs: true, ..FollowerConfig::new(&d.src, &d.local) };
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    let api = api_url(&lc).await;
    assert!(lc.wait_log("HALTED", Duration::from_secs(60)).await, "{}", tail(&lc.log(), 20));
    let (_, m) = get(&format!("{api}/metrics")).await;
    assert_eq!(metric(&m, "lightcl_halted{replica=\"el\"}"), Some(1.0));
    let (code, body) = get(&format!("{api}/readyz")).await;
    assert_eq!(code, 503);
    assert!(body.contains("halted"), "{body}");
    let (_, status) = get(&format!("{api}/status")).await;
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(v["state"]["mode"], "halted");
    assert!(
        v["state"]["halted"]
            .as_str()
            .is_some_and(|h| h.contains("finalized divergence at height 45")),
        "{status}"
    );
    assert_eq!(get(&format!("{api}/healthz")).await.0, 200, "halted but alive");
    // JSON logs: every line is an object with a level, a target and fields.
    for line in lc.log().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["target"].is_string() && v["fields"].is_object(),
            "{line}"
        );
    }
}
