//! Genesis writers: an OP Stack chain and an Ethereum (Prague) chain, both post-merge from
//! block 0, with prefunded test accounts and a small counter contract to call.

use alloy_primitives::{Address, B256, U256, address, hex, keccak256};
use alloy_signer_local::PrivateKeySigner;
use serde_json::{Map, Value, json};

/// Which kind of chain (and EL) a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainKind {
    /// An OP Stack chain on op-geth.
    Optimism,
    /// A plain post-merge Ethereum chain on geth.
    Ethereum,
}

impl ChainKind {
    /// A short name for logs and file names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Optimism => "op-geth",
            Self::Ethereum => "geth",
        }
    }
}

/// Default chain ids of the test chains.
pub const OP_CHAIN_ID: u64 = 901_901;
/// Default chain id of the Ethereum test chain.
pub const ETH_CHAIN_ID: u64 = 1_337_901;

/// Genesis gas limit (also the OP payload attributes' gasLimit).
pub const GAS_LIMIT: u64 = 30_000_000;
/// EIP-1559 denominator written to the OP genesis extraData and the payload attributes.
pub const OP_EIP1559_DENOMINATOR: u32 = 250;
/// EIP-1559 elasticity written to the OP genesis extraData and the payload attributes.
pub const OP_EIP1559_ELASTICITY: u32 = 6;

/// A contract whose runtime code increments storage slot 0 on every call: calls to it change
/// real state, so replayed payloads must execute, not just link.
pub const COUNTER_ADDRESS: Address = address!("0x00000000000000000000000000000000c0c0c0c0");
/// `SLOAD(0) + 1 -> SSTORE(0)`, then STOP.
pub const COUNTER_CODE: &str = "0x60005460010160005500";

/// Number of prefunded test accounts.
pub const TEST_ACCOUNTS: usize = 4;

/// A prefunded test account.
#[derive(Debug, Clone)]
pub struct TestAccount {
    /// Its signer (private key).
    pub signer: PrivateKeySigner,
    /// Its address.
    pub address: Address,
}

/// The deterministic prefunded accounts: key i = keccak256("lightcl-testbed-account-i").
pub fn test_accounts() -> Vec<TestAccount> {
    (0..TEST_ACCOUNTS)
        .filter_map(|i| {
            let key: B256 = keccak256(format!("lightcl-testbed-account-{i}"));
            PrivateKeySigner::from_bytes(&key).ok()
        })
        .map(|signer| TestAccount { address: signer.address(), signer })
        .collect()
}

// System contracts that Prague (and OP Isthmus) call at every block (EIP-4788, EIP-2935,
// EIP-7002, EIP-7251). geth refuses blocks when a requests contract has no code, so a genesis
// with Prague active from block 0 must carry them. Addresses and code are the canonical ones.
const SYSTEM_CONTRACTS: [(&str, &str); 4] = [
    (
        "0x000F3df6D732807Ef1319fB7B8bB8522d0Beac02",
        "0x3373fffffffffffffffffffffffffffffffffffffffe14604d57602036146024575f5ffd5b5f35801560495762001fff810690815414603c575f5ffd5b62001fff01545f5260205ff35b5f5ffd5b62001fff42064281555f359062001fff015500",
    ),
    (
        "0x0000F90827F1C53a10cb7A02335B175320002935",
        "0x3373fffffffffffffffffffffffffffffffffffffffe14604657602036036042575f35600143038111604257611fff81430311604257611fff9006545f5260205ff35b5f5ffd5b5f35611fff60014303065500",
    ),
    (
        "0x00000961Ef480Eb55e80D19ad83579A64c007002",
        "0x3373fffffffffffffffffffffffffffffffffffffffe1460cb5760115f54807fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff146101f457600182026001905f5b5f82111560685781019083028483029004916001019190604d565b909390049250505036603814608857366101f457346101f4575f5260205ff35b34106101f457600154600101600155600354806003026004013381556001015f35815560010160203590553360601b5f5260385f601437604c5fa0600101600355005b6003546002548082038060101160df575060105b5f5b8181146101835782810160030260040181604c02815460601b8152601401816001015481526020019060020154807fffffffffffffffffffffffffffffffff00000000000000000000000000000000168252906010019060401c908160381c81600701538160301c81600601538160281c81600501538160201c81600401538160181c81600301538160101c81600201538160081c81600101535360010160e1565b910180921461019557906002556101a0565b90505f6002555f6003555b5f54807fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff14156101cd57505f5b6001546002828201116101e25750505f6101e8565b01600290035b5f555f600155604c025ff35b5f5ffd",
    ),
    (
        "0x0000BBdDc7CE488642fb579F8B00f3a590007251",
        "0x3373fffffffffffffffffffffffffffffffffffffffe1460d35760115f54807fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff1461019a57600182026001905f5b5f82111560685781019083028483029004916001019190604d565b9093900492505050366060146088573661019a573461019a575f5260205ff35b341061019a57600154600101600155600354806004026004013381556001015f358155600101602035815560010160403590553360601b5f5260605f60143760745fa0600101600355005b6003546002548082038060021160e7575060025b5f5b8181146101295782810160040260040181607402815460601b815260140181600101548152602001816002015481526020019060030154905260010160e9565b910180921461013b5790600255610146565b90505f6002555f6003555b5f54807fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff141561017357505f5b6001546001828201116101885750505f61018e565b01600190035b5f555f6001556074025ff35b5f5ffd",
    ),
];

