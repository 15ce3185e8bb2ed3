//! The container image: the shipped Dockerfile built and run with podman, where podman can run
//! containers here; elsewhere the test says why it skips (where `TESTBED_REQUIRE_PODMAN` is set,
//! as `scripts/test.sh` sets it once podman is installed, the image must build; running it
//! still depends on what the machine's kernel and cgroups allow).
//!
//! No image registry is reachable here, so two parts come from this machine: the runtime
//! stage's base image is assembled from the binary's own shared libraries (as `ldd` names them)
//! and imported with `podman import`, and the build stage is replaced by the binary cargo built
//! (`--build-context build=DIR`, as the Dockerfile documents). The rest is the Dockerfile as
//! shipped: its user, volume, port, health check and entrypoint are checked, and the image runs
//! `lightcl --version` and `lightcl check` against a real EL and source.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lightcl_testbed::ChainKind;
use lightcl_testbed::lightcl::FollowerConfig;

use crate::follow::source_chain;

const IMAGE: &str = "localhost/lightcl-test:latest";
const BASE: &str = "localhost/lightcl-test-base:latest";

fn podman(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().expect("podman runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Skips (or fails, when podman is required here) with `why`.
fn skip(why: &str) {
    assert!(std::env::var_os("TESTBED_REQUIRE_PODMAN").is_none(), "podman is required: {why}");
    eprintln!("SKIPPED: the container image is not built here: {why}");
}

/// A base image of the binary's shared libraries (what `debian:bookworm-slim` gives it).
fn base_image(bin: &Path, dir: &Path) -> Result<(), String> {
    let ldd = Command::new("ldd").arg(bin).output().map_err(|e| format!("ldd: {e}"))?;
    let root = dir.join("rootfs");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let Some(lib) = line.split_whitespace().find(|w| w.starts_with('/')) else { continue };
        let to = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().expect("parent")).map_err(|e| e.to_string())?;
        std::fs::copy(lib, &to).map_err(|e| format!("{lib}: {e}"))?;
    }
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err("tar failed".into());
    }
    let o = podman(&["import", &tar.display().to_string(), BASE]);
    if o.status.success() { Ok(()) } else { Err(format!("podman import: {}", text(&o))) }
}

/// The flags that let a container run on this machine: none, or (where the kernel refuses
/// raising limits and crun's cgroup handling) runc with limits below the host's.
fn run_flags() -> Option<Vec<&'static str>> {
    let tries: [Vec<&str>; 2] = [
        vec![],
        vec!["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"],
    ];
    tries.into_iter().find(|flags| {
        let (global, run): (Vec<&str>, Vec<&str>) = split(flags);
        let mut args = global;
        args.extend(["run", "--rm", "--network", "none"]);
        args.extend(run);
        args.extend([IMAGE, "--version"]);
        let o = podman(&args);
        o.status.success() && text(&o).contains("lightcl")
    })
}

/// `--runtime X` goes before `run`; the rest after it.
fn split<'a>(flags: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    match flags {
        ["--runtime", r, rest @ ..] => (vec!["--runtime", r], rest.to_vec()),
        rest => (vec![], rest.to_vec()),
    }
}

fn podman_run(flags: &[&str], extra: &[&str], args: &[&str]) -> Output {
    let (global, run) = split(flags);
    let mut all = global;
    // The image's health check needs systemd timers on the host; not what is tested here.
    all.extend(["run", "--rm", "--no-healthcheck"]);
    all.extend(run);
    all.extend(extra);
    all.push(IMAGE);
    all.extend(args);
    podman(&all)
}

