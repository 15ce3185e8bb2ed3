//! Replica fleets: several ELs driven by one lightcl (`[[engines]]`), and how their labels move
//! together (`labels`). One `[engine]` table stays the simple default: a fleet of one, named
//! [`DEFAULT_REPLICA_NAME`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::EngineConfig;
use crate::redact::RedactedUrl;

/// The name of the one replica an `[engine]` table configures (in metrics, `/status` and
/// `/readyz/<name>`).
pub const DEFAULT_REPLICA_NAME: &str = "el";

/// One replica EL of a fleet: `[[engines]]` in the file. The timeouts of `[engine]` apply to
/// every replica.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineEntry {
    /// A short name: letters, digits, `-` and `_` (metrics label, `/readyz/<name>`, the folder
    /// of its state file).
    pub name: String,
    /// Authenticated Engine API URL.
    pub url: String,
    /// File holding the 32-byte hex JWT secret shared with this EL.
    pub jwt_secret_file: PathBuf,
    /// This EL's JSON-RPC URL.
    pub rpc_url: String,
}

impl std::fmt::Debug for EngineEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineEntry")
            .field("name", &self.name)
            .field("url", &RedactedUrl::new(&self.url))
            .field("jwt_secret_file", &self.jwt_secret_file)
            .field("rpc_url", &RedactedUrl::new(&self.rpc_url))
            .finish()
    }
}

/// How the safe and finalized labels of the replicas of a fleet move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LabelMode {
    /// Each replica moves its labels as soon as it holds the agreed blocks.
    #[default]
    Independent,
    /// Safe and finalized move on a replica only once every replica that counts (ready, and
    /// heard from recently) holds the new block: a load balancer never shows one replica's label
    /// ahead of another's by more than the head lag.
    Lockstep,
}

/// One replica as the follower runs it: its name and its engine settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its name.
    pub name: String,
    /// Its Engine API and JSON-RPC settings (the timeouts of `[engine]`).
    pub engine: EngineConfig,
}

/// Whether `name` can name a replica; the problem otherwise.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("`{name}` must have 1 to 64 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!(
            "`{name}` may hold only letters, digits, `-` and `_` (it is a metrics label, a URL \
             path segment and a folder name)"
        ));
    }
    Ok(())
}

impl super::Config {
    /// The replicas to drive: the `[[engines]]` entries, or the one `[engine]`.
    pub fn replicas(&self) -> Vec<Replica> {
        if self.engines.is_empty() {
            return vec![Replica {
                name: DEFAULT_REPLICA_NAME.into(),
                engine: self.engine.clone(),
            }];
        }
        self.engines
            .iter()
            .map(|e| Replica {
                name: e.name.clone(),
                engine: EngineConfig {
                    url: e.url.clone(),
                    jwt_secret_file: e.jwt_secret_file.clone(),
                    rpc_url: e.rpc_url.clone(),
                    ..self.engine.clone()
                },
            })
            .collect()
    }

    /// Where a replica keeps its finality floor: `state_dir` itself for the one `[engine]`
    /// (where it always was), `state_dir/<name>` for each replica of a fleet.
    pub fn replica_state_dir(&self, name: &str) -> PathBuf {
        if self.engines.is_empty() { self.state_dir.clone() } else { self.state_dir.join(name) }
    }

