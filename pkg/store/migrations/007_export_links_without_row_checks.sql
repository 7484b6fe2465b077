-- An export links every record it carries: a first export of a year's backlog writes hundreds of
-- thousands of dps_export_records rows in one statement. Their two foreign keys were checked one row at
-- a time (a query and a tuple lock on the referenced row per link: 85% of the linking time, more than
-- building the whole file). The export reads every record it links in the same transaction and creates
-- the export row itself, so the checks only ever guarded against deletes. The same guarantee is kept at
-- the other end, where it costs one index probe per deleted row, and deletes are rare: a record or an
-- export that dps_export_records names cannot be deleted (SQLSTATE 23503, as with the foreign key).
ALTER TABLE dps_export_records
    DROP CONSTRAINT dps_export_records_export_id_fkey,
    DROP CONSTRAINT dps_export_records_vaccination_record_id_fkey;

CREATE FUNCTION dps_refuse_delete_of_exported_record() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM dps_export_records WHERE vaccination_record_id = OLD.id) THEN
        RAISE EXCEPTION 'vaccination record % has been exported to DPS and cannot be deleted; discard it instead', OLD.uuid
            USING ERRCODE = 'foreign_key_violation', TABLE = 'dps_export_records';
    END IF;
    RETURN OLD;
END;
$$;

CREATE TRIGGER vaccination_records_dps_exported
    BEFORE DELETE ON vaccination_records
    FOR EACH ROW EXECUTE FUNCTION dps_refuse_delete_of_exported_record();

CREATE FUNCTION dps_refuse_delete_of_export_with_records() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM dps_export_records WHERE export_id = OLD.id) THEN
        RAISE EXCEPTION 'export % carries records and cannot be deleted', OLD.id
            USING ERRCODE = 'foreign_key_violation', TABLE = 'dps_export_records';
    END IF;
    RETURN OLD;
END;
$$;

CREATE TRIGGER dps_exports_records_kept
    BEFORE DELETE ON dps_exports
    FOR EACH ROW EXECUTE FUNCTION dps_refuse_delete_of_export_with_records();
