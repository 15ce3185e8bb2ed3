//! Untrusted bytes never crash lightcl and never pass as a block they are not: real blocks (the
//! fixtures, OP and Ethereum) as raw RLP and as JSON, mutated at random (truncated, extended,
//! bits flipped, bytes overwritten, huge length prefixes, JSON fields deleted, retyped, made
//! huge), go through the decoders. Each case must come back as an error or as exactly the
//! original payload (I5: what reaches the EL is the block the hash names). A raw block asked
//! for by number claims no hash: a mutation that still decodes is another block with its own
//! verified hash, never one that keeps the original's hash with other contents.
//!
//! `LIGHTCL_FUZZ_CASES` sets the number of cases (a few thousand in the test run;
//! `scripts/fuzz-decoders.sh` runs a million in release mode and prints the counts), and
//! `LIGHTCL_FUZZ_SEED` the first seed.

use std::panic::{AssertUnwindSafe, catch_unwind};

use alloy_primitives::B256;
use serde_json::Value;

use super::*;

/// splitmix64: a small deterministic generator, so a failing case replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// One mutation of raw bytes.
fn mutate_bytes(r: &mut Rng, b: &mut Vec<u8>) {
    let len = b.len();
    match r.below(7) {
        0 => b.truncate(r.below(len)),
        1 => {
            let n = 1 + r.below(64);
            b.extend((0..n).map(|_| r.next() as u8));
        }
        2 => {
            for _ in 0..1 + r.below(8) {
                let i = r.below(len);
                b[i] ^= 1 << r.below(8);
            }
        }
        3 => {
            let i = r.below(len);
            b[i] = r.next() as u8;
        }
        4 => {
            // A huge length prefix: a long string or list of 2^56-1 bytes.
            let i = r.below(len);
            let prefix = if r.below(2) == 0 { 0xbf } else { 0xff };
            b.splice(i..i, [prefix, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        }
        5 => {
            let i = r.below(len);
            let j = (i + r.below(len - i + 1)).min(len);
            let piece = b[i..j].to_vec();
            let at = r.below(len);
            b.splice(at..at, piece);
        }
        _ => {
            let i = r.below(len);
            let j = (i + 1 + r.below(32)).min(len);
            b.drain(i..j);
        }
    }
}

/// Every path to a value in `v`.
fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                at.push(k.clone());
                paths(x, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(i.to_string());
                paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn at_path<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| match v {
        Value::Object(m) => m.get_mut(k),
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

/// One mutation of a JSON block (as a tree, or as text).
fn mutate_json(r: &mut Rng, json: &Value) -> String {
    let mut v = json.clone();
    let mut all = Vec::new();
    paths(&v, &mut Vec::new(), &mut all);
    let path = all[r.below(all.len())].clone();
    let kind = r.below(9);
    if kind >= 7 {
        // Text-level: truncated, or a flipped byte (may no longer be UTF-8: lossy).
        let mut text = v.to_string().into_bytes();
        mutate_bytes(r, &mut text);
        return String::from_utf8_lossy(&text).into_owned();
    }
    if let Some(x) = at_path(&mut v, &path) {
        let cur = x.clone();
        *x = match kind {
            0 => Value::Null,
            1 => Value::from(r.next()),
            2 => Value::from(format!("0x{}", "ff".repeat(1 + r.below(5_000)))),
            3 => Value::from("not hex"),
            4 => Value::Array(vec![cur.clone(), cur]),
            5 => match cur {
                // A hex string with one nibble changed.
                Value::String(s) if s.len() > 2 => {
                    let mut b = s.into_bytes();
                    let i = 2 + r.below(b.len() - 2);
                    b[i] = b"0123456789abcdef"[r.below(16)];
                    Value::from(String::from_utf8_lossy(&b).into_owned())
                }
                other => Value::from(other.to_string()),
            },
            _ => Value::Object(Default::default()),
        };
    }
    if kind == 6
        && let Some((last, parent)) = path.split_last()
        && let Some(Value::Object(m)) = at_path(&mut v, parent)
    {
        m.remove(last);
    }
    v.to_string()
}

/// What a case may come back as.
fn check(case: u64, what: &str, original: &Payload, asked: Option<B256>, got: &Payload) {
    if got.block.hash == original.block.hash || asked.is_some() || got.claimed {
        // A raw block by number claims no hash: that alone may differ (a mutation that left
        // the bytes' meaning unchanged, such as a byte overwritten with itself).
        let got = Payload { claimed: got.claimed || asked.is_none(), ..got.clone() };
        assert_eq!(
            &got, original,
            "case {case} ({what}): a mutated block passed as the original's hash with other \
             contents"
        );
    }
}

/// Runs `cases` mutated decodes from `seed`; returns (cases, accepted).
fn run(seed: u64, cases: u64) -> (u64, u64) {
    let mut accepted = 0;
    for kind in [ChainKind::Optimism, ChainKind::Ethereum] {
        let text = match kind {
            ChainKind::Optimism => include_str!("../../testdata/op-block.json"),
            ChainKind::Ethereum => include_str!("../../testdata/eth-block.json"),
        };
        let json: Value = serde_json::from_str(text).expect("fixture is JSON");
        let original = from_rpc_block(kind, "3", json.clone()).expect("fixture converts");
        let (_, block, _) = json::decode(kind, "3", text).expect("fixture decodes");
        let rlp = raw::encode(&block).to_vec();
        for case in seed..seed + cases / 2 {
            let mut r = Rng(case.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ kind as u64);
            let steps = 1 + r.below(3);
            let raw = r.below(2) == 0;
            let (what, input) = if raw {
                let mut b = rlp.clone();
                for _ in 0..steps {
                    if !b.is_empty() {
                        mutate_bytes(&mut r, &mut b);
                    }
                }
                ("raw", SourceBlock::Rlp(b.into()))
            } else {
                ("json", SourceBlock::Json(mutate_json(&mut r, &json).into()))
            };
            let asked = (r.below(2) == 0).then_some(original.block.hash);
            let out =
                catch_unwind(AssertUnwindSafe(|| from_source_block(kind, "3", asked, &input)));
            match out {
                Err(_) => panic!("case {case} ({kind} {what}): the decoder panicked"),
                Ok(Ok(p)) => {
                    accepted += 1;
                    check(case, what, &original, asked, &p);
                }
                Ok(Err(_)) => {}
            }
        }
    }
    (cases, accepted)
}

#[test]
fn mutated_blocks_never_panic_and_never_pass_as_another() {
    let cases =
        std::env::var("LIGHTCL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4_000);
    let seed = std::env::var("LIGHTCL_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let started = std::time::Instant::now();
    let (n, accepted) = run(seed, cases);
    eprintln!(
        "fuzz: {n} mutated blocks decoded in {:.1} s, {accepted} accepted (each the original \
         payload exactly, or a raw block by number with its own hash), none panicked",
        started.elapsed().as_secs_f64()
    );
    assert!(n > 0);
}

#[test]
fn quantities_of_any_shape_never_panic() {
    let mut r = Rng(7);
    for _ in 0..20_000 {
        let s = match r.below(4) {
            0 => format!("0x{:x}", r.next()),
            1 => format!("0x{}", "f".repeat(r.below(40))),
            2 => "0x".to_string(),
            _ => String::from_utf8_lossy(
                &(0..r.below(12)).map(|_| r.next() as u8).collect::<Vec<_>>(),
            )
            .into_owned(),
        };
        let got = crate::http::parse_quantity(&Value::from(s.clone()));
        if let Some(n) = got {
            let hex = s.strip_prefix("0x").unwrap_or_default();
            assert_eq!(u64::from_str_radix(hex, 16).ok(), Some(n), "{s:?}");
        }
    }
}
