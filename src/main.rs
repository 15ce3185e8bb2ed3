//! lightcl command line: parse arguments, set up logging and signals, run, map errors to exit
//! codes.
//!
//! Exit codes: 0 stopped by a signal; 1 runtime error; 2 bad configuration; 3 a start-up check
//! failed (chain id, JWT); 4 halted on a finalized divergence (nothing more was sent to the EL);
//! 5 halted on an output root that differs from one L1 settled (`[l1] verify = "enforce"`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use figment::value::{Dict, Value};
use lightcl::config::{Config, FlagValues, LogFormat};
use lightcl::engine::EngineClient;
use lightcl::engine::check;
use lightcl::source::{RpcSource, Source};
use lightcl::{RunError, run};

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_STARTUP: u8 = 3;
const EXIT_HALTED: u8 = 4;
/// Halted: the EL's output root differs from one L1 settled.
const EXIT_OUTPUT_MISMATCH: u8 = 5;

#[derive(Parser, Debug)]
#[command(
    name = "lightcl",
    version,
    about = "Keeps a local execution client on the chain trusted sources call canonical"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Follow the sources (the default).
    Run(Opts),
    /// Validate the configuration, connect to every source and the EL, check chain ids and the
    /// JWT, print a summary, and exit.
    Check(Opts),
    /// List the named networks `--network` takes (chain id, kind, genesis block).
    Networks,
    /// Probe a running lightcl's /healthz (exit 0 when it answers 200): for container health
    /// checks where no HTTP tool is installed.
    Healthz {
        /// The API base URL (default: from api.listen in the configuration).
        #[arg(long)]
        api: Option<String>,
        #[command(flatten)]
        opts: Opts,
    },
    /// Serve one fleet replica's readiness on a port of its own (a sidecar beside that replica's
    /// EL): /readyz answers what the driving lightcl says at /readyz/<replica>.
    Probe {
        /// The driving lightcl's API base URL.
        #[arg(long)]
        api: String,
        /// The replica's name (its `[[engines]]` name).
        #[arg(long)]
        replica: String,
        /// Where to serve.
        #[arg(long, default_value = "0.0.0.0:9302")]
        listen: String,
    },
    /// Print a running lightcl's status (from its /status endpoint) for a person.
    Status {
        /// The API base URL (default: from api.listen in the configuration).
        #[arg(long)]
        api: Option<String>,
        #[command(flatten)]
        opts: Opts,
    },
}

#[derive(Args, Debug, Default, Clone)]
struct Opts {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "LIGHTCL_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// A named network (`lightcl networks` lists them): sets the chain kind, chain id and
    /// genesis block.
    #[arg(long, global = true)]
    network: Option<String>,
    /// Chain kind: optimism or ethereum.
    #[arg(long, global = true)]
    chain: Option<String>,
    /// Expected chain id.
    #[arg(long, global = true)]
    chain_id: Option<u64>,
    /// Source RPC URL (repeat for several; replaces the configured list).
    #[arg(long = "source", global = true)]
    sources: Vec<String>,
    /// What the local head follows: safe or latest.
    #[arg(long, global = true)]
    follow: Option<String>,
    /// How a far-behind EL is brought up: auto, el-sync or replay.
    #[arg(long, global = true)]
    bootstrap: Option<String>,
    /// How blocks are fetched: auto (raw where a source serves it), raw or json.
    #[arg(long, global = true)]
    fetch: Option<String>,
    /// Engine API URL.
    #[arg(long, global = true)]
    engine_url: Option<String>,
    /// JWT secret file shared with the EL.
    #[arg(long, global = true)]
    jwt_secret: Option<PathBuf>,
    /// The EL's JSON-RPC URL.
    #[arg(long, global = true)]
    el_rpc: Option<String>,
    /// Poll interval of the sources, ms.
    #[arg(long, global = true)]
    poll_interval_ms: Option<u64>,
    /// Blocks fetched ahead of the EL while catching up.
    #[arg(long, global = true)]
    prefetch: Option<usize>,
    /// Log format: text or json.
    #[arg(long, global = true)]
    log_format: Option<String>,
    /// Log level or filter.
    #[arg(long, global = true)]
    log_level: Option<String>,
}

