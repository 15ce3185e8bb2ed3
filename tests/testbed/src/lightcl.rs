//! Running the lightcl binary as a process under test: config writer, log capture, kill on drop.

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::Error;
use crate::genesis::ChainKind;
use crate::node::ElNode;

/// Settings for a lightcl config file.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// Chain kind.
    pub kind: ChainKind,
    /// Chain id.
    pub chain_id: u64,
    /// Source URLs, or inline TOML tables (`{ url = "...", max_requests_per_second = 20 }`).
    pub sources: Vec<String>,
    /// Engine API URL.
    pub engine_url: String,
    /// EL JSON-RPC URL.
    pub el_rpc_url: String,
    /// JWT secret file.
    pub jwt_file: PathBuf,
    /// "safe" or "latest".
    pub follow: &'static str,
    /// Poll interval, ms.
    pub poll_interval_ms: u64,
    /// Extra TOML lines at the top level.
    pub extra: String,
    /// Log as JSON lines instead of text.
    pub json_logs: bool,
    /// Ethereum chains: the deposit contract of the source's genesis.
    pub deposit_contract: Option<String>,
}

impl FollowerConfig {
    /// lightcl following `source` into `el`.
    pub fn new(source: &ElNode, el: &ElNode) -> Self {
        Self {
            kind: el.kind(),
            chain_id: el.chain_id(),
            sources: vec![source.http_url()],
            engine_url: el.auth_url(),
            el_rpc_url: el.http_url(),
            jwt_file: el.jwt_path(),
            follow: "safe",
            poll_interval_ms: 200,
            extra: String::new(),
            json_logs: false,
            deposit_contract: deposit_contract(source),
        }
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let chain = match self.kind {
            ChainKind::Optimism => "optimism",
            ChainKind::Ethereum => "ethereum",
        };
        // A source given as an inline table ("{ url = ..., ... }") is written as it is.
        let sources: Vec<String> = self
            .sources
            .iter()
            .map(|s| if s.starts_with('{') { s.clone() } else { format!("{s:?}") })
            .collect();
        let deposit = self
            .deposit_contract
            .as_ref()
            .map(|a| format!("deposit_contract = {a:?}\n"))
            .unwrap_or_default();
        format!(
            "chain = \"{chain}\"\nchain_id = {}\nsources = [{}]\nfollow = \"{}\"\n\
             poll_interval_ms = {}\nprogress_interval_ms = 1000\n{deposit}{}\n\n[engine]\nurl = {:?}\n\
             rpc_url = {:?}\njwt_secret_file = {:?}\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n\
             [log]\nlevel = \"info,lightcl=debug\"\nformat = \"{}\"\n",
            self.chain_id,
            sources.join(", "),
            self.follow,
            self.poll_interval_ms,
            self.extra,
            self.engine_url,
            self.el_rpc_url,
            self.jwt_file.display().to_string(),
            if self.json_logs { "json" } else { "text" },
        )
    }
}

/// The deposit contract an Ethereum node's genesis names (`None` for OP chains).
pub fn deposit_contract(node: &ElNode) -> Option<String> {
    (node.kind() == ChainKind::Ethereum).then(|| {
        node.genesis()["config"]["depositContractAddress"]
            .as_str()
            .unwrap_or("0x0000000000000000000000000000000000000000")
            .to_string()
    })
}

/// The config of a lightcl driving a fleet: `replicas` (name, EL) following `source`, with
/// `extra` top-level lines and `ready_max_lag_blocks`.
pub fn fleet_toml(
    source: &str,
    replicas: &[(&str, &ElNode)],
    extra: &str,
    ready_max_lag: u64,
) -> String {
    let Some((_, first)) = replicas.first() else { return String::new() };
    let chain = match first.kind() {
        ChainKind::Optimism => "optimism",
        ChainKind::Ethereum => "ethereum",
    };
    let deposit =
        deposit_contract(first).map(|a| format!("deposit_contract = {a:?}\n")).unwrap_or_default();
    let mut toml = format!(
        "chain = \"{chain}\"\nchain_id = {}\nsources = [{source:?}]\npoll_interval_ms = 200\n\
         progress_interval_ms = 1000\n{deposit}{extra}\n",
        first.chain_id()
    );
    for (name, el) in replicas {
        toml.push_str(&format!(
            "\n[[engines]]\nname = {name:?}\nurl = {:?}\nrpc_url = {:?}\njwt_secret_file = {:?}\n",
            el.auth_url(),
            el.http_url(),
            el.jwt_path().display().to_string()
        ));
    }
    toml.push_str(&format!(
        "\n[api]\nlisten = \"127.0.0.1:0\"\nready_max_lag_blocks = {ready_max_lag}\n\n[log]\n\
         level = \"info,lightcl=debug\"\nformat = \"text\"\n"
    ));
    toml
}

