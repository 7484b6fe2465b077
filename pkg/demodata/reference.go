package demodata

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Programme is a vaccination programme as the pipeline knows it.
type Programme struct {
	Code string // HPV, FLU, MENACWY, TD_IPV
	Name string
}

// Programmes are the school programmes exported to DPS.
var Programmes = []Programme{
	{Code: "HPV", Name: "HPV"},
	{Code: "FLU", Name: "Flu"},
	{Code: "MENACWY", Name: "MenACWY"},
	{Code: "TD_IPV", Name: "Td/IPV"},
}

// Vaccine is a vaccine product with its dm+d product code and the SNOMED procedure its
// first dose is recorded as.
type Vaccine struct {
	Programme     string
	Brand         string
	Manufacturer  string
	ProductCode   string
	ProductTerm   string
	ProcedureCode string
	ProcedureTerm string
	Method        string // injection or nasal
	DoseVolumeML  string // as held, e.g. "0.5"
	Discontinued  bool
}

// SNOMED procedures. Flu has one per method and dose; the vaccines table holds one per
// vaccine, so flu vaccines carry their first-dose procedure and the seed gives flu
// records dose 1 only.
const (
	procedureHPV         = "761841000"
	procedureHPVTerm     = "Administration of vaccine product containing only Human papillomavirus antigen (procedure)"
	procedureFluNasal    = "884861000000100"
	procedureFluNasalT   = "Administration of first intranasal seasonal influenza vaccination (procedure)"
	procedureFluInject   = "985151000000100"
	procedureFluInjectT  = "Administration of first inactivated seasonal influenza vaccination (procedure)"
	procedureMenACWY     = "871874000"
	procedureMenACWYTerm = "Administration of vaccine product containing only Neisseria meningitidis serogroup A, C, W135 and Y antigens (procedure)"
	procedureTdIPV       = "866186002"
	procedureTdIPVTerm   = "Administration of vaccine product containing only Clostridium tetani and Corynebacterium diphtheriae and Human poliovirus antigens (procedure)"
)

// Vaccines are the products of the four programmes, with the codes and terms used by
// the NHS recording application (Manage vaccinations in schools). The first active
// vaccine of a programme is its default.
var Vaccines = []Vaccine{
	{"HPV", "Gardasil 9", "Merck Sharp & Dohme", "33493111000001108",
		"Gardasil 9 vaccine suspension for injection 0.5ml pre-filled syringes (Merck Sharp & Dohme (UK) Ltd) (product)",
		procedureHPV, procedureHPVTerm, "injection", "0.5", false},
	{"HPV", "Gardasil", "Merck Sharp & Dohme", "10880211000001104",
		"Gardasil vaccine suspension for injection 0.5ml pre-filled syringes (Merck Sharp & Dohme (UK) Ltd) (product)",
		procedureHPV, procedureHPVTerm, "injection", "0.5", true},
	{"HPV", "Cervarix", "GlaxoSmithKline", "12238911000001100",
		"Cervarix vaccine suspension for injection 0.5ml pre-filled syringes (GlaxoSmithKline) (product)",
		procedureHPV, procedureHPVTerm, "injection", "0.5", true},
	{"FLU", "Fluenz", "AstraZeneca", "43208811000001106",
		"Fluenz (trivalent) vaccine nasal suspension 0.2ml unit dose (AstraZeneca UK Ltd) (product)",
		procedureFluNasal, procedureFluNasalT, "nasal", "0.2", false},
	{"FLU", "Cell-based Trivalent Influenza Vaccine Seqirus", "Seqirus", "43207411000001105",
		"Cell-based trivalent influenza vaccine (surface antigen, inactivated) suspension for injection 0.5ml pre-filled syringes (Seqirus UK Ltd)",
		procedureFluInject, procedureFluInjectT, "injection", "0.5", false},
	{"FLU", "Vaxigrip", "Sanofi", "45175511000001104",
		"Vaxigrip Trivalent influenza vaccine (split virion, inactivated) suspension for injection 0.5ml pre-filled syringes (Sanofi)",
		procedureFluInject, procedureFluInjectT, "injection", "0.5", false},
	{"FLU", "Viatris", "Viatris", "45354911000001100",
		"Influenza TIV MYL vaccine suspension for injection 0.5ml pre-filled syringes (Viatris UK Healthcare Ltd)",
		procedureFluInject, procedureFluInjectT, "injection", "0.5", false},
	{"MENACWY", "MenQuadfi", "Sanofi", "39779611000001104",
		"MenQuadfi vaccine solution for injection 0.5ml vials (Sanofi) (product)",
		procedureMenACWY, procedureMenACWYTerm, "injection", "0.5", false},
	{"MENACWY", "Nimenrix", "Pfizer", "20517811000001104",
		"Nimenrix vaccine powder and solvent for solution for injection 0.5ml pre-filled syringes (GlaxoSmithKline UK Ltd) (product)",
		procedureMenACWY, procedureMenACWYTerm, "injection", "0.5", false},
	{"MENACWY", "Menveo", "GlaxoSmithKline", "17188711000001105",
		"Menveo vaccine powder and solvent for solution for injection 0.5ml vials (Novartis Vaccines and Diagnostics Ltd) (product)",
		procedureMenACWY, procedureMenACWYTerm, "injection", "0.5", false},
	{"TD_IPV", "Revaxis", "Sanofi", "7374511000001107",
		"Revaxis vaccine suspension for injection 0.5ml pre-filled syringes (Sanofi) 1 pre-filled disposable injection (product)",
		procedureTdIPV, procedureTdIPVTerm, "injection", "0.5", false},
}

