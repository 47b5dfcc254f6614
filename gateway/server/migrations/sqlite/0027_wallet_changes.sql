-- Every change to what a decision reads of a wallet (owner, labels, groups, frozen), in commit
-- order. Each gateway process keeps the wallet records in memory and follows this feed, so that
-- a decision reads no database; the triggers write it inside the changing transaction, so no
-- write path can forget it. SQLite has one writer at a time, so sequence order is commit order.
CREATE TABLE wallet_changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    address TEXT NOT NULL
);
CREATE TRIGGER wallets_created AFTER INSERT ON wallets BEGIN
    INSERT INTO wallet_changes (address) VALUES (NEW.address);
END;
CREATE TRIGGER wallets_changed AFTER UPDATE OF owner, labels, wallet_groups, frozen ON wallets BEGIN
    INSERT INTO wallet_changes (address) VALUES (NEW.address);
END;
CREATE TRIGGER wallets_deleted AFTER DELETE ON wallets BEGIN
    INSERT INTO wallet_changes (address) VALUES (OLD.address);
END;
