//! What the bench binaries share: their `--flag value` arguments and how they end.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;

use crate::ElClient;

/// The command line of a bench: `--lightcl PATH` (required) and `--flag value` pairs, each flag
/// one of those the bench knows.
#[derive(Debug)]
pub struct Args {
    /// The lightcl binary to measure.
    pub lightcl: PathBuf,
    values: HashMap<String, String>,
}

impl Args {
    /// Reads the process's arguments; `known` lists the flags besides `--lightcl`.
    pub fn parse(known: &[&str]) -> Result<Self, String> {
        Self::from_iter(std::env::args().skip(1), known)
    }

    fn from_iter(args: impl Iterator<Item = String>, known: &[&str]) -> Result<Self, String> {
        let mut values = HashMap::new();
        let mut it = args;
        while let Some(flag) = it.next() {
            if flag != "--lightcl" && !known.contains(&flag.as_str()) {
                return Err(format!(
                    "unknown argument {flag} (known: --lightcl {})",
                    known.join(" ")
                ));
            }
            let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            values.insert(flag, v);
        }
        let lightcl = values.remove("--lightcl").ok_or("--lightcl PATH is required")?.into();
        Ok(Self { lightcl, values })
    }

    /// The value of `flag` as given.
    pub fn text(&self, flag: &str) -> Option<&str> {
        self.values.get(flag).map(String::as_str)
    }

    /// The value of `flag` parsed, or `default` when it is not given.
    pub fn get<T: FromStr>(&self, flag: &str, default: T) -> Result<T, String>
    where
        T::Err: Display,
    {
        match self.text(flag) {
            Some(v) => v.parse().map_err(|e| format!("{flag}: {e}")),
            None => Ok(default),
        }
    }

    /// `--el`, if given.
    pub fn el(&self) -> Result<Option<ElClient>, String> {
        self.text("--el").map(parse_el).transpose()
    }

    /// `--el` as a comma-separated list (`op-reth-2,op-reth`: several ELs side by side in one
    /// run), empty when not given.
    pub fn els(&self) -> Result<Vec<ElClient>, String> {
        self.text("--el").map_or(Ok(Vec::new()), |v| v.split(',').map(parse_el).collect())
    }
}

fn parse_el(v: &str) -> Result<ElClient, String> {
    ElClient::parse(v.trim()).ok_or_else(|| {
        let names: Vec<&str> = ElClient::ALL.iter().map(|c| c.name()).collect();
        format!("unknown EL {v}: one of {}", names.join(", "))
    })
}

/// Ends a bench: an error is printed under the bench's name and the process exits 1.
pub fn finish(name: &str, result: Result<(), String>) {
    if let Err(e) = result {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        Args::from_iter(list.iter().map(|s| s.to_string()), &["--blocks", "--el"])
    }

    #[test]
    fn flags_values_and_errors() {
        let a = args(&["--lightcl", "/x", "--blocks", "7"]).expect("parses");
        assert_eq!(a.lightcl, PathBuf::from("/x"));
        assert_eq!(a.get("--blocks", 1u64), Ok(7));
        assert_eq!(a.el(), Ok(None));
        let err = |l: &[&str]| args(l).err().unwrap_or_default();
        assert!(err(&["--blocks", "7"]).contains("--lightcl PATH is required"));
        assert!(err(&["--lightcl", "/x", "--nope", "1"]).contains("unknown argument --nope"));
        assert!(err(&["--lightcl"]).contains("needs a value"));
        let a = args(&["--lightcl", "/x", "--blocks", "x", "--el", "foo"]).expect("parses");
        assert!(a.get("--blocks", 1u64).is_err() && a.el().is_err());
        let two = args(&["--lightcl", "/x", "--el", "op-reth-2, op-reth"]).expect("parses");
        assert_eq!(two.els(), Ok(vec![ElClient::OpReth2, ElClient::OpReth]));
        let bad = args(&["--lightcl", "/x", "--el", "op-reth,nope"]).expect("parses");
        assert!(bad.els().is_err_and(|e| e.contains("unknown EL nope") && e.contains("op-reth-2")));
        assert_eq!(args(&["--lightcl", "/x"]).expect("parses").els(), Ok(vec![]));
    }
}
