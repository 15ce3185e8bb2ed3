#!/usr/bin/env python3
"""Shows that each named simulation case can fail: puts back, one at a time, the behaviour the
case was written against (a small edit of the source, a "mutant"), runs that case alone and
expects it to fail; then restores the file. Prints one line per mutant and exits 1 if any
mutant survived (its case passed although the bug was back).

Usage: python3 scripts/sim-mutants.py [case ...]    (all cases by default; F1-F3: fleets; R1-R6b,
RS: the review of issue 21; GN: the genesis check; L1: the L1-origin check; RQ: execution requests; G1-G5: the gate's and the floor's unit tests)
Takes a few minutes: every mutant is a rebuild of the crate and the test binary.
"""

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (case, test name, what the mutant puts back, [(file, text, replacement), ...])
MUTANTS = [
    ("01", "case01_no_false_halt_when_head_is_finalized",
     "a block that does not sit on the head starts a recovery at once (no quorum check), whose "
     "search from a head equal to finalized halts whatever the sources hold",
     [("src/sync/task/catch_up.rs",
       "                Agreed::Hash(h) if h == local.head.hash => {\n",
       "                Agreed::Hash(h) if h == local.head.hash && false => {\n"),
      ("src/sync/task/catch_up.rs",
       "                Agreed::Unknown => Err(Fault::NoAgreement { number: local.head.number }),\n",
       "                Agreed::Unknown => Ok(Outcome::Diverged { at: local.head.number }),\n"),
      ("src/sync/task/recover.rs",
       "let diverged_at = diverged_at.min(local.head.number).max(local.finalized.number + 1);",
       "let diverged_at = diverged_at.min(local.head.number);"),
      ("src/sync/task/recover.rs",
       "                if sources_hash == local.finalized.hash {\n"
       "                    return Err(Fault::NoAgreement { number: n });\n"
       "                }\n"
       "                return Err(confirm_halt(ctx, local.finalized, agreed).await);",
       "                return Err(Fault::Halt(RunError::FinalizedDivergence { number: n, "
       "local: local.finalized.hash, sources_hash }));")]),
    ("02", "case02_sibling_at_target_is_never_followed",
     "no check of fed blocks against the agreed blocks at fixed heights, heads sent unconfirmed",
     [("src/sync/task/feed.rs",
       "fixed.iter().find(|b| b.number == p.block.number && b.hash != p.block.hash)",
       "fixed.iter().find(|b| b.number == p.block.number && b.hash != p.block.hash && false)"),
      ("src/sync/task/feed.rs",
       "if self.pinned { Some(true) } else { self.is_agreed(head).await }",
       "if self.pinned || true { Some(true) } else { self.is_agreed(head).await }")]),
    ("03", "case03_label_read_errors_never_move_finalized_back",
     "an EL error on a label read taken as 'label unset' (genesis), and no remembered floor",
     [("src/sync/forkchoice/floor.rs",
       "    pub fn get(&self) -> Option<BlockRef> {\n        self.value\n",
       "    pub fn get(&self) -> Option<BlockRef> {\n        let _ = self.value;\n        None\n"),
      ("src/engine/mod.rs",
       "engine.block(BlockAt::Label(Label::Safe)).await?.map(|b| b.block)",
       "engine.block(BlockAt::Label(Label::Safe)).await.ok().flatten().map(|b| b.block)"),
      ("src/engine/mod.rs",
       "engine.block(BlockAt::Label(Label::Finalized)).await?.map(|b| b.block)",
       "engine.block(BlockAt::Label(Label::Finalized)).await.ok().flatten().map(|b| b.block)")]),
    ("04", "case04_tampered_withdrawals_are_refused_and_refetched",
     "a block without its withdrawals list passes verification",
     [("src/payload/mod.rs",
       "            (None, Some(_)) => {\n                return Err(",
       "            (None, Some(_)) if false => {\n                return Err("),
      ("src/payload/mod.rs", "            (None, None) => {}\n", "            _ => {}\n")]),
    ("05", "case05_labels_move_only_to_ancestors_by_hash",
     "labels chosen by height alone: fed blocks not checked at the labels' heights, the gate "
     "not checking labels by hash",
     [("src/sync/task/feed.rs",
       "fixed.iter().find(|b| b.number == p.block.number && b.hash != p.block.hash)",
       "fixed.iter().find(|b| b.number == p.block.number && b.hash != p.block.hash && false)"),
      ("src/sync/forkchoice/labels.rs",
       "let usable = |b: &BlockRef| b.number <= head.number && on_chain(b);",
       "let usable = |b: &BlockRef| b.number <= head.number || on_chain(b);"),
      ("src/sync/forkchoice/gate.rs",
       "        if on != Some(b.hash) {\n            return Ok(Some(format!(\n"
       "                \"{what} {b} is not an ancestor",
       "        if on != Some(b.hash) && false {\n            return Ok(Some(format!(\n"
       "                \"{what} {b} is not an ancestor")]),
    ("06", "case06_majority_starts_with_one_source_down",
     "start-up waits for every configured source",
     [("src/node.rs",
       "n if n >= sources.required() => return Ok(true),",
       "n if n >= sources.len() => return Ok(true),")]),
    ("07", "case07_lagging_replica_is_not_disagreement",
     "'no block' at a height taken as disagreement (plan and ancestor search)",
     [("src/sync/follower.rs",
       "                Agreed::Unknown => None,\n",
       "                Agreed::Unknown => Some(false),\n"),
      ("src/sync/task/recover.rs",
       "let Some(theirs) = ctx.sources.agreed_at(n).await.hash() else {\n"
       "                    return Err(Fault::NoAgreement { number: n });\n"
       "                };",
       "let theirs = ctx.sources.agreed_at(n).await.hash().unwrap_or_default();")]),
    ("08", "case08_secrets_never_reach_logs_or_status",
     "transport errors printed without redaction",
     [("src/redact.rs",
       "    let mut out = message.replace(raw, shown);",
       "    #[allow(unreachable_code)]\n    return message.to_string();\n"
       "    let mut out = message.replace(raw, shown);")]),
    ("09", "case09_recovery_memory_is_bounded_by_prefetch",
     "the whole replay range held in memory at once",
     [("src/sync/task/recover.rs",
       "let end = target.number.min(ancestor.number + ctx.config.prefetch as u64);",
       "let end = target.number.min(ancestor.number + 8_192);")]),
    ("10", "case10_the_liar_is_blamed_and_stays_benched",
     "a lie costs what a timeout costs: a short backoff that the next success lifts",
     [("src/source/set.rs",
       "        let benched = m.health.lie(error.reason(), Instant::now());\n",
       "        m.health.failure(error.reason(), Instant::now());\n"
       "        let benched = std::time::Duration::from_secs(1);\n")]),
    ("10", "case10_the_liar_is_blamed_and_stays_benched",
     "the blame for a broken link always on the source of the second block",
     [("src/sync/ctx.rs",
       "(Some(h), Some(before)) if h != lower.hash => Some(Culprit::Lower(before, h)),",
       "(Some(h), Some(before)) if h != lower.hash && false => Some(Culprit::Lower(before, h)),")]),
    ("04", "case04_tampered_withdrawals_are_refused_and_refetched",
     "a raw block asked for by number goes to the EL before the block above it vouches for it",
     [("src/sync/task/feed.rs",
       "if !self.pinned && !p.claimed && p.block.number != self.target.number {",
       "if false && !self.pinned && !p.claimed && p.block.number != self.target.number {")]),
    ("11", "case11_single_source_bad_block_holds_right_below_it",
     "a single source's bad block benches it like a transport failure",
     [("src/source/set.rs",
       "            self.inconsistent(i, error.reason(), error.to_string());\n",
       "            m.health.failure(error.reason(), Instant::now());\n")]),
    ("12", "case12_refill_below_the_floor_follows_only_the_chain_through_it",
     "a refill below the floor trusts by-number answers: no proof of the chain through the floor",
     [("src/sync/forkchoice/floor.rs",
       "    ) -> Result<bool, Fault> {\n        let Some(floor) = self.get().filter(",
       "    ) -> Result<bool, Fault> {\n        #[allow(unreachable_code)]\n        return Ok(true);\n"
       "        let Some(floor) = self.get().filter(")]),
    ("F1", "fleet::three_replicas_fetch_each_block_once",
     "no shared fetch: every replica fetches every block itself",
     [("src/sync/fleet.rs",
       "let cache = (n > 1).then(",
       "let cache = (n > 1 && false).then(")]),
    ("F2", "fleet::lockstep_holds_labels_until_the_slow_replica_has_the_block",
     "lockstep caps nothing: labels move as soon as the replica itself holds the block",
     [("src/sync/ctx.rs",
       "        let heads = self.fleet.lockstep_heads(self.index)?;",
       "        let heads: Vec<BlockRef> = None?;")]),
    ("F3", "fleet::lockstep_does_not_wait_for_a_replica_that_never_comes_back",
     "lockstep waits for every replica, ready or not",
     [("src/sync/fleet.rs",
       "(j != me && v.ready && fresh && v.head.is_some()).then_some(v)",
       "(j != me && v.head.is_some()).then_some(v)")]),
    # Issue 21: the paths around the safety core the review found.
    ("R1", "review::review01_bootstrap_never_crosses_finality_over_a_load_balanced_source",
     "bootstrap proves the handed head's chain only down to the handed finalized block, trusts "
     "the quorum's by-number answer at lightcl's finalized block, and the gate takes a floor it "
     "cannot see on the branch on trust",
     [("src/sync/task/el_sync.rs",
       "let low = if checkpoint.number > 0 { checkpoint.number } else { heads.finalized.number };",
       "let low = heads.finalized.number;"),
      ("src/sync/task/el_sync.rs",
       "if checkpoint.number > 0 && chain.get(checkpoint.number) != Some(checkpoint.hash) {",
       "if checkpoint.number > 0 && chain.get(checkpoint.number).is_some_and(|h| h != checkpoint.hash) {"),
      ("src/sync/forkchoice/gate.rs",
       "    if at_floor != Some(floor.hash) {",
       "    if at_floor.is_some_and(|h| h != floor.hash) {")]),
    ("R2", "review::review02_stuck_el_repair_never_rolls_below_finality",
     "the stuck-EL repair rolls back towards genesis, and debug_setHead does not meet the gate",
     [("src/sync/task/stuck.rs",
       "        let bottom = floor.map_or(0, |f| f.number);",
       "        let bottom = floor.map_or(0, |_| 0);"),
      ("src/sync/forkchoice/gate.rs",
       "        && number < floor.number\n        && !refilling",
       "        && number < floor.number\n        && !refilling\n        && false")]),
    ("R3", "review::review03_majority_follows_with_a_far_honest_source",
     "the quorum grace starts once any `required` sources answered, agreeing or not, and a read "
     "that cannot agree is not read again",
     [("src/source/set/agree.rs",
       "a.iter().map(|r| r.filter(LabelReport::complete).map(|_| ())).collect();",
       "a.iter().map(|r| r.map(|_| ())).collect();"),
      ("src/source/set/agree.rs",
       "        if missing == 0 || complete + missing < self.required() {",
       "        if true {")]),
    ("R4", "review::review04_engine_url_secrets_never_reach_logs_or_status",
     "engine transport errors print the URL they were sending to",
     [("src/engine/client.rs",
       "                    message: crate::redact::scrub(\n"
       "                        &crate::http::error_chain(&e),\n"
       "                        url.as_str(),\n"
       "                        &shown.to_string(),\n"
       "                    ),",
       "                    message: crate::http::error_chain(&e),")]),
    ("R5", "review::fleet::review05_lockstep_holds_at_the_el_sync_hand_over",
     "the EL-sync hand-over ignores the lockstep cap",
     [("src/sync/task/el_sync.rs",
       "handed(target, &agreed, checkpoint, ctx.label_cap().await)",
       "handed(target, &agreed, checkpoint, None)")]),
    ("R6a", "review::review06a_bootstrap_walk_progresses_with_a_flaky_source",
     "bootstrap's proof walk one block at a time by hash, no retry, restarted from scratch after "
     "an error",
     [("src/source/set.rs", "        const TRIES: usize = 6;", "        const TRIES: usize = 1;"),
      ("src/source/set.rs", "                    if count > 1 {", "                    if count > 1 && false {"),
      ("src/sync/task/el_sync.rs",
       "                self.proof = Some(chain);\n                info!(",
       "                drop(chain);\n                info!(")]),
    ("R6b", "review::review06b_refill_proof_progresses_with_a_flaky_source",
     "the refill proof below the floor one block at a time by hash, no retry, restarted from "
     "scratch after an error",
     [("src/source/set.rs", "        const TRIES: usize = 6;", "        const TRIES: usize = 1;"),
      ("src/source/set.rs", "                    if count > 1 {", "                    if count > 1 && false {"),
      ("src/sync/forkchoice/floor.rs",
       "        self.set_lineage(chain);\n        if done {",
       "        if done {\n            self.set_lineage(chain);")]),
    ("RS", "review::fleet::review_lockstep_counts_blocks_by_hash_after_tip_reorgs",
     "lockstep counts a replica's head by height, whatever branch it is on",
     [("src/sync/ctx.rs",
       "            if self.sources.agreed_at(h.number).await.hash() == Some(h.hash) {",
       "            if self.sources.agreed_at(h.number).await.hash().is_some() || true {")]),
    ("RS", "review::fleet::review_lockstep_counts_blocks_by_hash_after_tip_reorgs",
     "a replica feeding a long round stops counting for lockstep once its last report is 30 s "
     "old, although it is still ready and holds only what it reported",
     [("src/sync/task/feed.rs",
       "        self.ctx.fleet.touch(self.ctx.index);\n",
       "")]),
    # Issue 23: the gate's and the floor's own unit tests (lib tests, named "lib:...").
    ("GN", "a_source_with_another_genesis_is_refused_before_any_write",
     "a source whose genesis block differs is admitted like any other",
     [("src/source/set.rs",
       "            if got != expected.block {\n",
       "            if got != expected.block && false {\n")]),
    ("L1", "l1_enforce_waits_for_l1_finality_and_rides_out_l1_reorgs",
     "in enforce, a finalized label whose L1 origin failed its check moves anyway",
     [("src/l1/verify.rs",
       "            if failed(&finalized) {\n                heads.finalized = fin_kept;\n",
       "            if failed(&finalized) && false {\n                heads.finalized = fin_kept;\n")]),
    ("L1b", "l1_enforce_keeps_labels_off_a_chain_not_built_on_l1",
     "in enforce, a safe label whose L1 origin is not on L1 moves anyway",
     [("src/l1/verify.rs",
       "            if failed(&safe) {\n",
       "            if failed(&safe) && false {\n")]),
    ("RQ", "case14_execution_requests_are_rebuilt_and_tampering_is_refused",
     "a Prague block's rebuilt requests are sent without checking them against requestsHash",
     [("src/payload/requests.rs",
       "    Rebuilt::new(d, w, c).check(requests_hash)\n}",
       "    let _ = requests_hash;\n    Ok(Rebuilt::new(d, w, c).0)\n}"),
      ("src/payload/mod.rs",
       "            if rebuilt != h {\n",
       "            if rebuilt != h && false {\n")]),
    ("RQb", "case14_execution_requests_are_rebuilt_and_tampering_is_refused",
     "the requests queued at the parent are never read (the block's logs alone)",
     [("src/source/requests.rs",
       "    if queues.iter().any(|q| !q.is_empty())\n",
       "    if queues.iter().any(|q| !q.is_empty()) && false\n"),
      ("src/source/requests.rs",
       "    Ok(rebuild(&receipts, Some(&queues))",
       "    Ok(rebuild(&receipts, None)")]),
    ("G1", "lib:sync::forkchoice::tests::the_floor_is_stored_before_the_send",
     "the floor is raised after the forkchoice is sent, not before",
     [("src/sync/forkchoice/gate.rs",
       "    if !below_floor {\n        floor.raise(heads.finalized)?;\n    }\n",
       ""),
      ("src/sync/forkchoice/gate.rs",
       "    let status = engine.forkchoice_updated(version, heads).await?;\n",
       "    let status = engine.forkchoice_updated(version, heads).await?;\n"
       "    if !below_floor {\n        floor.raise(heads.finalized)?;\n    }\n")]),
    ("G2", "lib:sync::forkchoice::tests::refusals_write_nothing",
     "a refused forkchoice is sent all the same",
     [("src/sync/forkchoice/gate.rs",
       "        return Err(GateError::Refused(why));\n    }\n    // The floor is the highest",
       "        #[allow(clippy::disallowed_methods)]\n"
       "        let _ = engine.forkchoice_updated(version, heads).await;\n"
       "        return Err(GateError::Refused(why));\n    }\n    // The floor is the highest")]),
    ("G3", "lib:sync::forkchoice::tests::refusals_write_nothing",
     "finalized below the floor is not refused",
     [("src/sync/forkchoice/gate.rs",
       "    if finalized.number < floor.number {",
       "    if finalized.number < floor.number && false {")]),
    ("G4", "lib:sync::forkchoice::tests::set_head_never_goes_below_the_floor",
     "debug_setHead does not meet the floor",
     [("src/sync/forkchoice/gate.rs",
       "        && number < floor.number\n        && !refilling",
       "        && number < floor.number\n        && !refilling\n        && false")]),
    ("G5", "lib:sync::forkchoice::tests::a_refill_follows_only_the_chain_through_the_floor",
     "a refill below the floor takes any head, on the chain through the floor or not",
     [("src/sync/forkchoice/floor.rs",
       "        (h != head.hash).then(|| {",
       "        (h != head.hash && false).then(|| {")]),
]


