-- Natural keys that let reference data be written idempotently (INSERT ... ON CONFLICT):
-- a dm+d product code names one vaccine, and a batch is one name and expiry of one vaccine.
CREATE UNIQUE INDEX vaccines_snomed_product_code_key ON vaccines (snomed_product_code);
CREATE UNIQUE INDEX batches_vaccine_name_expiry_key ON batches (vaccine_id, name, expiry);
