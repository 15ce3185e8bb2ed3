//! Spawning real geth / op-geth / reth / op-reth processes on loopback for tests.
//!
//! Each node gets its own temporary folder (datadir, JWT secret, genesis, log file) and free
//! loopback ports. The process is killed when the `ElNode` is dropped, also while a test
//! panics; when the test process itself dies (even by SIGKILL) the kernel kills the EL too
//! (`PR_SET_PDEATHSIG`). On a panic the log tail is printed and the folder is kept.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::genesis::{ChainKind, chain_id_for, genesis_for};
use crate::jwt::JwtSecret;
use crate::rpc::RpcClient;
use crate::{BlockInfo, ElClient, Error, now_secs};

/// How long to wait for a started EL to answer on both of its RPC ports.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

static PORTS_IN_USE: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free loopback TCP port not handed out before in this process.
pub fn free_port() -> Result<u16, Error> {
    let mut guard = PORTS_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    for _ in 0..64 {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::Io)?;
        let port = listener.local_addr().map_err(Error::Io)?.port();
        if used.insert(port) {
            return Ok(port);
        }
    }
    Err(Error::Spawn("no free loopback port found after 64 tries".into()))
}

/// Options for [`ElNode::spawn_with`].
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Which EL program to run (it decides the chain kind).
    pub client: ElClient,
    /// Genesis JSON (`init`).
    pub genesis: Value,
    /// A name for logs and the kept folder.
    pub name: String,
    /// Extra command-line flags.
    pub extra_args: Vec<String>,
    /// Where the datadir lives, when not in the node's own folder (linked from there): another
    /// filesystem, such as a small tmpfs that fills up.
    pub datadir_in: Option<PathBuf>,
    /// Serves the debug namespace (`debug_getRawBlock`) over HTTP and WebSocket.
    pub debug_api: bool,
    /// Start on a copy of this datadir (a stopped EL's, on the same genesis) instead of `init`
    /// ([`crate::chains`]).
    pub seed_datadir: Option<PathBuf>,
    /// A subcommand of the EL's own run after `init`, with the same `--datadir` and `--chain`
    /// (op-reth's `proofs init` before `--proofs-history`); none when empty.
    pub after_init: Vec<String>,
}

impl NodeOptions {
    /// Options for the geth-family EL of `kind` with the default genesis.
    pub fn new(kind: ChainKind, name: impl Into<String>) -> Self {
        Self::of(ElClient::default_for(kind), name)
    }

    /// Options for `client` with the default genesis of its chain (timestamp a day in the past,
    /// so blocks built one second apart stay in the past for 86 400 blocks).
    pub fn of(client: ElClient, name: impl Into<String>) -> Self {
        Self {
            client,
            genesis: genesis_for(client.chain(), now_secs().saturating_sub(86_400)),
            name: name.into(),
            extra_args: Vec::new(),
            datadir_in: None,
            debug_api: true,
            seed_datadir: None,
            after_init: Vec::new(),
        }
    }
}

/// A running (or stopped) EL process with its folder and ports.
#[derive(Debug)]
pub struct ElNode {
    opts: NodeOptions,
    dir: Option<TempDir>,
    /// The datadir's own folder when it lives elsewhere (`TESTBED_RETH_DATADIR_IN`).
    data_elsewhere: Option<TempDir>,
    root: PathBuf,
    jwt: JwtSecret,
    http_port: u16,
    auth_port: u16,
    p2p_port: u16,
    ws_port: u16,
    child: Option<Child>,
    /// JSON-RPC client for the node's HTTP port.
    pub rpc: RpcClient,
    /// Engine API client (JWT) for the node's auth port.
    pub engine: RpcClient,
}

impl ElNode {
    /// Spawns `kind` with the default genesis and waits until it answers.
    pub async fn spawn(kind: ChainKind, name: &str) -> Result<Self, Error> {
        Self::spawn_with(NodeOptions::new(kind, name)).await
    }

