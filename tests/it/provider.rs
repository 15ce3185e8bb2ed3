//! A source that behaves like a commercial provider over its plan's rate limit (the test bed's
//! proxy answering HTTP 429 with `Retry-After` past a number of calls per second), end to end:
//! lightcl within `max_requests_per_second` stays under the limit by itself and converges; a
//! provider stricter than the bucket's burst is a known gap (the ignored test says what was seen).

use std::time::Duration;

use lightcl_testbed::ChainKind;
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::proxy::Proxy;

use crate::follow::{lightcl_bin, source_chain, tail, wait_labels};
use crate::ops::{api_url, get};

/// The provider's plan: calls per second.
const PLAN: usize = 40;

#[tokio::test]
async fn a_budgeted_source_stays_within_its_plan() {
    let (src, p) = source_chain(ChainKind::Optimism, 300, 300, 250).await;
    let h = |n| p.hash_at(n).expect("hash");
    let want = (h(300), h(300), h(250));

    // Within the plan: max_requests_per_second keeps lightcl under it, batches included.
    let el = src.follower("budgeted").await.expect("spawn");
    let proxy = Proxy::start(vec![src.http_url()]).await.expect("proxy");
    let cfg =
        FollowerConfig { sources: vec![proxy.url().to_string()], ..FollowerConfig::new(&src, &el) };
    let plain = format!("sources = [{:?}]", proxy.url());
    let toml = cfg.to_toml().replace(
        &plain,
        &format!("sources = [{{ url = {:?}, max_requests_per_second = {PLAN} }}]", proxy.url()),
    );
    assert_ne!(toml, cfg.to_toml(), "the source entry was rewritten");
    let lc = Lightcl::start_with_args(lightcl_bin(), &toml, &["run"]).expect("start");
    wait_labels(&el, want, Duration::from_secs(120), &lc).await;
    let (calls, most, refused) = proxy.call_figures();
    let span = proxy.call_span();
    eprintln!(
        "PROVIDER budgeted: {calls} calls in {span:.1} s, at most {most} in one second (plan \
         {PLAN}/s)"
    );
    // The bucket's burst (one second's worth) plus the plan's rate over the span. Counted where
    // the proxy reads them, so requests that queued behind slow answers can arrive bunched: the
    // busiest single second is printed, the average is what the budget bounds.
    let allowed = PLAN as f64 * (span + 1.0);
    assert!(calls as f64 <= allowed * 1.05, "{calls} calls in {span:.1} s against {PLAN}/s");
    assert_eq!(refused, 0);
    drop(lc);
}

/// Known gap (issue 25, for the next session): a provider that counts calls strictly per second
/// and refuses with 429 + `Retry-After: 1` beyond 40/s, with lightcl's budget set to the same
/// 40/s (its bucket's burst can pass the strict count). Seen here: the catch-up reached block
/// 144 of 300 and then crawled or stalled past 180 s; without a budget it never left block 0
/// (each 128-call batch refused whole). Needed: batches that shrink on a rate limit, and a rate
/// that adapts to the provider's answers.
#[tokio::test]
#[ignore = "known gap of issue 25: catch-up through a strict per-second provider stalls; see the doc comment"]
async fn a_strict_per_second_provider_is_waited_for_and_the_catch_up_converges() {
    let (src, p) = source_chain(ChainKind::Optimism, 300, 300, 250).await;
    let h = |n| p.hash_at(n).expect("hash");
    let want = (h(300), h(300), h(250));
    let el = src.follower("limited").await.expect("spawn");
    let proxy = Proxy::start(vec![src.http_url()]).await.expect("proxy");
    proxy.set_calls_per_second(Some(PLAN));
    let cfg =
        FollowerConfig { sources: vec![proxy.url().to_string()], ..FollowerConfig::new(&src, &el) };
    let plain = format!("sources = [{:?}]", proxy.url());
    let toml = cfg.to_toml().replace(
        &plain,
        &format!("sources = [{{ url = {:?}, max_requests_per_second = {PLAN} }}]", proxy.url()),
    );
    let lc = Lightcl::start_with_args(lightcl_bin(), &toml, &["run"]).expect("start");
    let api = api_url(&lc).await;
    wait_labels(&el, want, Duration::from_secs(180), &lc).await;
    let (calls, most, refused) = proxy.call_figures();
    eprintln!(
        "PROVIDER limited: {calls} calls let through (at most {most} in one second), {refused} \
         refused with 429"
    );
    assert!(refused > 0, "the catch-up never hit the plan's limit: the test proves nothing");
    let (_, m) = get(&format!("{api}/metrics")).await;
    // One source: the sum over its lines of `name` whose labels contain `with`.
    let sum = |name: &str, with: &str| {
        m.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(with))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert!(sum("lightcl_source_rate_limited_seconds_total", "") > 0.0, "{m}");
    let log = lc.log();
    assert!(log.contains("source is rate limiting lightcl"), "{}", tail(&log, 30));
    for never in ["source failing", "served a bad block", "lying"] {
        assert!(!log.contains(never), "{never:?} in the log:\n{}", tail(&log, 30));
    }
    let errors = |reason: &str| sum("lightcl_source_errors_total", &format!("reason=\"{reason}\""));
    assert!(errors("rate_limited") > 0.0, "{m}");
    for reason in ["http_429", "timeout", "bad_block", "inconsistent_chain"] {
        assert_eq!(errors(reason), 0.0, "{reason}: {m}");
    }
}