fn alloc() -> Value {
    let mut alloc = Map::new();
    let balance = U256::from(10u64).pow(U256::from(30u64)); // 10^12 ether each
    for acct in test_accounts() {
        alloc.insert(acct.address.to_string(), json!({ "balance": format!("{balance:#x}") }));
    }
    alloc.insert(COUNTER_ADDRESS.to_string(), json!({ "balance": "0x0", "code": COUNTER_CODE }));
    for (addr, code) in SYSTEM_CONTRACTS {
        alloc.insert(addr.to_string(), json!({ "balance": "0x0", "nonce": "0x1", "code": code }));
    }
    Value::Object(alloc)
}

fn ethereum_forks(chain_id: u64) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("chainId".into(), json!(chain_id));
    for key in [
        "homesteadBlock",
        "eip150Block",
        "eip155Block",
        "eip158Block",
        "byzantiumBlock",
        "constantinopleBlock",
        "petersburgBlock",
        "istanbulBlock",
        "muirGlacierBlock",
        "berlinBlock",
        "londonBlock",
        "arrowGlacierBlock",
        "grayGlacierBlock",
        "mergeNetsplitBlock",
    ] {
        c.insert(key.into(), json!(0));
    }
    c.insert("terminalTotalDifficulty".into(), json!(0));
    c.insert("shanghaiTime".into(), json!(0));
    c.insert("cancunTime".into(), json!(0));
    c.insert("pragueTime".into(), json!(0));
    c.insert("depositContractAddress".into(), json!(Address::ZERO.to_string()));
    c.insert(
        "blobSchedule".into(),
        json!({
            "cancun": { "target": 3, "max": 6, "baseFeeUpdateFraction": 3338477 },
            "prague": { "target": 6, "max": 9, "baseFeeUpdateFraction": 5007716 }
        }),
    );
    c
}

fn genesis_with(config: Map<String, Value>, timestamp: u64, extra_data: &str) -> Value {
    json!({
        "config": Value::Object(config),
        "nonce": "0x0",
        "timestamp": format!("{timestamp:#x}"),
        "extraData": extra_data,
        "gasLimit": format!("{GAS_LIMIT:#x}"),
        "difficulty": "0x0",
        "mixHash": B256::ZERO.to_string(),
        "coinbase": Address::ZERO.to_string(),
        "baseFeePerGas": "0x3b9aca00",
        "alloc": alloc(),
    })
}

/// The deposit contract of [`requests_genesis`]: it logs its calldata as a `DepositEvent`
/// (`CALLDATACOPY` of all of it, `LOG1` with the event's topic), which is all an EL reads of the
/// real deposit contract.
pub const DEPOSIT_EMITTER: Address = address!("0x0000000000000000000000000000000000006110");

/// A `DepositEvent`'s data as the deposit contract encodes it: five ABI byte strings (public
/// key, withdrawal credentials, amount in gwei little-endian, signature, index little-endian).
pub fn deposit_event_data(
    pubkey: &[u8; 48],
    creds: &[u8; 32],
    amount: u64,
    sig: &[u8; 96],
    index: u64,
) -> alloy_primitives::Bytes {
    let mut d = Vec::with_capacity(576);
    for off in [160u64, 256, 320, 384, 512] {
        d.extend_from_slice(&U256::from(off).to_be_bytes::<32>());
    }
    for field in
        [&pubkey[..], &creds[..], &amount.to_le_bytes()[..], &sig[..], &index.to_le_bytes()[..]]
    {
        d.extend_from_slice(&U256::from(field.len()).to_be_bytes::<32>());
        d.extend_from_slice(field);
        d.resize(d.len().div_ceil(32) * 32, 0);
    }
    d.into()
}