impl Opts {
    /// The flags that were given, as configuration values.
    fn flag_values(&self) -> FlagValues {
        let mut top = Dict::new();
        let mut engine = Dict::new();
        let mut log = Dict::new();
        let s = |v: &str| Value::from(v.to_string());
        if let Some(n) = &self.network {
            top.insert("network".into(), s(n));
        }
        if let Some(c) = &self.chain {
            top.insert("chain".into(), s(c));
        }
        if let Some(id) = self.chain_id {
            top.insert("chain_id".into(), Value::from(id));
        }
        if !self.sources.is_empty() {
            top.insert(
                "sources".into(),
                Value::from(self.sources.iter().map(|u| s(u)).collect::<Vec<_>>()),
            );
        }
        if let Some(f) = &self.follow {
            top.insert("follow".into(), s(f));
        }
        if let Some(b) = &self.bootstrap {
            top.insert("bootstrap".into(), s(b));
        }
        if let Some(f) = &self.fetch {
            top.insert("fetch".into(), s(f));
        }
        if let Some(v) = self.poll_interval_ms {
            top.insert("poll_interval_ms".into(), Value::from(v));
        }
        if let Some(v) = self.prefetch {
            top.insert("prefetch".into(), Value::from(v));
        }
        if let Some(u) = &self.engine_url {
            engine.insert("url".into(), s(u));
        }
        if let Some(p) = &self.jwt_secret {
            engine.insert("jwt_secret_file".into(), s(&p.to_string_lossy()));
        }
        if let Some(u) = &self.el_rpc {
            engine.insert("rpc_url".into(), s(u));
        }
        if let Some(f) = &self.log_format {
            log.insert("format".into(), s(f));
        }
        if let Some(l) = &self.log_level {
            log.insert("level".into(), s(l));
        }
        if !engine.is_empty() {
            top.insert("engine".into(), Value::from(engine));
        }
        if !log.is_empty() {
            top.insert("log".into(), Value::from(log));
        }
        FlagValues(top)
    }

    /// Merges subcommand flags over top-level ones.
    fn merged(mut self, top: &Opts) -> Opts {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = top.$f.clone(); } )* };
        }
        fill!(
            config,
            network,
            chain,
            chain_id,
            follow,
            bootstrap,
            fetch,
            engine_url,
            jwt_secret,
            el_rpc,
            poll_interval_ms,
            prefetch,
            log_format,
            log_level
        );
        if self.sources.is_empty() {
            self.sources = top.sources.clone();
        }
        self
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (check, opts) = match cli.command {
        Some(Command::Run(o)) => (false, o.merged(&cli.opts)),
        Some(Command::Check(o)) => (true, o.merged(&cli.opts)),
        Some(Command::Status { api, opts }) => return status_command(api, opts.merged(&cli.opts)),
        Some(Command::Networks) => return networks_command(),
        Some(Command::Probe { api, replica, listen }) => {
            return probe_command(&api, &replica, &listen);
        }
        Some(Command::Healthz { api, opts }) => {
            return healthz_command(api, opts.merged(&cli.opts));
        }
        None => (false, cli.opts),
    };
    let config = match Config::load(opts.config.as_deref(), opts.flag_values()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lightcl: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&config);
    // One thread: lightcl waits on the network almost all the time, and a single thread spares
    // the EL the cores and every request two cross-thread wake-ups.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lightcl: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    if check {
        return runtime.block_on(check_command(&config));
    }
    match runtime.block_on(run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: "lightcl", error = %e, "exiting");
            eprintln!("lightcl: {e}");
            ExitCode::from(match e {
                RunError::ChainIdMismatch { .. }
                | RunError::GenesisMismatch(_)
                | RunError::Unauthorized(_)
                | RunError::Api(_)
                | RunError::State(_) => EXIT_STARTUP,
                RunError::FinalizedDivergence { .. }
                | RunError::ElLeftFloor { .. }
                | RunError::ElStuck { .. } => EXIT_HALTED,
                RunError::OutputRootMismatch(_) => EXIT_OUTPUT_MISMATCH,
                RunError::Engine(_) => EXIT_RUNTIME,
            })
        }
    }
}

