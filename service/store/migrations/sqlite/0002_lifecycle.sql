-- Seal counts per key version, for rotation before the AES-GCM limit of about 2^32
-- seals with random 96-bit IVs (NIST SP 800-38D). The service counts seals in memory
-- and adds its counts here periodically and at shutdown, so the column lags the true
-- count by at most one flush interval per replica.
ALTER TABLE key_versions ADD COLUMN seal_count INTEGER NOT NULL DEFAULT 0
    CHECK (seal_count >= 0);
