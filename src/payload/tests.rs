use super::*;
use alloy_consensus::proofs::calculate_transaction_root;

fn fixture(kind: ChainKind) -> Value {
    let text = match kind {
        ChainKind::Optimism => include_str!("../../testdata/op-block.json"),
        ChainKind::Ethereum => include_str!("../../testdata/eth-block.json"),
    };
    serde_json::from_str(text).expect("fixture is JSON")
}

#[test]
fn real_blocks_convert_with_the_right_method() {
    for (kind, method) in
        [(ChainKind::Optimism, "engine_newPayloadV4"), (ChainKind::Ethereum, "engine_newPayloadV4")]
    {
        let json = fixture(kind);
        let claimed: B256 = json["hash"].as_str().expect("hash").parse().expect("b256");
        let p = from_rpc_block(kind, "3", json).expect("converts");
        assert_eq!(
            (p.block.number, p.block.hash, p.method, p.fcu),
            (3, claimed, method, FcuVersion::V3)
        );
        assert_eq!(p.params_value()[0]["blockHash"], Value::from(claimed.to_string()));
        assert_eq!(p.params_value().as_array().map(Vec::len), Some(4));
    }
    let op = from_rpc_block(ChainKind::Optimism, "3", fixture(ChainKind::Optimism)).expect("op");
    assert!(
        op.params_value()[0].get("withdrawalsRoot").is_some(),
        "OP V4 payload carries withdrawalsRoot"
    );
    assert_eq!(op.tx_count, 4, "deposit + 3 user transactions");
}

#[test]
fn tampering_is_caught() {
    type Edit = fn(&mut Value);
    let cases: [(ChainKind, &str, Edit); 8] = [
        (ChainKind::Optimism, "hash", |j| j["gasUsed"] = Value::from("0x1")),
        (ChainKind::Optimism, "txroot", |j| j["transactions"][1]["value"] = Value::from("0x2a")),
        (ChainKind::Optimism, "txroot", |j| {
            if let Some(a) = j["transactions"].as_array_mut() {
                a.pop();
            }
        }),
        (ChainKind::Ethereum, "hash", |j| {
            j["stateRoot"] = Value::from(B256::repeat_byte(1).to_string())
        }),
        (ChainKind::Ethereum, "txroot", |j| j["transactions"][0]["nonce"] = Value::from("0x99")),
        (ChainKind::Ethereum, "withdrawals-list", |j| {
            if let Some(o) = j.as_object_mut() {
                o.remove("withdrawals");
            }
        }),
        (ChainKind::Optimism, "withdrawals-list", |j| {
            j["withdrawals"] = serde_json::json!([{
                "index": "0x0", "validatorIndex": "0x1",
                "address": "0x0000000000000000000000000000000000000001", "amount": "0x5"
            }]);
        }),
        (ChainKind::Ethereum, "withdrawals", |j| {
            j["withdrawals"] = serde_json::json!([{
                "index": "0x0", "validatorIndex": "0x1",
                "address": "0x0000000000000000000000000000000000000001", "amount": "0x5"
            }]);
        }),
    ];
    for (kind, want, edit) in cases {
        let mut json = fixture(kind);
        edit(&mut json);
        let err = from_rpc_block(kind, "3", json).expect_err("tampered block must fail");
        let got = match err {
            PayloadError::HashMismatch { .. } => "hash",
            PayloadError::TransactionsRootMismatch { .. } => "txroot",
            PayloadError::WithdrawalsRootMismatch { .. } => "withdrawals",
            PayloadError::Withdrawals { .. } => "withdrawals-list",
            other => panic!("{kind}: unexpected {other}"),
        };
        assert_eq!(got, want, "{kind}");
    }
}

#[test]
fn malformed_and_wrong_kind_are_decode_errors() {
    let mut json = fixture(ChainKind::Optimism);
    json["transactions"] = Value::from("garbage");
    assert!(matches!(
        from_rpc_block(ChainKind::Optimism, "3", json),
        Err(PayloadError::Decode { .. })
    ));
    // An OP block (deposit transaction) is not an Ethereum block: the deposit is named.
    assert!(matches!(
        from_rpc_block(ChainKind::Ethereum, "3", fixture(ChainKind::Optimism)),
        Err(PayloadError::Transaction(e)) if e.index == 0
    ));
}