/// A lightcl process; killed on drop (and by the kernel if the test process dies).
#[derive(Debug)]
pub struct Lightcl {
    bin: PathBuf,
    dir: TempDir,
    args: Vec<String>,
    child: Option<Child>,
    exit: Option<ExitStatus>,
}

impl Lightcl {
    /// Writes `config` and starts `bin run --config FILE`.
    pub fn start(bin: &Path, config: &FollowerConfig) -> Result<Self, Error> {
        Self::start_with_args(bin, &config.to_toml(), &["run"])
    }

    /// Writes `toml` as the config and starts `bin ARGS... --config FILE`.
    pub fn start_with_args(bin: &Path, toml: &str, args: &[&str]) -> Result<Self, Error> {
        let dir = tempfile::Builder::new().prefix("lightcl-proc-").tempdir().map_err(Error::Io)?;
        // The state file lives with the process folder, so it survives restarts of lightcl.
        let toml = if toml.contains("state_dir") {
            toml.to_string()
        } else {
            format!("state_dir = {:?}\n{toml}", dir.path().join("state").display().to_string())
        };
        fs::write(dir.path().join("lightcl.toml"), toml).map_err(Error::Io)?;
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.push("--config".into());
        all.push(dir.path().join("lightcl.toml").display().to_string());
        let mut me = Self { bin: bin.to_path_buf(), dir, args: all, child: None, exit: None };
        me.spawn()?;
        Ok(me)
    }

    fn spawn(&mut self) -> Result<(), Error> {
        crate::timing::test_started();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(Error::Io)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(Error::Io)?)
            .stderr(log)
            .env("NO_COLOR", "1");
        // SAFETY: prctl only; see node.rs.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().map_err(|e| Error::Spawn(format!("lightcl: {e}")))?);
        self.exit = None;
        Ok(())
    }

    /// The folder of its state file.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts it again with the same config (after a stop or kill).
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill();
        self.spawn()
    }

    /// The captured stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("lightcl.log")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child
            && let Ok(pid) = libc::pid_t::try_from(c.id())
        {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            self.exit = c.wait().ok();
        }
    }

    /// Waits up to `timeout` for the process to exit; its status if it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.child = None;
                self.exit = Some(st);
                return Some(st);
            }
            if self.child.is_none() {
                return self.exit;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(&mut self) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let st = self.wait_exit(Duration::from_secs(30)).await;
        if st.is_none() {
            self.kill();
        }
        st.or(self.exit)
    }

    /// The operations API's base URL, from the log line saying where it serves (waits up to
    /// 30 s for it).
    pub async fn api_url(&self) -> Option<String> {
        if !self.wait_log("serving /metrics", Duration::from_secs(30)).await {
            return None;
        }
        let log = self.log();
        let line = log.lines().find(|l| l.contains("serving /metrics"))?;
        let addr = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => v["fields"]["addr"].as_str()?.to_string(),
            Err(_) => line.split("addr=").nth(1)?.split_whitespace().next()?.to_string(),
        };
        Some(format!("http://{addr}"))
    }

    /// What the sources cost this lightcl so far, by its own metrics.
    pub async fn source_cost(&self) -> Option<SourceCost> {
        let url = format!("{}/metrics", self.api_url().await?);
        let text = reqwest::get(url).await.ok()?.text().await.ok()?;
        let values = |name: &str| -> Vec<f64> {
            text.lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .collect()
        };
        Some(SourceCost {
            calls: values("lightcl_source_calls_total").iter().sum(),
            blocks: values("lightcl_source_blocks_total").iter().sum(),
            imported: values("lightcl_payloads_inserted_total").into_iter().fold(0.0, f64::max),
            reused: values("lightcl_held_blocks_reused_total").iter().sum(),
        })
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

/// What the sources cost a lightcl, by its metrics.
#[derive(Debug, Clone, Copy)]
pub struct SourceCost {
    /// JSON-RPC calls sent to the sources, each call of a batch counted.
    pub calls: f64,
    /// Verified blocks fetched from the sources.
    pub blocks: f64,
    /// Payloads the EL accepted (the most of any replica).
    pub imported: f64,
    /// Blocks taken from memory instead of fetched again.
    pub reused: f64,
}

impl std::fmt::Display for SourceCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per = |v: f64| v / self.imported.max(1.0);
        write!(
            f,
            "{:.0} source calls and {:.0} block fetches for {:.0} blocks imported ({:.2} calls \
             and {:.2} fetches per block; {:.0} blocks reused from memory)",
            self.calls,
            self.blocks,
            self.imported,
            per(self.calls),
            per(self.blocks),
            self.reused
        )
    }
}

impl Drop for Lightcl {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- lightcl log tail ---\n{}\n--- end ---",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
    }
}
