-- Plan schema: MFA and executor flags leave admin, pairing codes become device registration codes,
-- commands record which models translated and ran them.
ALTER TABLE admin DROP COLUMN mfa_enabled;
ALTER TABLE admin DROP COLUMN executor_registered;

DROP TABLE IF EXISTS pairing_codes;

CREATE TABLE IF NOT EXISTS device_registration_codes (
    id TEXT PRIMARY KEY,
    code TEXT UNIQUE NOT NULL,
    created_by_device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    used INTEGER DEFAULT 0,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL
);

ALTER TABLE commands ADD COLUMN translator_model TEXT;
ALTER TABLE commands ADD COLUMN workload_model TEXT;
