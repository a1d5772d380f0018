"""A migration that takes a few seconds on purpose, so that tests can kill or race a runner in it."""

SLOW_ROWS = 2_500_000

SLOW_MIGRATION = f"""ALTER TABLE commands ADD COLUMN priority INTEGER;
UPDATE commands SET priority = 1;
CREATE TABLE big (x INTEGER);
INSERT INTO big SELECT x FROM (
    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {SLOW_ROWS})
    SELECT x FROM c
);
"""