    /// Checks the `[[engines]]` entries: names, URLs, JWT files, and that `[engine]` does not
    /// name an EL as well. Returns the offending key and the problem.
    pub(super) fn check_replicas(&self) -> Result<(), (String, String)> {
        if self.engines.is_empty() {
            return Ok(());
        }
        let defaults = super::Config::default().engine;
        if self.engine.url != defaults.url
            || self.engine.rpc_url != defaults.rpc_url
            || self.engine.jwt_secret_file != defaults.jwt_secret_file
        {
            return Err((
                "engine".into(),
                "names an EL (url, rpc_url or jwt_secret_file) while [[engines]] lists the \
                 replicas; move that EL into [[engines]] with a name (the timeouts in [engine] \
                 apply to every replica)"
                    .into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, e) in self.engines.iter().enumerate() {
            let key = |k: &str| format!("engines[{i}].{k}");
            check_name(&e.name).map_err(|p| (key("name"), p))?;
            if !seen.insert(e.name.as_str()) {
                return Err((
                    key("name"),
                    format!("`{}` names two replicas; names must differ", e.name),
                ));
            }
            super::check_url(&e.url, &["http", "https"]).map_err(|p| (key("url"), p))?;
            super::check_url(&e.rpc_url, &["http", "https"]).map_err(|p| (key("rpc_url"), p))?;
            crate::jwt::JwtSecret::from_file(&e.jwt_secret_file)
                .map_err(|err| (key("jwt_secret_file"), err.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, FlagValues};

    /// A fleet config in `dir` with `engines` (TOML of the `[[engines]]` tables) and `extra` at
    /// the top; the JWT files a.hex and b.hex exist.
    fn load(dir: &Path, extra: &str, engines: &str) -> Result<Config, String> {
        for f in ["a.hex", "b.hex"] {
            std::fs::write(dir.join(f), "ab".repeat(32)).expect("jwt");
        }
        let body = format!(
            "chain = \"optimism\"\nchain_id = 901\nsources = [\"http://127.0.0.1:9545\"]\n{extra}\n{}",
            engines.replace("DIR", &dir.display().to_string())
        );
        let file = dir.join("c.toml");
        std::fs::write(&file, body).expect("write");
        Config::load(Some(&file), FlagValues::default()).map_err(|e| e.to_string())
    }

    fn entry(name: &str, port: u16, jwt: &str) -> String {
        format!(
            "[[engines]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}\"\n\
             rpc_url = \"http://127.0.0.1:{}\"\njwt_secret_file = \"DIR/{jwt}\"\n",
            port + 1
        )
    }

    #[test]
    fn fleet_config_loads_with_shared_timeouts_and_own_state_folders() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engines = format!(
            "{}{}[engine]\nnew_payload_timeout_ms = 5000\n",
            entry("a", 8551, "a.hex"),
            entry("b", 9551, "b.hex")
        );
        let c = load(dir.path(), "labels = \"lockstep\"", &engines).expect("loads");
        assert_eq!(c.labels, LabelMode::Lockstep);
        let r = c.replicas();
        assert_eq!(r.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(r[1].engine.url, "http://127.0.0.1:9551");
        assert_eq!(r[1].engine.new_payload_timeout_ms, 5000, "[engine] timeouts apply to all");
        assert_eq!(c.replica_state_dir("b"), c.state_dir.join("b"));
        assert!(c.summary().contains("b: engine=http://127.0.0.1:9551/"), "{}", c.summary());
    }

    #[test]
    fn one_engine_is_the_replica_el_in_state_dir_itself() {
        let c = Config::default();
        let r = c.replicas();
        assert_eq!((r.len(), r[0].name.as_str()), (1, DEFAULT_REPLICA_NAME));
        assert_eq!(c.replica_state_dir(DEFAULT_REPLICA_NAME), c.state_dir);
    }

    #[test]
    fn bad_fleets_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            (
                "two replicas named a",
                format!("{}{}", entry("a", 8551, "a.hex"), entry("a", 9551, "b.hex")),
                "engines[1].name",
            ),
            ("a name with a slash", entry("a/b", 8551, "a.hex"), "engines[0].name"),
            ("a missing JWT file", entry("a", 8551, "nope.hex"), "engines[0].jwt_secret_file"),
            (
                "[engine] names an EL too",
                format!("{}[engine]\nurl = \"http://10.0.0.1:8551\"\n", entry("a", 8551, "a.hex")),
                "`engine`",
            ),
            ("no name", entry("a", 8551, "a.hex").replace("name = \"a\"\n", ""), "name"),
        ];
        for (what, engines, key) in cases {
            let err = load(dir.path(), "", &engines).expect_err(what);
            assert!(err.contains(key), "{what}: {err}");
        }
        let err = load(dir.path(), "labels = \"together\"", &entry("a", 8551, "a.hex"))
            .expect_err("unknown label mode");
        assert!(err.contains("labels"), "{err}");
    }

    #[test]
    fn names() {
        for good in ["a", "replica-1", "op_reth_2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "x/y", "é", &"n".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
