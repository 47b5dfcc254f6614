"""Checks the gateway's signatures with an independent Ethereum library (eth-account).

Input: the JSON file the test `every_payload_kind_is_signed_and_verifies_with_alloy` writes when
PARAPET_SIGNATURES_OUT names it: one entry per payload kind with the wallet's address, the
payload, the digest, the signature and (for transactions) the signed transaction and its hash.
Every signed transaction must recover to the wallet and hash to the gateway's tx_hash; every
message and typed-data signature must recover to the wallet from the payload alone (eth-account
computes the digest itself, so the gateway's digest is checked too).

The offline exit path is checked the same way: `tests/it/device_cli.rs` writes what
`parapet wallet sign --offline` produced (both MPC parties run from the backup kit, no gateway)
to a second file, given as a further argument.

Usage: python verify.py signatures.json [offline.json ...]
"""

import json
import sys

from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_utils import keccak


def rsv(sig):
    r = int(sig["r"], 16)
    s = int(sig["s"], 16)
    v = 27 + (1 if sig["y_parity"] else 0)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])


def check(entry):
    kind = entry["kind"]
    address = entry["address"].lower()
    payload = entry["payload"]
    if kind == "personal_sign":
        got = Account.recover_message(encode_defunct(text=payload["message"]), signature=rsv(entry["signature"]))
    elif kind == "typed_data":
        data = payload["typed_data"]
        if isinstance(data, str):
            data = json.loads(data)
        got = Account.recover_message(encode_typed_data(full_message=data), signature=rsv(entry["signature"]))
    else:
        raw = bytes.fromhex(entry["signed_transaction"][2:])
        got = Account.recover_transaction(raw)
        tx_hash = "0x" + keccak(raw).hex()
        if tx_hash != entry["tx_hash"]:
            raise AssertionError(f"{kind}: tx hash {tx_hash} != gateway's {entry['tx_hash']}")
        # The first byte is the EIP-2718 type (legacy transactions start with an RLP list).
        expected_type = {"legacy": None, "eip2930": 1, "eip1559": 2, "eip4844": 3, "eip7702": 4}[kind]
        if expected_type is not None and raw[0] != expected_type:
            raise AssertionError(f"{kind}: type byte {raw[0]}")
    if got.lower() != address:
        raise AssertionError(f"{kind}: recovers to {got}, not the wallet {address}")
    print(f"ok {kind}: recovers to {address}")


def main():
    entries = json.load(open(sys.argv[1]))
    kinds = {e["kind"] for e in entries}
    needed = {"legacy", "eip2930", "eip1559", "eip4844", "eip7702", "personal_sign", "typed_data"}
    if kinds != needed:
        raise SystemExit(f"expected {sorted(needed)}, got {sorted(kinds)}")
    for e in entries:
        check(e)
    for extra in sys.argv[2:]:
        more = json.load(open(extra))
        if not more:
            raise SystemExit(f"{extra} holds no signatures")
        for e in more:
            check(e)


if __name__ == "__main__":
    main()
