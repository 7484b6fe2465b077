-- What the receiver (NHS England's batch pipeline) demands of our files.

-- A file's name carries its time to the second, and the receiver refuses a name it has seen before, so
-- each export records the instant its name was made from. Under the programme's lock the next export
-- takes a later second than the last one, even when two exports fall within one second.
ALTER TABLE dps_exports ADD COLUMN file_time timestamptz;
CREATE INDEX dps_exports_programme_file_time_idx ON dps_exports (programme_id, file_time) WHERE file_time IS NOT NULL;
-- Names made before this migration (Vaccinations-PROGRAMME-DATE.csv) could repeat, which is why the
-- receiver refused them; names made from now on never do.
CREATE UNIQUE INDEX dps_exports_file_name_key ON dps_exports (filename) WHERE file_time IS NOT NULL;

-- Records the producer left out of a file because the receiver would refuse their row. Each stays
-- queued in dps_pending_records (so it goes out as soon as it is put right) and is listed here with the
-- rule it broke, until an export carries it or it no longer needs sending.
CREATE TABLE dps_refused_records (
    vaccination_record_id   bigint PRIMARY KEY REFERENCES vaccination_records (id),
    programme_id            bigint NOT NULL REFERENCES programmes (id),
    action                  text NOT NULL CHECK (action IN ('new', 'update', 'delete')),
    rule                    text NOT NULL,
    field                   text NOT NULL,
    reason                  text NOT NULL,
    first_refused_at        timestamptz NOT NULL DEFAULT now(),
    last_refused_at         timestamptz NOT NULL DEFAULT now(),
    times_refused           integer NOT NULL DEFAULT 1
);
CREATE INDEX dps_refused_records_programme_idx ON dps_refused_records (programme_id, vaccination_record_id);