def run(case_filter):
    survived = 0
    broken = 0
    for case, test, what, edits in MUTANTS:
        if case_filter and case not in case_filter:
            continue
        saved = {}
        try:
            for path, old, new in edits:
                full = os.path.join(ROOT, path)
                text = saved.get(full) or open(full).read()
                saved.setdefault(full, text)
                current = open(full).read()
                if current.count(old) != 1:
                    print(f"case {case}: the text to mutate is gone from {path}; update this script")
                    return 2
                with open(full, "w") as f:
                    f.write(current.replace(old, new))
            started = time.time()
            if test.startswith("lib:"):
                cmd = ["cargo", "test", "--quiet", "--lib", test[4:], "--", "--exact"]
            else:
                cmd = ["cargo", "test", "--quiet", "--test", "it", f"sim::{test}", "--", "--exact"]
            res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            took = time.time() - started
            out = res.stdout + res.stderr
            if "could not compile" in out:
                broken += 1
                print(f"case {case}: the mutant does not compile; update this script\n{out[-1500:]}")
                continue
            if res.returncode != 0:
                why = next((l.strip() for l in out.splitlines() if "panicked" in l), "failed")
                nxt = out.splitlines()
                i = next((k for k, l in enumerate(nxt) if "panicked" in l), None)
                detail = nxt[i + 1].strip()[:160] if i is not None and i + 1 < len(nxt) else ""
                print(f"case {case}: caught   ({took:5.0f} s) mutant: {what}\n           {detail or why}")
            else:
                survived += 1
                print(f"case {case}: SURVIVED ({took:5.0f} s) mutant: {what}")
        finally:
            for full, text in saved.items():
                with open(full, "w") as f:
                    f.write(text)
    print(f"{survived} mutant(s) survived, {broken} did not compile")
    return 1 if survived or broken else 0


if __name__ == "__main__":
    sys.exit(run(set(a.zfill(2) for a in sys.argv[1:])))
