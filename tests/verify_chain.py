#!/usr/bin/env python3
"""Verify a Parapet audit export (NDJSON, `parapet audit export`) with the standard library only.
Each line: {"seq": "<decimal>", "prev_hash": "<hex>", "hash": "<hex>", "canonical": "<text>", ...};
hash = SHA-256(bytes(prev_hash) || UTF-8(canonical)); seq 1 has 32 zero bytes as prev_hash."""
import hashlib, json, sys

prev_seq, prev_hash, count = None, None, 0
for n, line in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    if not line.strip():
        continue
    row = json.loads(line)
    seq, canonical = int(row["seq"]), row["canonical"]
    if json.loads(canonical)["seq"] != row["seq"]:
        sys.exit(f"FAIL seq {seq}: the event's own seq differs (line {n})")
    if prev_seq is None and seq == 1 and row["prev_hash"] != "00" * 32:
        sys.exit("FAIL seq 1: prev_hash is not 32 zero bytes")
    if prev_seq is not None and (seq != prev_seq + 1 or row["prev_hash"] != prev_hash):
        sys.exit(f"FAIL seq {seq}: does not follow seq {prev_seq} (deleted, inserted or swapped)")
    digest = hashlib.sha256(bytes.fromhex(row["prev_hash"]) + canonical.encode("utf-8")).hexdigest()
    if digest != row["hash"]:
        sys.exit(f"FAIL seq {seq}: hash does not match the event (edited)")
    prev_seq, prev_hash, count = seq, row["hash"], count + 1
print(f"OK {count} events, last seq {prev_seq}, head {prev_hash}")
