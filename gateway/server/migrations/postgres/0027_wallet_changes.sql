-- Every change to what a decision reads of a wallet (owner, labels, groups, frozen), in commit
-- order. Each gateway process keeps the wallet records in memory and follows this feed, so that
-- a decision reads no database; the trigger writes it inside the changing transaction, so no
-- write path can forget it.
CREATE TABLE wallet_changes (
    seq     BIGSERIAL PRIMARY KEY,
    address TEXT NOT NULL
);
CREATE FUNCTION parapet_wallet_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One writer of the feed at a time until commit ("parapet" and 2), so that sequence numbers
    -- commit in order: a reader that has seen n has seen every change numbered below n.
    PERFORM pg_advisory_xact_lock(8097879367811953666);
    IF TG_OP = 'DELETE' THEN
        INSERT INTO wallet_changes (address) VALUES (OLD.address);
    ELSE
        INSERT INTO wallet_changes (address) VALUES (NEW.address);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER wallets_changed AFTER INSERT OR DELETE OR UPDATE OF owner, labels, wallet_groups, frozen
    ON wallets FOR EACH ROW EXECUTE FUNCTION parapet_wallet_changed();