    /// Spawns an EL: `init` with the genesis, start, wait for JSON-RPC and the Engine API.
    pub async fn spawn_with(opts: NodeOptions) -> Result<Self, Error> {
        crate::timing::test_started();
        let dir = tempfile::Builder::new()
            .prefix(&format!("lightcl-el-{}-", opts.name))
            .tempdir()
            .map_err(Error::Io)?;
        let root = dir.path().to_path_buf();
        let jwt = JwtSecret::random();
        fs::write(root.join("jwt.hex"), jwt.to_hex()).map_err(Error::Io)?;
        let genesis = serde_json::to_vec_pretty(&opts.genesis)
            .map_err(|e| Error::Spawn(format!("genesis does not serialise: {e}")))?;
        fs::write(root.join("genesis.json"), genesis).map_err(Error::Io)?;
        let (http_port, auth_port, p2p_port) = (free_port()?, free_port()?, free_port()?);
        let ws_port = free_port()?;
        let rpc = RpcClient::new(format!("http://127.0.0.1:{http_port}"), None);
        let engine = RpcClient::new(format!("http://127.0.0.1:{auth_port}"), Some(jwt));
        let mut node = Self {
            opts,
            dir: Some(dir),
            data_elsewhere: None,
            root,
            jwt,
            http_port,
            auth_port,
            p2p_port,
            ws_port,
            child: None,
            rpc,
            engine,
        };
        node.place_datadir()?;
        match node.opts.seed_datadir.clone() {
            Some(seed) => crate::chains::copy_dir(&seed, &node.datadir())?,
            None => node.init()?,
        }
        node.start().await?;
        Ok(node)
    }

    /// Spawns `client` with the default genesis of its chain and waits until it answers.
    pub async fn spawn_client(client: ElClient, name: &str) -> Result<Self, Error> {
        Self::spawn_with(NodeOptions::of(client, name)).await
    }

    /// Spawns another EL of the same program on the same genesis (a fresh peer, follower or
    /// rival).
    pub async fn sibling(&self, name: &str) -> Result<Self, Error> {
        self.sibling_as(self.opts.client, name).await
    }

    /// Spawns the end-to-end tests' follower EL of this node's chain on its genesis
    /// ([`ElClient::follower_for`]: geth, or op-reth 2.x).
    pub async fn follower(&self, name: &str) -> Result<Self, Error> {
        self.sibling_as(ElClient::follower_for(self.opts.client.chain()), name).await
    }

    /// Spawns `client` on this node's genesis (same chain, possibly another program: a reth
    /// follower of a geth source).
    pub async fn sibling_as(&self, client: ElClient, name: &str) -> Result<Self, Error> {
        let opts =
            NodeOptions { genesis: self.opts.genesis.clone(), ..NodeOptions::of(client, name) };
        Self::spawn_with(opts).await
    }

    fn init(&self) -> Result<(), Error> {
        self.run_once(&["init".to_string()])?;
        if !self.opts.after_init.is_empty() {
            self.run_once(&self.opts.after_init)?;
        }
        Ok(())
    }

    /// Runs the EL's subcommand `args` on this node's datadir and genesis, to the end.
    fn run_once(&self, args: &[String]) -> Result<(), Error> {
        let bin = self.opts.client.binary()?;
        let log = self.open_log()?;
        let mut cmd = Command::new(&bin);
        cmd.args(args).arg("--datadir").arg(self.datadir());
        if self.opts.client.is_reth() {
            cmd.arg("--chain");
        }
        let status = cmd
            .arg(self.root.join("genesis.json"))
            .stdout(log.try_clone().map_err(Error::Io)?)
            .stderr(log)
            .status()
            .map_err(Error::Io)?;
        if !status.success() {
            return Err(Error::Spawn(format!(
                "{} {} failed ({status}); log tail:\n{}",
                self.opts.client,
                args.join(" "),
                self.log_tail(30)
            )));
        }
        Ok(())
    }

    fn open_log(&self) -> Result<File, Error> {
        OpenOptions::new().create(true).append(true).open(self.log_path()).map_err(Error::Io)
    }

