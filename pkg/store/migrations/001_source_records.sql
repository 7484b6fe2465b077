-- Source data: what a recording application (Mavis) keeps about a school vaccination.
-- In production these tables belong to that application; we ship them so the pipeline runs alone.

CREATE TABLE teams (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    ods_code    text NOT NULL UNIQUE
);

CREATE TABLE locations (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    type        text NOT NULL CHECK (type IN ('school', 'generic_clinic', 'community_clinic', 'gp_practice')),
    urn         text,                       -- school URN, when a school
    ods_code    text,                       -- clinic ODS code, when known
    postcode    text,
    team_id     bigint REFERENCES teams (id),
    CHECK (type <> 'school' OR urn IS NOT NULL)
);
CREATE UNIQUE INDEX locations_urn_key ON locations (urn) WHERE urn IS NOT NULL;

CREATE TABLE programmes (
    id          bigserial PRIMARY KEY,
    code        text NOT NULL UNIQUE CHECK (code ~ '^[A-Z][A-Z0-9_]*$'),   -- HPV, FLU, MENACWY, TD_IPV
    name        text NOT NULL
);

CREATE TABLE vaccines (
    id                      bigserial PRIMARY KEY,
    programme_id            bigint NOT NULL REFERENCES programmes (id),
    brand                   text NOT NULL,
    manufacturer            text NOT NULL,
    snomed_product_code     text NOT NULL,
    snomed_product_term     text NOT NULL,
    snomed_procedure_code   text NOT NULL,
    snomed_procedure_term   text NOT NULL,
    method                  text NOT NULL CHECK (method IN ('injection', 'nasal')),
    dose_volume_ml          numeric NOT NULL,
    discontinued            boolean NOT NULL DEFAULT false
);

CREATE TABLE batches (
    id          bigserial PRIMARY KEY,
    vaccine_id  bigint NOT NULL REFERENCES vaccines (id),
    name        text NOT NULL,
    expiry      date NOT NULL,
    team_id     bigint REFERENCES teams (id)
);

CREATE TABLE patients (
    id                  bigserial PRIMARY KEY,
    nhs_number          text CHECK (nhs_number ~ '^[0-9]{10}$'),
    given_name          text NOT NULL,
    family_name         text NOT NULL,
    date_of_birth       date NOT NULL,
    gender_code         smallint NOT NULL DEFAULT 0 CHECK (gender_code IN (0, 1, 2, 9)),
    address_postcode    text,
    school_id           bigint REFERENCES locations (id)
);

CREATE TABLE vaccinators (
    id          bigserial PRIMARY KEY,
    full_name   text NOT NULL
);

CREATE TABLE vaccination_records (
    id                  bigserial PRIMARY KEY,
    uuid                uuid NOT NULL UNIQUE,
    programme_id        bigint NOT NULL REFERENCES programmes (id),
    patient_id          bigint NOT NULL REFERENCES patients (id),
    team_id             bigint NOT NULL REFERENCES teams (id),       -- the organisation that gave it (SITE_CODE)
    location_id         bigint REFERENCES locations (id),            -- where; a school gives LOCATION_CODE its URN
    vaccine_id          bigint REFERENCES vaccines (id),
    batch_id            bigint REFERENCES batches (id),
    vaccinator_id       bigint REFERENCES vaccinators (id),          -- null when not known
    outcome             text NOT NULL CHECK (outcome IN ('administered', 'refused', 'not_well',
                            'contraindications', 'already_had', 'absent_from_school', 'absent_from_session')),
    delivery_site       text CHECK (delivery_site IN ('left_arm_upper_position', 'right_arm_upper_position',
                            'left_thigh', 'right_thigh', 'nose')),
    delivery_method     text CHECK (delivery_method IN ('intramuscular', 'subcutaneous', 'nasal_spray')),
    dose_sequence       integer CHECK (dose_sequence > 0),
    dose_volume_ml      numeric,
    performed_at        timestamptz NOT NULL,
    draft               boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    discarded_at        timestamptz
);
CREATE INDEX vaccination_records_programme_idx ON vaccination_records (programme_id);
CREATE INDEX vaccination_records_patient_idx ON vaccination_records (patient_id);