/// `lightcl networks`: the presets, one per line.
fn networks_command() -> ExitCode {
    use lightcl::config::network;
    println!(
        "{:<26} {:<16} {:>10}  {:<9} {:>6}  genesis (number hash)",
        "name", "also", "chain id", "kind", "L1"
    );
    for n in network::all() {
        println!(
            "{:<26} {:<16} {:>10}  {:<9} {:>6}  {} {}",
            n.name,
            n.alias.unwrap_or("-"),
            n.chain_id,
            n.kind.to_string(),
            if n.l1_chain_id == 0 { "-".to_string() } else { n.l1_chain_id.to_string() },
            n.genesis.number,
            n.genesis.hash
        );
    }
    println!(
        "OP Stack chains from the superchain registry of {} (Base from its last entry there); \
         `--network NAME` or `network = \"NAME\"` sets chain, chain_id and the genesis check",
        network::REGISTRY_DATE
    );
    ExitCode::SUCCESS
}

fn init_logging(config: &Config) {
    let filter = config.log.filter();
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(target: "lightcl", error = %e, "cannot listen for SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Fetches block `b` from source `s` as `lightcl run` would and verifies it; says in which form
/// it came (raw or JSON) and whether it verifies.
async fn check_block(
    config: &Config,
    s: &RpcSource,
    b: lightcl::chain::BlockRef,
    ok: &mut bool,
) -> String {
    use lightcl::payload::SourceBlock;
    use lightcl::source::BlockId;
    match s.block(BlockId::Number(b.number)).await {
        Ok(Some(block)) => {
            let form = match (&block, config.fetch) {
                (SourceBlock::Rlp(_), _) => "raw",
                (SourceBlock::Json(_), lightcl::config::Fetch::Json) => "JSON",
                (SourceBlock::Json(_), _) => {
                    "JSON (its debug API is off: turn it on for raw blocks, debug_getRawBlock)"
                }
            };
            match verify_block(config, s, b, &block).await {
                Ok(p) if p.block == b => format!("{form}, block {b} verified"),
                Ok(p) => {
                    *ok = false;
                    format!("{form}, but asked for {b} it served {}", p.block)
                }
                Err(e) => {
                    *ok = false;
                    format!("{form}, but the block does not verify: {e}")
                }
            }
        }
        Ok(None) => format!("block {b} not served"),
        Err(e) => {
            *ok = false;
            format!("FAILED: {e}")
        }
    }
}

/// Block `b` as source `s` served it, verified as `lightcl run` does: with its execution
/// requests rebuilt from the same source when its header commits to some.
async fn verify_block(
    config: &Config,
    s: &RpcSource,
    b: lightcl::chain::BlockRef,
    block: &lightcl::payload::SourceBlock,
) -> Result<lightcl::payload::Payload, String> {
    use lightcl::payload::{PayloadError, from_source_block, with_requests};
    let what = b.to_string();
    match from_source_block(config.chain, &what, None, block) {
        Err(PayloadError::RequestsUnavailable(want)) => {
            let contract = config.deposit_contract();
            match lightcl::source::requests::read(s, contract, *want).await {
                Ok(Ok((r, took))) => {
                    let r = alloy_eips::eip7685::RequestsOrHash::Requests(r);
                    with_requests(config.chain, &what, None, block, Some(&r))
                    .map_err(|e| e.to_string())
                    .inspect(|_| {
                        tracing::debug!(block = %b, read = took.label(), "execution requests rebuilt");
                    })
                }
                Ok(Err(e)) => Err(format!("its execution requests: {e}")),
                Err(e) => Err(format!("its execution requests cannot be read: {e}")),
            }
        }
        other => other.map_err(|e| e.to_string()),
    }
}

/// A source's block at the genesis height against the chain's (`genesis`, or, when unknown
/// yet, this source's names it).
async fn check_genesis(
    config: &Config,
    s: &RpcSource,
    genesis: &mut Option<(lightcl::chain::BlockRef, String)>,
    ok: &mut bool,
) -> String {
    let n = config.genesis_number;
    match s.hash_at(n).await {
        Ok(Some(h)) => {
            let b = lightcl::chain::BlockRef::new(n, h);
            match genesis {
                None => {
                    *genesis = Some((b, format!("source {} (the first to answer)", s.name())));
                    format!("genesis {b} (learned: required of the EL and the other sources)")
                }
                Some((e, _)) if *e == b => format!("genesis {b} ok"),
                Some((e, by)) => {
                    *ok = false;
                    format!(
                        "WRONG GENESIS: it holds {b}, but the chain's is {e} (named by {by}): \
                         another deployment of this chain id"
                    )
                }
            }
        }
        Ok(None) => {
            *ok = false;
            format!("genesis NOT CHECKED: it serves no block at the genesis height {n}")
        }
        Err(e) => {
            *ok = false;
            format!("genesis NOT CHECKED: {e}")
        }
    }
}

/// `lightcl check`: every endpoint once, a summary, exit 0 or 3.
async fn check_command(config: &Config) -> ExitCode {
    println!("configuration: {}", config.summary());
    let mut ok = true;
    let timeout = Duration::from_millis(config.source_timeout_ms);
    // The genesis block every source and the EL must hold: configured, or the first source's.
    let mut genesis = config.genesis_hash.map(|h| {
        (lightcl::chain::BlockRef::new(config.genesis_number, h), config.genesis_named_by())
    });
    for entry in &config.sources {
        let shown = lightcl::redact::RedactedUrl::new(entry.url());
        let s = RpcSource::new(entry, timeout)
            .with_max_response_mib(config.max_response_mib)
            .with_fetch(config.fetch);
        match (s.chain_id().await, s.labels().await) {
            (Ok(id), Ok(labels)) if id == config.chain_id => {
                let blocks = match labels.latest {
                    Some(b) => check_block(config, &s, b, &mut ok).await,
                    None => "none yet".into(),
                };
                let g = check_genesis(config, &s, &mut genesis, &mut ok).await;
                println!(
                    "source {}: ok, chain id {id}, {g}, latest {}, blocks: {blocks}",
                    s.name(),
                    labels.latest.map_or("none".into(), |b| b.to_string())
                );
            }
            (Ok(id), Ok(_)) => {
                ok = false;
                println!(
                    "source {}: WRONG CHAIN: chain id {id}, expected {}",
                    s.name(),
                    config.chain_id
                );
            }
            (Err(e), _) | (_, Err(e)) => {
                ok = false;
                println!("source {shown}: FAILED: {e}");
            }
        }
    }
    check_state_dir(config, &mut ok);
    for replica in config.replicas() {
        check_replica(config, &replica, genesis.as_ref(), &mut ok).await;
    }
    if let Some(l1) = &config.l1 {
        let els: Vec<(String, std::sync::Arc<dyn lightcl::engine::Engine>)> = config
            .replicas()
            .into_iter()
            .filter_map(|r| {
                let e = EngineClient::new(&r.engine).ok()?;
                Some((
                    r.name,
                    std::sync::Arc::new(e) as std::sync::Arc<dyn lightcl::engine::Engine>,
                ))
            })
            .collect();
        for l in lightcl::l1::check::check(l1, &els).await {
            ok &= l.ok;
            println!("{}", l.text);
        }
    }
    if ok {
        println!("check passed");
        ExitCode::SUCCESS
    } else {
        println!("check FAILED");
        ExitCode::from(EXIT_STARTUP)
    }
}

/// One replica's part of `lightcl check`: its state file and its EL, with the checks
/// `lightcl run` makes before its first write, each reported.
async fn check_replica(
    config: &Config,
    replica: &lightcl::config::Replica,
    genesis: Option<&(lightcl::chain::BlockRef, String)>,
    ok: &mut bool,
) {
    let who =
        if config.engines.is_empty() { String::new() } else { format!("[{}] ", replica.name) };
    let dir = config.replica_state_dir(&replica.name);
    if dir.exists() {
        check_state(&who, &dir, config.chain_id, ok);
    } else {
        println!(
            "{who}state file: {} does not exist yet; `lightcl run` creates it (it must be writable)",
            dir.display()
        );
    }
    let engine = match EngineClient::new(&replica.engine) {
        Ok(engine) => engine.with_max_response_mib(config.max_response_mib),
        Err(e) => {
            *ok = false;
            println!("{who}EL: FAILED: {e}");
            return;
        }
    };
    match check::chain(&engine, config.chain_id).await.map_err(RunError::from) {
        Ok(()) => println!("{who}EL JSON-RPC: ok, chain id {}", config.chain_id),
        Err(e @ RunError::ChainIdMismatch { .. }) => {
            *ok = false;
            println!("{who}EL JSON-RPC: WRONG CHAIN: {e}");
        }
        Err(e) => {
            *ok = false;
            println!("{who}EL JSON-RPC: FAILED: {e}");
        }
    }
    if let Some((g, by)) = genesis {
        use lightcl::engine::BlockAt;
        match engine.block(BlockAt::Number(g.number)).await {
            Ok(Some(b)) if b.block == *g => println!("{who}EL genesis: ok, {g}"),
            Ok(Some(b)) => {
                *ok = false;
                println!(
                    "{who}EL genesis: WRONG GENESIS: the EL holds {}, but the chain's is {g} \
                     (named by {by}): its datadir was initialised for another chain or deployment",
                    b.block
                );
            }
            Ok(None) => println!(
                "{who}EL genesis: not checked yet: the EL has no block #{} (checked once it has)",
                g.number
            ),
            Err(e) => {
                *ok = false;
                println!("{who}EL genesis: FAILED: {e}");
            }
        }
    }
    match engine.has_debug_api().await {
        Ok(true) => println!("{who}EL debug API: available (deep divergence recovery possible)"),
        Ok(false) => println!(
            "{who}EL debug API: not enabled; divergences deeper than the EL's recent-state window \
             (128 blocks on geth) cannot be recovered automatically"
        ),
        Err(e) => println!("{who}EL debug API: unknown ({e})"),
    }
    match check::auth(&engine).await.map_err(RunError::from) {
        Ok(n) => println!("{who}EL Engine API: ok, JWT accepted, {n} methods"),
        Err(e) => {
            *ok = false;
            println!("{who}EL Engine API: FAILED: {e}");
        }
    }
}

/// The state folder part of `lightcl check`: whether a lightcl holds it (not a failure: check
/// runs beside the service), and the highest floor of its files that `lightcl run` carries over
/// to a replica without one.
fn check_state_dir(config: &Config, ok: &mut bool) {
    let dir = &config.state_dir;
    if !dir.exists() {
        return;
    }
    match lightcl::state::StateLock::acquire(dir) {
        Ok(_lock) => println!("state folder {}: not in use", dir.display()),
        Err(lightcl::state::StateError::Locked { holder, .. }) => {
            println!("state folder {}: in use by a running lightcl ({holder})", dir.display())
        }
        Err(e) => {
            *ok = false;
            println!("state folder: FAILED: {e}");
        }
    }
    match lightcl::state::family_floor(dir, config.chain_id) {
        Ok(Some((from, floor))) => println!(
            "state folder: highest finality floor {floor} (in {}); `lightcl run` gives it to \
             every replica whose own floor is lower",
            from.display()
        ),
        Ok(None) => {}
        Err(e) => {
            *ok = false;
            println!("state folder: FAILED: {e}");
        }
    }
}

/// The state file part of `lightcl check`.
fn check_state(who: &str, dir: &std::path::Path, chain_id: u64, ok: &mut bool) {
    match lightcl::state::StateFile::open(dir, chain_id) {
        Ok((f, floor)) => println!(
            "{who}state file {}: ok, finality floor {}",
            f.path().display(),
            floor.map_or("not set yet".into(), |b| b.to_string())
        ),
        Err(e) => {
            *ok = false;
            println!("{who}state file: FAILED: {e}");
        }
    }
}

/// The operations API's base URL: `api`, or from api.listen in the configuration (a wildcard
/// address is reached on the loopback).
fn api_base(api: Option<String>, opts: &Opts) -> Result<String, ExitCode> {
    match api {
        Some(u) => Ok(u),
        None => match Config::load(opts.config.as_deref(), opts.flag_values()) {
            Ok(c) if !c.api.listen.is_empty() => {
                let listen =
                    c.api.listen.replace("0.0.0.0:", "127.0.0.1:").replace("[::]:", "[::1]:");
                Ok(format!("http://{listen}"))
            }
            Ok(_) => {
                eprintln!("lightcl: the API is disabled (api.listen = \"\"); pass --api URL");
                Err(ExitCode::from(EXIT_CONFIG))
            }
            Err(e) => {
                eprintln!("lightcl: {e} (or pass --api URL)");
                Err(ExitCode::from(EXIT_CONFIG))
            }
        },
    }
}

/// `lightcl probe`: serves one replica's readiness until a signal.
fn probe_command(api: &str, replica: &str, listen: &str) -> ExitCode {
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).try_init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lightcl: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(async {
        let listener = match lightcl::api::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("lightcl: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let token = tokio_util::sync::CancellationToken::new();
        let stop = token.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.cancel();
        });
        lightcl::api::probe::serve(
            listener,
            lightcl::api::probe::Upstream::new(api, replica),
            token,
        )
        .await;
        ExitCode::SUCCESS
    })
}