#[test]
fn prague_requests_classification() {
    let b = BlockRef::new(9, B256::repeat_byte(1));
    let parent = B256::repeat_byte(2);
    assert_eq!(prague_requests(b, parent, None, None), Ok(None), "Cancun: no requests");
    assert_eq!(
        prague_requests(b, parent, Some(EMPTY_REQUESTS_HASH), None),
        Ok(Some(RequestsOrHash::Requests(Requests::default())))
    );
    let list = Requests::new(vec![Bytes::from(vec![2u8; 117])]);
    let committed = list.requests_hash();
    assert_eq!(
        prague_requests(b, parent, Some(committed), None),
        Err(PayloadError::RequestsUnavailable(Box::new(RequestsNeeded {
            number: 9,
            hash: b.hash,
            parent_hash: parent,
            requests_hash: committed
        }))),
        "rebuilt from the source first"
    );
    let given = RequestsOrHash::Requests(list.clone());
    assert_eq!(prague_requests(b, parent, Some(committed), Some(&given)), Ok(Some(given.clone())));
    // The commitment itself, for a reth that takes it; never another hash.
    let hash = RequestsOrHash::Hash(committed);
    assert_eq!(prague_requests(b, parent, Some(committed), Some(&hash)), Ok(Some(hash)));
    assert!(matches!(
        prague_requests(b, parent, Some(committed), Some(&RequestsOrHash::Hash(B256::ZERO))),
        Err(PayloadError::Requests { number: 9, .. })
    ));
    // A list that is not the committed one never reaches the payload.
    let other = RequestsOrHash::Requests(Requests::new(vec![Bytes::from(vec![2u8; 116])]));
    assert!(matches!(
        prague_requests(b, parent, Some(committed), Some(&other)),
        Err(PayloadError::Requests { number: 9, .. })
    ));
}

/// The fixture's block as lightcl sees it (header and EIP-2718 transactions).
fn consensus(kind: ChainKind) -> Block<OpaqueTx> {
    let (_, block, _) = json::decode(kind, "3", &fixture(kind).to_string()).expect("decodes");
    block
}

fn rlp(block: &Block<OpaqueTx>) -> SourceBlock {
    SourceBlock::Rlp(raw::encode(block))
}

#[test]
fn raw_and_json_blocks_give_the_same_payload() {
    for kind in [ChainKind::Optimism, ChainKind::Ethereum] {
        let from_json = from_rpc_block(kind, "3", fixture(kind)).expect("json");
        let block = consensus(kind);
        let from_raw = from_source_block(kind, "3", None, &rlp(&block)).expect("raw");
        assert!(!from_raw.claimed, "a raw block by number claims no hash");
        assert_eq!(Payload { claimed: true, ..from_raw }, from_json, "{kind}");
        // Asked for by hash: the same block, the same payload.
        let asked = Some(from_json.block.hash);
        assert_eq!(from_source_block(kind, "3", asked, &rlp(&block)).expect("raw"), from_json);
    }
}

/// A transaction type nobody decodes (0x7f here; Base's Cobalt adds one, every fork may) in a
/// block whose header commits to it.
fn with_unknown_type(kind: ChainKind) -> (Block<OpaqueTx>, Bytes) {
    let mut block = consensus(kind);
    let tx = Bytes::from(vec![0x7f, 0xc3, 0x01, 0x02, 0x03]);
    block.body.transactions.push(OpaqueTx::new(tx.clone()).expect("typed"));
    block.header.transactions_root = calculate_transaction_root(&block.body.transactions);
    (block, tx)
}

#[test]
fn an_unknown_transaction_type_passes_through_the_raw_path_with_the_roots_checked() {
    for kind in [ChainKind::Optimism, ChainKind::Ethereum] {
        let (block, tx) = with_unknown_type(kind);
        let hash = block.header.hash_slow();
        let p = from_source_block(kind, "3", Some(hash), &rlp(&block)).expect("passes");
        assert_eq!(p.block, BlockRef::new(3, hash));
        let txs = p.params_value()[0]["transactions"].as_array().expect("transactions").clone();
        assert_eq!(txs.len(), block.body.transactions.len());
        assert_eq!(txs.last(), Some(&Value::from(tx.to_string())), "{kind}: bytes untouched");
        // The same bytes changed in transit are caught by the root.
        let mut bad = block.clone();
        bad.body.transactions.pop();
        bad.body
            .transactions
            .push(OpaqueTx::new(Bytes::from(vec![0x7f, 0xc3, 1, 2, 4])).expect("typed"));
        assert!(matches!(
            from_source_block(kind, "3", Some(hash), &rlp(&bad)),
            Err(PayloadError::TransactionsRootMismatch { .. })
        ));
    }
}

