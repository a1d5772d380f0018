-- One-time device bootstrap tokens.
CREATE TABLE IF NOT EXISTS bootstrap_devices (
    token_hash TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