    fn args(&self) -> Vec<String> {
        let datadir = self.datadir().to_string_lossy().into_owned();
        let (before, after): (Vec<String>, &[&str]) = if self.opts.client.is_reth() {
            // The chain comes from the genesis file; no discovery, no log files of their own
            // (stdout goes to el.log).
            let genesis = self.root.join("genesis.json").to_string_lossy().into_owned();
            (
                vec!["node".into(), "--chain".into(), genesis, "--datadir".into(), datadir],
                &["--disable-discovery", "--log.file.max-files", "0", "--color", "never"],
            )
        } else {
            (
                vec![
                    "--datadir".into(),
                    datadir,
                    "--networkid".into(),
                    self.chain_id().to_string(),
                    "--syncmode".into(),
                    "full".into(),
                ],
                &["--nodiscover", "--maxpeers", "10", "--verbosity", "3"],
            )
        };
        let (http, ws, auth, p2p) = (
            self.http_port.to_string(),
            self.ws_port.to_string(),
            self.auth_port.to_string(),
            self.p2p_port.to_string(),
        );
        let jwt = self.jwt_path().to_string_lossy().into_owned();
        let (http_api, ws_api) = if self.opts.debug_api {
            ("eth,net,web3,debug,admin,txpool", "eth,net,web3,debug")
        } else {
            ("eth,net,web3,admin,txpool", "eth,net,web3")
        };
        // The same names on geth and reth.
        let common = [
            "--http",
            "--http.addr",
            "127.0.0.1",
            "--http.port",
            &http,
            "--http.api",
            http_api,
            "--ws",
            "--ws.addr",
            "127.0.0.1",
            "--ws.port",
            &ws,
            "--ws.api",
            ws_api,
            "--authrpc.addr",
            "127.0.0.1",
            "--authrpc.port",
            &auth,
            "--authrpc.jwtsecret",
            &jwt,
            "--port",
            &p2p,
            "--nat",
            "none",
            "--ipcdisable",
        ];
        let mut a = before;
        a.extend(common.iter().chain(after).map(|s| s.to_string()));
        a.extend(self.opts.extra_args.iter().cloned());
        a
    }

