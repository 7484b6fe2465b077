package demodata

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// RecordSpec describes one vaccination record for AddRecord. Zero values take the
// defaults given per field, so a test names only what it cares about.
type RecordSpec struct {
	Programme string // programme code; default HPV
	UUID      string // default a random UUID

	// Patient. An existing patient with the same NHS number is reused as it is.
	NHSNumber   string    // default the next unused test-range number
	GivenName   string    // default "Test"
	FamilyName  string    // default "Patient"
	DateOfBirth time.Time // default 2012-01-01
	GenderCode  int16     // 0 not known (the default), 1, 2 or 9
	Postcode    string    // "" means none held

	TeamODS  string // default "U1"; the team is created when missing
	TeamName string // default "Test SAIS team <ODS>"
	// SchoolURN places the vaccination at that school (created when missing); empty means
	// the team's clinic.
	SchoolURN  string
	SchoolName string // default "Test School <URN>"

	Vaccinator string // full name; "" means not recorded (NULL)

	Outcome string // default administered
	// Vaccine, batch, site, method, dose: only filled for an administered record.
	VaccineProductCode string    // default the programme's first active vaccine
	BatchName          string    // default "TEST01"
	BatchExpiry        time.Time // default PerformedAt plus a year
	DeliverySite       string    // default left_arm_upper_position, or nose for a nasal vaccine
	DeliveryMethod     string    // default intramuscular, or nasal_spray for a nasal vaccine
	DoseSequence       int32     // default 1
	DoseVolumeML       string    // default the vaccine's, e.g. "0.5"

	PerformedAt time.Time  // default 2024-09-02 10:00 UK time
	CreatedAt   time.Time  // default PerformedAt
	UpdatedAt   time.Time  // default CreatedAt
	Draft       bool       //
	DiscardedAt *time.Time // nil: not discarded
}

// AddRecord inserts exactly the record spec describes, with whatever it refers to, and
// returns its id and UUID. The queue trigger makes it a candidate for the next export.
func AddRecord(ctx context.Context, pool *pgxpool.Pool, spec RecordSpec) (id int64, recordUUID string, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		id, recordUUID, err = addRecord(ctx, tx, spec)
		return err
	})
	if err != nil {
		return 0, "", fmt.Errorf("add record: %w", err)
	}
	return id, recordUUID, nil
}

// AddRecords is AddRecord for several records in one transaction: all are added, or none. It returns
// their ids in the order of specs.
func AddRecords(ctx context.Context, pool *pgxpool.Pool, specs []RecordSpec) ([]int64, error) {
	ids := make([]int64, 0, len(specs))
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		for _, spec := range specs {
			id, _, err := addRecord(ctx, tx, spec)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("add records: %w", err)
	}
	return ids, nil
}

func addRecord(ctx context.Context, tx pgx.Tx, s RecordSpec) (int64, string, error) {
	ref, err := upsertReference(ctx, tx)
	if err != nil {
		return 0, "", err
	}
	s = withDefaults(s)
	programmeID, ok := ref.Programmes[s.Programme]
	if !ok {
		return 0, "", fmt.Errorf("unknown programme %q", s.Programme)
	}

	var teamID int64
	if err := tx.QueryRow(ctx, `
		INSERT INTO teams (name, ods_code) VALUES ($1, $2)
		ON CONFLICT (ods_code) DO UPDATE SET name = teams.name RETURNING id`, s.TeamName, s.TeamODS).Scan(&teamID); err != nil {
		return 0, "", fmt.Errorf("ensure team %s: %w", s.TeamODS, err)
	}
	var locationID int64
	if s.SchoolURN != "" {
		if err := tx.QueryRow(ctx, `
			INSERT INTO locations (name, type, urn, team_id) VALUES ($1, 'school', $2, $3)
			ON CONFLICT (urn) WHERE urn IS NOT NULL DO UPDATE SET urn = EXCLUDED.urn
			RETURNING id`, s.SchoolName, s.SchoolURN, teamID).Scan(&locationID); err != nil {
			return 0, "", fmt.Errorf("ensure school %s: %w", s.SchoolURN, err)
		}
	} else if locationID, err = ensureClinic(ctx, tx, s.TeamName+" Clinic", "generic_clinic", s.TeamODS, "", teamID); err != nil {
		return 0, "", err
	}

	patientID, err := ensurePatient(ctx, tx, s)
	if err != nil {
		return 0, "", err
	}
	var vaccinatorID any
	if s.Vaccinator != "" {
		if vaccinatorID, err = ensureVaccinator(ctx, tx, s.Vaccinator); err != nil {
			return 0, "", err
		}
	}

	var vaccineID, batchID, site, method, doseSeq, volume any
	if s.Outcome == "administered" {
		v, ok := vaccineByCode(s.VaccineProductCode)
		if !ok {
			return 0, "", fmt.Errorf("unknown vaccine product %q", s.VaccineProductCode)
		}
		vid := ref.Vaccines[v.ProductCode]
		bid, err := ensureBatch(ctx, tx, vid, s.BatchName, s.BatchExpiry, teamID)
		if err != nil {
			return 0, "", err
		}
		vaccineID, batchID, site, method, doseSeq, volume = vid, bid, s.DeliverySite, s.DeliveryMethod, s.DoseSequence, s.DoseVolumeML
	}
	var discarded any
	if s.DiscardedAt != nil {
		discarded = *s.DiscardedAt
	}

	var id int64
	err = tx.QueryRow(ctx, `
		INSERT INTO vaccination_records (uuid, programme_id, patient_id, team_id, location_id, vaccine_id, batch_id,
			vaccinator_id, outcome, delivery_site, delivery_method, dose_sequence, dose_volume_ml, performed_at, draft,
			created_at, updated_at, discarded_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::numeric, $14, $15, $16, $17, $18)
		RETURNING id`,
		s.UUID, programmeID, patientID, teamID, locationID, vaccineID, batchID, vaccinatorID, s.Outcome, site, method,
		doseSeq, volume, s.PerformedAt, s.Draft, s.CreatedAt, s.UpdatedAt, discarded).Scan(&id)
	if err != nil {
		return 0, "", fmt.Errorf("insert vaccination record %s: %w", s.UUID, err)
	}
	return id, s.UUID, nil
}