/// `lightcl healthz`: exit 0 when the running lightcl's /healthz answers 200, else 1.
fn healthz_command(api: Option<String>, opts: Opts) -> ExitCode {
    let base = match api_base(api, &opts) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let url = format!("{}/healthz", base.trim_end_matches('/'));
    let probe =
        async { reqwest::Client::new().get(&url).timeout(Duration::from_secs(5)).send().await };
    let answer = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r.block_on(probe),
        Err(e) => {
            eprintln!("lightcl: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match answer {
        Ok(r) if r.status().is_success() => {
            println!("healthy ({url}: {})", r.status());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            println!("unhealthy ({url}: {})", r.status());
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(e) => {
            println!("unhealthy: cannot read {url}: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `lightcl status`: fetch /status and print it for a person. Exit 0 when ready, 1 otherwise.
fn status_command(api: Option<String>, opts: Opts) -> ExitCode {
    let base = match api_base(api, &opts) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let url = format!("{}/status", base.trim_end_matches('/'));
    let fetch = async {
        let resp = reqwest::Client::new().get(&url).timeout(Duration::from_secs(5)).send().await?;
        resp.json::<serde_json::Value>().await
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lightcl: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let v = match runtime.block_on(fetch) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("lightcl: cannot read {url}: {e}; is lightcl running with its API there?");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    print!("{}", render_status(&v));
    if v["ready"].as_bool() == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUNTIME)
    }
}

fn render_status(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let st = &v["state"];
    let block = |b: &serde_json::Value| match (b["number"].as_u64(), b["hash"].as_str()) {
        (Some(n), Some(h)) => format!("#{n} {h}"),
        _ => "-".to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lightcl {}  mode: {}  ready: {}",
        v["version"].as_str().unwrap_or("?"),
        st["mode"].as_str().unwrap_or("?"),
        if v["ready"].as_bool() == Some(true) {
            "yes".to_string()
        } else {
            format!("no ({})", v["not_ready_because"].as_str().unwrap_or("?"))
        }
    );
    if let Some(h) = st["halted"].as_str() {
        let _ = writeln!(out, "HALTED: {h}");
    }
    for (name, key) in [("EL", "local"), ("sources (agreed)", "agreed")] {
        let _ = writeln!(
            out,
            "{name:<17} latest {}  safe {}  finalized {}",
            block(&st[key]["head"]),
            block(&st[key]["safe"]),
            block(&st[key]["finalized"])
        );
    }
    let _ = writeln!(
        out,
        "lag               {} blocks, {} s since the EL head's timestamp",
        st["lag_blocks"].as_u64().map_or("?".into(), |n| n.to_string()),
        st["lag_seconds"].as_u64().map_or("?".into(), |n| n.to_string())
    );
    if let Some(e) = st["last_error"].as_str() {
        let _ = writeln!(out, "last error        {e}");
    }
    let replicas = v["replicas"].as_array().map_or(&[][..], |r| r.as_slice());
    if replicas.len() > 1 {
        for r in replicas {
            let rs = &r["state"];
            let _ = writeln!(
                out,
                "replica {:<16} {:<11} ready {:<3} latest {}  safe {}  finalized {}  lag {}{}",
                r["name"].as_str().unwrap_or("?"),
                rs["mode"].as_str().unwrap_or("?"),
                if r["ready"].as_bool() == Some(true) { "yes" } else { "no" },
                block(&rs["local"]["head"]),
                block(&rs["local"]["safe"]),
                block(&rs["local"]["finalized"]),
                rs["lag_blocks"].as_u64().map_or("?".into(), |n| n.to_string()),
                r["not_ready_because"].as_str().map_or(String::new(), |w| format!("  ({w})"))
            );
        }
    }
    for s in st["sources"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "source {:<40} {} head {} latency {} errors {}",
            s["name"].as_str().unwrap_or("?"),
            if s["up"].as_bool() == Some(true) { "up  " } else { "DOWN" },
            s["head"].as_u64().map_or("-".into(), |n| n.to_string()),
            s["latency_ms"].as_f64().map_or("-".into(), |n| format!("{n:.1} ms")),
            s["errors"]
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::render_status;

    #[test]
    fn status_of_a_fleet_lists_every_replica_with_its_readiness() {
        let state = |mode: &str, head: u64| {
            serde_json::json!({
                "mode": mode,
                "local": {"head": {"number": head, "hash": "0xab"}},
                "lag_blocks": 300 - head,
                "sources": [],
            })
        };
        let doc = serde_json::json!({
            "version": "0.1.0",
            "ready": true,
            "state": state("following", 300),
            "replicas": [
                {"name": "a", "ready": true, "state": state("following", 300)},
                {"name": "b", "ready": false, "not_ready_because": "the EL is not answering",
                 "state": state("el_down", 120)},
            ],
        });
        let text = render_status(&doc);
        let line = |name: &str| text.lines().find(|l| l.starts_with(&format!("replica {name} ")));
        let a = line("a").unwrap_or_default();
        let b = line("b").unwrap_or_default();
        assert!(a.contains("following") && a.contains("ready yes") && a.contains("#300"), "{text}");
        assert!(b.contains("el_down") && b.contains("ready no") && b.contains("lag 180"), "{text}");
        assert!(b.contains("(the EL is not answering)"), "{text}");
        // One EL: no replica lines.
        let mut single = doc.clone();
        single["replicas"] =
            serde_json::json!([{"name": "el", "ready": true, "state": state("following", 300)}]);
        assert!(!render_status(&single).contains("replica "), "{}", render_status(&single));
    }
}