// Ref holds the database ids of the reference data.
type Ref struct {
	Programmes map[string]int64 // by programme code
	Vaccines   map[string]int64 // by SNOMED product code
}

// Programme returns the id of the programme with the given code, or 0.
func (r Ref) Programme(code string) int64 { return r.Programmes[code] }

// Reference makes sure the programmes and vaccines exist, unchanged from this package's
// definitions, and returns their ids. It is idempotent and safe to call concurrently.
func Reference(ctx context.Context, pool *pgxpool.Pool) (Ref, error) {
	var ref Ref
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		ref, err = upsertReference(ctx, tx)
		return err
	})
	if err != nil {
		return Ref{}, err
	}
	return ref, nil
}

// referenceLock serialises writers of demo data so that concurrent calls do not
// insert the same world twice (several tables have no natural unique key).
const referenceLock = int64(0x64707364656d6f) // "dpsdemo"

func upsertReference(ctx context.Context, tx pgx.Tx) (Ref, error) {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", referenceLock); err != nil {
		return Ref{}, fmt.Errorf("lock demo data: %w", err)
	}
	ref := Ref{Programmes: map[string]int64{}, Vaccines: map[string]int64{}}
	for _, p := range Programmes {
		var id int64
		err := tx.QueryRow(ctx, `
			INSERT INTO programmes (code, name) VALUES ($1, $2)
			ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name
			RETURNING id`, p.Code, p.Name).Scan(&id)
		if err != nil {
			return Ref{}, fmt.Errorf("upsert programme %s: %w", p.Code, err)
		}
		ref.Programmes[p.Code] = id
	}
	for _, v := range Vaccines {
		var id int64
		err := tx.QueryRow(ctx, `
			INSERT INTO vaccines (programme_id, brand, manufacturer, snomed_product_code, snomed_product_term,
			                      snomed_procedure_code, snomed_procedure_term, method, dose_volume_ml, discontinued)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::numeric, $10)
			ON CONFLICT (snomed_product_code) DO UPDATE SET
				programme_id = EXCLUDED.programme_id, brand = EXCLUDED.brand, manufacturer = EXCLUDED.manufacturer,
				snomed_product_term = EXCLUDED.snomed_product_term, snomed_procedure_code = EXCLUDED.snomed_procedure_code,
				snomed_procedure_term = EXCLUDED.snomed_procedure_term, method = EXCLUDED.method,
				dose_volume_ml = EXCLUDED.dose_volume_ml, discontinued = EXCLUDED.discontinued
			RETURNING id`,
			ref.Programmes[v.Programme], v.Brand, v.Manufacturer, v.ProductCode, v.ProductTerm,
			v.ProcedureCode, v.ProcedureTerm, v.Method, v.DoseVolumeML, v.Discontinued).Scan(&id)
		if err != nil {
			return Ref{}, fmt.Errorf("upsert vaccine %s: %w", v.Brand, err)
		}
		ref.Vaccines[v.ProductCode] = id
	}
	return ref, nil
}

// defaultVaccine is the programme's first active vaccine.
func defaultVaccine(programme string) (Vaccine, bool) {
	for _, v := range Vaccines {
		if v.Programme == programme && !v.Discontinued {
			return v, true
		}
	}
	return Vaccine{}, false
}

func vaccineByCode(code string) (Vaccine, bool) {
	for _, v := range Vaccines {
		if v.ProductCode == code {
			return v, true
		}
	}
	return Vaccine{}, false
}