func ensurePatient(ctx context.Context, tx pgx.Tx, s RecordSpec) (int64, error) {
	var postcode any
	if s.Postcode != "" {
		postcode = s.Postcode
	}
	var id int64
	err := tx.QueryRow(ctx, `
		WITH found AS (SELECT id FROM patients WHERE nhs_number = $1 ORDER BY id LIMIT 1),
		     made AS (INSERT INTO patients (nhs_number, given_name, family_name, date_of_birth, gender_code, address_postcode)
		              SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM found) RETURNING id)
		SELECT id FROM found UNION ALL SELECT id FROM made`,
		s.NHSNumber, s.GivenName, s.FamilyName, pgDate(s.DateOfBirth), s.GenderCode, postcode).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("ensure patient: %w", err)
	}
	return id, nil
}

func withDefaults(s RecordSpec) RecordSpec {
	if s.Programme == "" {
		s.Programme = "HPV"
	}
	if s.UUID == "" {
		s.UUID = uuid.NewString()
	}
	if s.NHSNumber == "" {
		// A random position: tests adding several records get distinct patients.
		s.NHSNumber = NewNHSNumbers(uint64(uuid.New().ID())).Next()
	}
	if s.GivenName == "" {
		s.GivenName = "Test"
	}
	if s.FamilyName == "" {
		s.FamilyName = "Patient"
	}
	if s.DateOfBirth.IsZero() {
		s.DateOfBirth = time.Date(2012, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if s.TeamODS == "" {
		s.TeamODS = "U1"
	}
	if s.TeamName == "" {
		s.TeamName = "Test SAIS team " + s.TeamODS
	}
	if s.SchoolURN != "" && s.SchoolName == "" {
		s.SchoolName = "Test School " + s.SchoolURN
	}
	if s.Outcome == "" {
		s.Outcome = "administered"
	}
	if s.PerformedAt.IsZero() {
		s.PerformedAt = time.Date(2024, 9, 2, 10, 0, 0, 0, london)
	}
	if s.CreatedAt.IsZero() {
		s.CreatedAt = s.PerformedAt
	}
	if s.UpdatedAt.IsZero() {
		s.UpdatedAt = s.CreatedAt
	}
	if s.Outcome != "administered" {
		return s
	}
	if s.VaccineProductCode == "" {
		v, _ := defaultVaccine(s.Programme)
		s.VaccineProductCode = v.ProductCode
	}
	v, _ := vaccineByCode(s.VaccineProductCode)
	if s.BatchName == "" {
		s.BatchName = "TEST01"
	}
	if s.BatchExpiry.IsZero() {
		s.BatchExpiry = s.PerformedAt.AddDate(1, 0, 0)
	}
	nasal := v.Method == "nasal"
	if s.DeliverySite == "" {
		s.DeliverySite = "left_arm_upper_position"
		if nasal {
			s.DeliverySite = "nose"
		}
	}
	if s.DeliveryMethod == "" {
		s.DeliveryMethod = "intramuscular"
		if nasal {
			s.DeliveryMethod = "nasal_spray"
		}
	}
	if s.DoseSequence == 0 {
		s.DoseSequence = 1
	}
	if s.DoseVolumeML == "" {
		s.DoseVolumeML = v.DoseVolumeML
	}
	return s
}

// GoldenRecord is the record behind the real DPS row in spec/dps-csv.md, ready for
// AddRecord: the producer's golden test inserts it and expects that exact line.
func GoldenRecord() RecordSpec {
	return RecordSpec{
		Programme:          "HPV",
		UUID:               "496e37d8-d1ab-4e12-a3a3-9c2e136a0504",
		NHSNumber:          "9992686766",
		GivenName:          "Brenton",
		FamilyName:         "Waters",
		DateOfBirth:        time.Date(2012, 8, 18, 0, 0, 0, 0, time.UTC),
		GenderCode:         0,
		Postcode:           "UC0W 0JL",
		TeamODS:            "U1",
		SchoolURN:          "123456",
		VaccineProductCode: "33493111000001108",
		BatchName:          "CD5472",
		BatchExpiry:        time.Date(2024, 9, 30, 0, 0, 0, 0, time.UTC),
		DeliverySite:       "left_arm_upper_position",
		DeliveryMethod:     "intramuscular",
		DoseSequence:       1,
		DoseVolumeML:       "0.5",
		PerformedAt:        time.Date(2023, 6, 9, 0, 0, 0, 0, london),
		CreatedAt:          time.Date(2024, 8, 21, 12, 0, 0, 0, london),
	}
}