    /// Starts the process on the existing datadir and waits until both RPC ports answer.
    pub async fn start(&mut self) -> Result<(), Error> {
        if self.child.is_some() {
            return Ok(());
        }
        let bin = self.opts.client.binary()?;
        let log = self.open_log()?;
        let mut cmd = Command::new(&bin);
        cmd.args(self.args())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(Error::Io)?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child when
        // the thread that spawned it exits, so no EL outlives a crashed or killed test.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            Error::Spawn(format!("cannot start {} ({}): {e}", self.opts.client, bin.display()))
        })?;
        note_pid(child.id());
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(Error::Spawn(format!(
                    "{} '{}' exited during start-up ({status}); log tail:\n{}",
                    self.opts.client,
                    self.opts.name,
                    self.log_tail(40)
                )));
            }
            let http_ok = self.rpc.call_raw("eth_chainId", json!([])).await.is_ok();
            let auth_ok = http_ok
                && self.engine.call_raw("engine_exchangeCapabilities", json!([[]])).await.is_ok();
            if auth_ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "{} '{}' did not answer on JSON-RPC and the Engine API within {:?}; log tail:\n{}",
                    self.opts.client,
                    self.opts.name,
                    READY_TIMEOUT,
                    self.log_tail(40)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the process gracefully (SIGTERM, then SIGKILL after a timeout) and waits for it.
    pub async fn stop(&mut self) -> Result<(), Error> {
        self.stop_clean().await.map(|_| ())
    }

    /// [`ElNode::stop`], saying whether the process exited by itself after SIGTERM (`false`:
    /// it had to be killed, and may have lost what it had not written).
    pub async fn stop_clean(&mut self) -> Result<bool, Error> {
        let Some(mut child) = self.child.take() else { return Ok(true) };
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(true),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                _ => {
                    let _ = child.kill();
                    child.wait().map_err(Error::Io)?;
                    return Ok(false);
                }
            }
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops gracefully and starts again on the same datadir and ports.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.stop().await?;
        self.start().await
    }

    /// If the process has exited by itself (a crash, not a stop or kill of ours), forgets it and
    /// returns how it ended; `None` while it runs or when it was never started.
    pub fn reap(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Resync from scratch, as an operator does with damaged storage: kill the process, delete
    /// the datadir, initialise it again from the genesis, start (same ports and JWT).
    pub async fn wipe(&mut self) -> Result<(), Error> {
        self.kill();
        match &self.data_elsewhere {
            // Keep the link: empty the folder it points to.
            Some(dir) => {
                for entry in fs::read_dir(dir.path()).map_err(Error::Io)? {
                    let path = entry.map_err(Error::Io)?.path();
                    if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) }
                        .map_err(Error::Io)?;
                }
            }
            None => fs::remove_dir_all(self.datadir()).map_err(Error::Io)?,
        }
        self.init()?;
        self.start().await
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Which chain this EL runs.
    pub fn kind(&self) -> ChainKind {
        self.opts.client.chain()
    }

    /// Which EL program this is.
    pub fn client(&self) -> ElClient {
        self.opts.client
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.opts.name
    }

    /// The chain id from the genesis.
    pub fn chain_id(&self) -> u64 {
        self.opts
            .genesis
            .pointer("/config/chainId")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| chain_id_for(self.kind()))
    }

    /// The genesis this node was initialised with.
    pub fn genesis(&self) -> &Value {
        &self.opts.genesis
    }

    /// JSON-RPC URL (HTTP).
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// JSON-RPC URL (WebSocket).
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.ws_port)
    }

    /// Engine API URL (HTTP, JWT).
    pub fn auth_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.auth_port)
    }

    /// The Engine API secret.
    pub fn jwt_secret(&self) -> JwtSecret {
        self.jwt
    }

    /// Path of the JWT secret file (hex), as lightcl would be configured with it.
    pub fn jwt_path(&self) -> PathBuf {
        self.root.join("jwt.hex")
    }

    /// The EL's data folder.
    pub fn datadir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The EL's log file (stdout and stderr, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.root.join("el.log")
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.log_path(), lines)
    }

    /// Whether the log contains `needle` (to confirm what an EL said it did).
    pub fn log_contains(&self, needle: &str) -> bool {
        fs::read_to_string(self.log_path()).map(|s| s.contains(needle)).unwrap_or(false)
    }

    /// The node's enode URL.
    pub async fn enode(&self) -> Result<String, Error> {
        let info: Value = self.rpc.call("admin_nodeInfo", json!([])).await?;
        info.get("enode").and_then(Value::as_str).map(str::to_string).ok_or_else(|| Error::Decode {
            method: "admin_nodeInfo".into(),
            message: "no enode".into(),
        })
    }

    /// Peers this node with `other` (static peer) and waits until both see the connection.
    pub async fn add_peer(&self, other: &ElNode) -> Result<(), Error> {
        let enode = other.enode().await?;
        let _: bool = self.rpc.call("admin_addPeer", json!([enode])).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.peer_count().await? > 0 && other.peer_count().await? > 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::Timeout(format!(
            "{} and {} did not connect as peers",
            self.name(),
            other.name()
        )))
    }

    /// Number of connected peers.
    pub async fn peer_count(&self) -> Result<u64, Error> {
        let n: String = self.rpc.call("net_peerCount", json!([])).await?;
        crate::parse_hex_u64(&n)
    }

    /// The block at `tag` ("latest", "safe", "finalized" or a hex number), if the EL has one.
    pub async fn block(&self, tag: &str) -> Result<Option<BlockInfo>, Error> {
        let v: Value = self.rpc.call("eth_getBlockByNumber", json!([tag, false])).await.or_else(
            |e| match e {
                // geth answers an error, not null, for a label it has not set yet.
                Error::Rpc { .. } if matches!(tag, "safe" | "finalized") => Ok(Value::Null),
                e => Err(e),
            },
        )?;
        if v.is_null() { Ok(None) } else { BlockInfo::from_json(&v).map(Some) }
    }

    /// The block at height `number`, if any.
    pub async fn block_at(&self, number: u64) -> Result<Option<BlockInfo>, Error> {
        self.block(&format!("{number:#x}")).await
    }

    /// The block with `hash`, if the EL has it (canonical or not).
    pub async fn block_by_hash(&self, hash: B256) -> Result<Option<BlockInfo>, Error> {
        let v: Value = self.rpc.call("eth_getBlockByHash", json!([hash, false])).await?;
        if v.is_null() { Ok(None) } else { BlockInfo::from_json(&v).map(Some) }
    }

    /// The canonical head.
    pub async fn head(&self) -> Result<BlockInfo, Error> {
        self.block("latest").await?.ok_or_else(|| Error::Decode {
            method: "eth_getBlockByNumber".into(),
            message: "no latest block".into(),
        })
    }

    /// Storage slot `slot` of `address` at the head.
    pub async fn storage(
        &self,
        address: alloy_primitives::Address,
        slot: u64,
    ) -> Result<alloy_primitives::U256, Error> {
        let v: alloy_primitives::U256 = self
            .rpc
            .call("eth_getStorageAt", json!([address, format!("{slot:#x}"), "latest"]))
            .await?;
        Ok(v)
    }

    /// Puts the datadir in a folder under `datadir_in`, or, for reth and op-reth, under
    /// `TESTBED_RETH_DATADIR_IN` when set (to try a whole run on another filesystem by hand).
    fn place_datadir(&mut self) -> Result<(), Error> {
        let from_env = || {
            std::env::var_os("TESTBED_RETH_DATADIR_IN")
                .filter(|_| self.opts.client.is_reth())
                .map(PathBuf::from)
        };
        let Some(parent) = self.opts.datadir_in.clone().or_else(from_env) else { return Ok(()) };
        let dir = tempfile::Builder::new()
            .prefix(&format!("lightcl-data-{}-", self.opts.name))
            .tempdir_in(parent)
            .map_err(Error::Io)?;
        std::os::unix::fs::symlink(dir.path(), self.datadir()).map_err(Error::Io)?;
        self.data_elsewhere = Some(dir);
        Ok(())
    }

    /// Keeps the folder after the node is dropped (for debugging) and returns its path.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
            if let Some(data) = self.data_elsewhere.take() {
                let _ = data.keep();
            }
        }
        self.root.clone()
    }
}

impl Drop for ElNode {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let path = self.keep();
            eprintln!(
                "--- {} '{}' log tail (folder kept at {}) ---\n{}\n--- end of log tail ---",
                self.opts.client,
                self.opts.name,
                path.display(),
                self.log_tail(40)
            );
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Records `pid` as an EL this run started, in the folder `TESTBED_PID_DIR` names (set by
/// scripts/test.sh, which afterwards checks that none of these, and only these, outlived the
/// run). Best effort: a pid that cannot be recorded only escapes that check.
fn note_pid(pid: u32) {
    if let Some(dir) = std::env::var_os("TESTBED_PID_DIR") {
        let _ = fs::write(PathBuf::from(dir).join(pid.to_string()), b"");
    }
}

/// CPU seconds (user + system) a process has used so far, from /proc.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit(')').next()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3 (index 0 here); utime 14 and stime 15.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / if hz > 0.0 { hz } else { 100.0 })
}

/// A memory figure of process `pid` from /proc (`VmRSS`: now, `VmHWM`: its peak), in MiB.
pub fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Whether a process with `pid` exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn tail_file(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else { return String::from("(no log file)") };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    let mut buf = String::new();
    if f.seek(SeekFrom::Start(start)).is_ok() {
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        buf = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = buf.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