/// The calldata to send [`DEPOSIT_EMITTER`] for one deposit made from `n`.
pub fn deposit_calldata(n: u8) -> alloy_primitives::Bytes {
    let (creds, sig) = ([n.wrapping_add(1); 32], [n.wrapping_add(2); 96]);
    deposit_event_data(&[n; 48], &creds, 32_000_000_000, &sig, u64::from(n))
}

/// An Ethereum chain like [`ethereum_genesis`] whose deposit contract is [`DEPOSIT_EMITTER`]:
/// blocks can carry all three kinds of execution requests.
pub fn requests_genesis(chain_id: u64, timestamp: u64) -> Value {
    let mut config = ethereum_forks(chain_id);
    config.insert("depositContractAddress".into(), json!(DEPOSIT_EMITTER.to_string()));
    let mut genesis = genesis_with(config, timestamp, "0x");
    let code =
        "0x365f5f377f649bbc62d0e31342afea4e5cd82d4049e7e1ee912fc0889aa790803be39038c5365fa100";
    if let Some(alloc) = genesis.get_mut("alloc").and_then(Value::as_object_mut) {
        alloc.insert(DEPOSIT_EMITTER.to_string(), json!({ "balance": "0x0", "code": code }));
    }
    genesis
}

/// An Ethereum chain with every fork through Prague active at genesis.
pub fn ethereum_genesis(chain_id: u64, timestamp: u64) -> Value {
    genesis_with(ethereum_forks(chain_id), timestamp, "0x")
}

/// Holocene/Jovian extraData: version 1, denominator, elasticity, minimum base fee (u64).
pub fn op_extra_data(min_base_fee: u64) -> String {
    let mut out = vec![1u8];
    out.extend_from_slice(&OP_EIP1559_DENOMINATOR.to_be_bytes());
    out.extend_from_slice(&OP_EIP1559_ELASTICITY.to_be_bytes());
    out.extend_from_slice(&min_base_fee.to_be_bytes());
    format!("0x{}", hex::encode(out))
}

/// The OP forks the built op-geth supports, all active at genesis.
pub const OP_FORKS: [&str; 8] = [
    "regolithTime",
    "canyonTime",
    "ecotoneTime",
    "fjordTime",
    "graniteTime",
    "holoceneTime",
    "isthmusTime",
    "jovianTime",
];

/// An OP Stack chain with every OP fork the built op-geth supports active at genesis.
pub fn op_genesis(chain_id: u64, timestamp: u64) -> Value {
    let mut config = ethereum_forks(chain_id);
    config.remove("blobSchedule");
    config.insert("bedrockBlock".into(), json!(0));
    for fork in OP_FORKS {
        config.insert(fork.into(), json!(0));
    }
    config.insert(
        "optimism".into(),
        json!({
            "eip1559Elasticity": OP_EIP1559_ELASTICITY,
            "eip1559Denominator": 50,
            "eip1559DenominatorCanyon": OP_EIP1559_DENOMINATOR,
        }),
    );
    let mut genesis = genesis_with(config, timestamp, &op_extra_data(0));
    // With Isthmus active at genesis the header's withdrawalsRoot is the storage root of the
    // L2ToL1MessagePasser predeploy. Without the account op-geth writes a zero hash and op-reth
    // the empty-trie root, so the two would disagree on the genesis hash; and op-geth leaves an
    // empty-trie root out of its payloads (then refuses them), so the account needs storage, as
    // on a real OP chain (where it holds the proxy's implementation and owner).
    if let Some(alloc) = genesis.get_mut("alloc").and_then(Value::as_object_mut) {
        alloc.insert(
            L2_TO_L1_MESSAGE_PASSER.to_string(),
            json!({
                "balance": "0x0",
                "nonce": "0x1",
                "code": "0x00",
                "storage": { B256::ZERO.to_string(): B256::with_last_byte(1).to_string() },
            }),
        );
    }
    genesis
}

/// The OP Stack L2ToL1MessagePasser predeploy (its storage root is Isthmus' withdrawalsRoot).
pub const L2_TO_L1_MESSAGE_PASSER: Address = address!("0x4200000000000000000000000000000000000016");

/// The genesis for `kind` with its default chain id.
pub fn genesis_for(kind: ChainKind, timestamp: u64) -> Value {
    match kind {
        ChainKind::Optimism => op_genesis(OP_CHAIN_ID, timestamp),
        ChainKind::Ethereum => ethereum_genesis(ETH_CHAIN_ID, timestamp),
    }
}

/// The default chain id for `kind`.
pub fn chain_id_for(kind: ChainKind) -> u64 {
    match kind {
        ChainKind::Optimism => OP_CHAIN_ID,
        ChainKind::Ethereum => ETH_CHAIN_ID,
    }
}
