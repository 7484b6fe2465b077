-- An export decides each queued record from two facts about the record (its version, and whether it
-- may be sent at all) and from its last carriage. Reading the two facts from vaccination_records cost a
-- random probe of the records table per candidate: on a nightly export of a large database, about a
-- third of the time spent deciding. The queue row now carries them. They are written with the queue row
-- by the transaction that changed the record (the queue trigger, or whoever queues it), so any snapshot
-- that sees a queue row sees the record as that row describes it.

-- Whether a record may be sent to DPS at all: not a draft, administered, not discarded. This is the one
-- place the rule is written.
CREATE FUNCTION dps_record_eligible(r vaccination_records) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT NOT r.draft AND r.outcome = 'administered' AND r.discarded_at IS NULL
$$;

ALTER TABLE dps_pending_records
    ADD COLUMN record_updated_at timestamptz,
    ADD COLUMN record_eligible boolean;

-- The records already queued (the ALTER TABLE above keeps writers out until this migration commits).
UPDATE dps_pending_records p
SET record_updated_at = r.updated_at, record_eligible = dps_record_eligible(r)
FROM vaccination_records r WHERE r.id = p.vaccination_record_id;

ALTER TABLE dps_pending_records
    ALTER COLUMN record_updated_at SET NOT NULL,
    ALTER COLUMN record_eligible SET NOT NULL;

-- Every way of queueing a record (the queue trigger on vaccination_records, a failed export's release,
-- a refused row queued again) fills the two columns from the record as this transaction sees it.
CREATE FUNCTION dps_pending_record_state() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT r.updated_at, dps_record_eligible(r)
    INTO NEW.record_updated_at, NEW.record_eligible
    FROM vaccination_records r WHERE r.id = NEW.vaccination_record_id;
    RETURN NEW;
END;
$$;

CREATE TRIGGER dps_pending_records_record_state
    BEFORE INSERT OR UPDATE ON dps_pending_records
    FOR EACH ROW EXECUTE FUNCTION dps_pending_record_state();
