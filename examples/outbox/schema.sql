-- The outbox Spout drains, and the trigger that wakes it on insert.
-- Load once: psql "$DATABASE_URL" -f examples/outbox/schema.sql
CREATE TABLE IF NOT EXISTS orders (
    id bigserial PRIMARY KEY,
    customer text NOT NULL,
    total numeric NOT NULL
);

CREATE TABLE IF NOT EXISTS spout_outbox (
    id bigserial PRIMARY KEY,          -- the message identity: never reused
    payload jsonb NOT NULL             -- a /publish event: {"topic","type","data"}
);

CREATE OR REPLACE FUNCTION spout_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_notify('spout_outbox', ''); RETURN NULL; END $$;

DROP TRIGGER IF EXISTS spout_outbox_notify ON spout_outbox;
CREATE TRIGGER spout_outbox_notify AFTER INSERT ON spout_outbox
  FOR EACH STATEMENT EXECUTE FUNCTION spout_outbox_notify();