#[tokio::test]
async fn the_image_builds_and_runs_version_and_check() {
    if let Err(e) = Command::new("podman").arg("--version").output() {
        return skip(&format!("podman is not installed ({e}); scripts/test.sh installs it"));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_lightcl"));
    let dir = tempfile::tempdir().expect("tempdir");
    if let Err(e) = base_image(&bin, dir.path()) {
        return skip(&format!("no base image could be assembled: {e}"));
    }
    // The build stage's output, from the binary cargo built.
    let ctx = dir.path().join("build");
    std::fs::create_dir_all(ctx.join("out/state")).expect("mkdir");
    std::fs::copy(&bin, ctx.join("out/lightcl")).expect("copy binary");
    let empty = dir.path().join("context");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let o = podman(&[
        "build",
        "--format",
        "docker",
        "--target",
        "runtime",
        "--build-arg",
        &format!("RUNTIME_IMAGE={BASE}"),
        "--build-context",
        &format!("build={}", ctx.display()),
        "-t",
        IMAGE,
        "-f",
        &root.join("Dockerfile").display().to_string(),
        &empty.display().to_string(),
    ]);
    assert!(o.status.success(), "the Dockerfile builds: {}", text(&o));
    let o = podman(&["image", "inspect", IMAGE]);
    let inspect = text(&o);
    assert!(o.status.success(), "{inspect}");
    let config: serde_json::Value = serde_json::from_str(&inspect).expect("inspect JSON");
    let c = &config[0]["Config"];
    assert_eq!(c["User"], "10001:10001", "runs as a non-root user: {inspect}");
    assert!(c["Volumes"].get("/var/lib/lightcl").is_some(), "the state volume: {inspect}");
    assert!(c["ExposedPorts"].get("9301/tcp").is_some(), "the ops port: {inspect}");
    assert_eq!(c["Entrypoint"][0], "/usr/local/bin/lightcl", "{inspect}");
    assert!(config[0]["Healthcheck"]["Test"].to_string().contains("healthz"), "{inspect}");

    let Some(flags) = run_flags() else {
        let o = podman(&["run", "--rm", "--network", "none", IMAGE, "--version"]);
        let _ = podman(&["rmi", "-f", IMAGE, BASE]);
        // Building is required where podman is installed; running depends on the kernel and
        // cgroup setup of the machine, so it may skip (saying why) even then.
        eprintln!("SKIPPED: podman cannot run a container here: {}", text(&o));
        return;
    };
    eprintln!("podman runs containers here with {flags:?}");
    let o = podman_run(&flags, &["--network", "none"], &["--version"]);
    assert!(text(&o).contains(&format!("lightcl {}", env!("CARGO_PKG_VERSION"))), "{}", text(&o));
    // The health check's command: no lightcl answers here, so it reports unhealthy (exit 1).
    let o =
        podman_run(&flags, &["--network", "none"], &["healthz", "--api", "http://127.0.0.1:9301"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("unhealthy: cannot read http://127.0.0.1:9301/healthz"),
        "{}",
        text(&o)
    );

    // `lightcl check` inside the image against a real source and EL (host network).
    let (src, _p) = source_chain(ChainKind::Ethereum, 3, 2, 1).await;
    let el = src.follower("follower").await.expect("follower");
    let cfg = FollowerConfig::new(&src, &el);
    let mounted = dir.path().join("cfg");
    std::fs::create_dir_all(&mounted).expect("mkdir");
    std::fs::copy(&cfg.jwt_file, mounted.join("jwt.hex")).expect("jwt");
    let cfg = FollowerConfig { jwt_file: "/cfg/jwt.hex".into(), ..cfg };
    std::fs::write(mounted.join("lightcl.toml"), cfg.to_toml()).expect("config");
    use std::os::unix::fs::PermissionsExt;
    for (p, mode) in [
        (mounted.clone(), 0o755),
        (mounted.join("jwt.hex"), 0o644),
        (mounted.join("lightcl.toml"), 0o644),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let volume = format!("{}:/cfg:ro", mounted.display());
    let o = podman_run(
        &flags,
        &["--network", "host", "-v", &volume],
        &["check", "--config", "/cfg/lightcl.toml"],
    );
    let out = text(&o);
    let _ = podman(&["rmi", "-f", IMAGE, BASE]);
    assert!(
        o.status.success() && out.contains("check passed"),
        "lightcl check in the image:\n{out}"
    );
    assert!(out.contains("EL Engine API: ok, JWT accepted"), "{out}");
}