#[test]
fn an_unknown_transaction_type_in_json_is_named_and_points_to_raw_blocks() {
    for kind in [ChainKind::Optimism, ChainKind::Ethereum] {
        let mut json = fixture(kind);
        json["transactions"][1]["type"] = Value::from("0x7f");
        match from_rpc_block(kind, "#3", json) {
            Err(PayloadError::Transaction(e)) => {
                let TxDecodeError { index, ref tx_type, ref field, .. } = *e;
                assert_eq!((index, tx_type.as_str(), field.as_str()), (1, "0x7f", "type"));
                let text = e.to_string();
                assert!(text.contains("#3") && text.contains("debug_getRawBlock"), "{text}");
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
}

#[test]
fn json_errors_name_the_transaction_and_the_field() {
    let mut json = fixture(ChainKind::Optimism);
    json["transactions"][2]["maxFeePerGas"] = Value::from("not a number");
    let got = from_rpc_block(ChainKind::Optimism, "#3", json);
    match got {
        Err(PayloadError::Transaction(e)) => {
            assert_eq!((e.index, e.tx_type.as_str(), e.field.as_str()), (2, "0x2", "maxFeePerGas"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn json_encodings_of_other_clients_are_accepted_and_still_verified() {
    let want = from_rpc_block(ChainKind::Optimism, "3", fixture(ChainKind::Optimism)).expect("ok");
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit); 4] = [
        ("isSystemTx as a boolean", |j| j["transactions"][0]["isSystemTx"] = Value::Bool(false)),
        ("a quantity as a JSON number", |j| j["transactions"][1]["nonce"] = Value::from(2)),
        ("an optional field as null", |j| j["transactions"][1]["accessList"] = Value::Null),
        ("data for input", |j| {
            let input = j["transactions"][1]["input"].take();
            if let Some(o) = j["transactions"][1].as_object_mut() {
                o.remove("input");
                o.insert("data".into(), input);
            }
        }),
    ];
    for (what, edit) in edits {
        let mut json = fixture(ChainKind::Optimism);
        edit(&mut json);
        assert_eq!(from_rpc_block(ChainKind::Optimism, "3", json).as_ref(), Ok(&want), "{what}");
    }
    // Leniency never bends the check: a system flag that is not what the header commits to.
    let mut json = fixture(ChainKind::Optimism);
    json["transactions"][0]["isSystemTx"] = Value::Bool(true);
    assert!(matches!(
        from_rpc_block(ChainKind::Optimism, "3", json),
        Err(PayloadError::TransactionsRootMismatch { .. })
    ));
}

#[test]
fn raw_tampering_is_caught() {
    type Edit = fn(&mut Block<OpaqueTx>);
    let cases: [(ChainKind, &str, Edit); 7] = [
        (ChainKind::Optimism, "hash", |b| b.header.gas_used += 1),
        (ChainKind::Ethereum, "hash", |b| b.header.state_root = B256::repeat_byte(1)),
        (ChainKind::Optimism, "txroot", |b| {
            let mut tx = b.body.transactions[1].bytes().to_vec();
            let last = tx.len() - 1;
            tx[last] ^= 1;
            b.body.transactions[1] = OpaqueTx::new(tx.into()).expect("typed");
        }),
        (ChainKind::Ethereum, "txroot", |b| {
            b.body.transactions.pop();
        }),
        (ChainKind::Ethereum, "withdrawals", |b| {
            if let Some(ws) = b.body.withdrawals.as_mut() {
                ws.push(alloy_eips::eip4895::Withdrawal { amount: 5, ..Default::default() });
            }
        }),
        (ChainKind::Ethereum, "withdrawals-list", |b| b.body.withdrawals = None),
        (ChainKind::Optimism, "ommers", |b| b.body.ommers.push(b.header.clone())),
    ];
    for (kind, want, edit) in cases {
        let honest = consensus(kind);
        let hash = honest.header.hash_slow();
        let mut block = honest.clone();
        edit(&mut block);
        let err = from_source_block(kind, "3", Some(hash), &rlp(&block))
            .expect_err("tampered block must fail");
        let got = match err {
            PayloadError::HashMismatch { .. } => "hash",
            PayloadError::TransactionsRootMismatch { .. } => "txroot",
            PayloadError::WithdrawalsRootMismatch { .. } => "withdrawals",
            PayloadError::Withdrawals { .. } => "withdrawals-list",
            PayloadError::Ommers { .. } => "ommers",
            other => panic!("{kind}: unexpected {other}"),
        };
        assert_eq!(got, want, "{kind}");
    }
}

#[test]
fn malformed_raw_blocks_are_decode_errors() {
    let good = raw::encode(&consensus(ChainKind::Optimism));
    let mut trailing = good.to_vec();
    trailing.push(0x80);
    let mut bad_type = consensus(ChainKind::Optimism);
    // An RLP string that is not a typed envelope (its first byte is above 0x7f).
    bad_type.body.transactions.push(OpaqueTx::from_envelope(Bytes::from(vec![0x80, 1])));
    for bytes in [
        Bytes::from(trailing),
        good.slice(..good.len() - 1),
        Bytes::from_static(&[0xc0]),
        Bytes::from_static(b"not rlp at all"),
        raw::encode(&bad_type),
    ] {
        assert!(
            matches!(
                from_source_block(ChainKind::Optimism, "3", None, &SourceBlock::Rlp(bytes)),
                Err(PayloadError::Rlp { .. })
            ),
            "must not decode"
        );
    }
}
