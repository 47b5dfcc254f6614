-- Rows at rest (docs/architecture.md §7): an event's canonical text is kept packed (a dictionary
-- number, then a Zstandard frame against that dictionary) in `packed`, and `canonical` is left
-- empty on such rows. Rows written before keep their text in `canonical` and no packing. The
-- chain is over the text either way; readers take `canonical` when it is not empty, else unpack.
ALTER TABLE audit_events ADD COLUMN packed bytea;
