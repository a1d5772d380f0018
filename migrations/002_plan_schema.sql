-- Plan schema: pairing codes become device registration codes, and commands record which models
-- translated and ran them. admin.mfa_enabled and admin.executor_registered stay: the relayer's own
-- 002 keeps them as deprecated columns its code ignores, and the job must build the same schema.
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
