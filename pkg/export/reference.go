package export

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/nhs-dps/dps-pipeline/pkg/dps"
)

// reference is the small tables a file's rows take columns from, by id: teams, locations, vaccines,
// batches and vaccinators (sqlReference*). A few hundred rows in a school service; tens of thousands
// at most in any, a few MB.
type reference struct {
	teams       map[int64]string // ODS code
	locations   map[int64]location
	vaccines    map[int64]vaccine
	batches     map[int64]batch
	vaccinators map[int64]string // full name
}

type location struct {
	school bool
	urn    string
}

type vaccine struct {
	procedureCode, procedureTerm, productCode, productTerm, manufacturer, doseVolume string
}

type batch struct {
	name   string
	expiry time.Time
}

// readReference reads the reference in q's transaction.
func readReference(ctx context.Context, q pgx.Tx) (*reference, error) {
	ref := &reference{}
	var err error
	if ref.teams, err = readTable(ctx, q, "teams", sqlReferenceTeams, func(row pgx.Row) (id int64, ods string, err error) {
		err = row.Scan(&id, &ods)
		return
	}); err != nil {
		return nil, err
	}
	if ref.locations, err = readTable(ctx, q, "locations", sqlReferenceLocations, func(row pgx.Row) (id int64, l location, err error) {
		err = row.Scan(&id, &l.school, &l.urn)
		return
	}); err != nil {
		return nil, err
	}
	if ref.vaccines, err = readTable(ctx, q, "vaccines", sqlReferenceVaccines, func(row pgx.Row) (id int64, v vaccine, err error) {
		err = row.Scan(&id, &v.procedureCode, &v.procedureTerm, &v.productCode, &v.productTerm, &v.manufacturer, &v.doseVolume)
		return
	}); err != nil {
		return nil, err
	}
	if ref.batches, err = readTable(ctx, q, "batches", sqlReferenceBatches, func(row pgx.Row) (id int64, b batch, err error) {
		err = row.Scan(&id, &b.name, &b.expiry)
		return
	}); err != nil {
		return nil, err
	}
	if ref.vaccinators, err = readTable(ctx, q, "vaccinators", sqlReferenceVaccinators, func(row pgx.Row) (id int64, name string, err error) {
		err = row.Scan(&id, &name)
		return
	}); err != nil {
		return nil, err
	}
	return ref, nil
}

// readTable reads one table of the reference into a map by id; scan reads a row's id and value.
func readTable[V any](ctx context.Context, q pgx.Tx, what, sql string, scan func(pgx.Row) (int64, V, error)) (map[int64]V, error) {
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("read the file's reference data: %s: %w", what, err)
	}
	defer rows.Close()
	m := map[int64]V{}
	for rows.Next() {
		id, v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("read the file's reference data: %s: %w", what, err)
		}
		m[id] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the file's reference data: %s: %w", what, err)
	}
	return m, nil
}

// refs are a record's references, as the file's statements return them; only the team is required.
type refs struct {
	team                                 int64
	location, vaccine, batch, vaccinator pgtype.Int8
	doseVolume                           pgtype.Text // the record's own
}

// complete fills the columns of rec that come from the reference, as exportRowsFrom's joins would: a
// reference that is not set leaves its columns empty (the row rules refuse a row that needs them). A
// reference that is set but not in the reference is an error: the record changed under the export in a
// way its version does not show, and a retry reads it again.
func (ref *reference) complete(rec *dps.Record, r refs) error {
	missing := func(what string, id int64) error {
		return fmt.Errorf("record %s references %s %d, which was not there when the file began; retry", rec.UUID, what, id)
	}
	ods, ok := ref.teams[r.team]
	if !ok {
		return missing("team", r.team)
	}
	rec.SiteODSCode = ods
	rec.SchoolURN, rec.LocationODSCode = "", ods
	if r.location.Valid {
		l, ok := ref.locations[r.location.Int64]
		if !ok {
			return missing("location", r.location.Int64)
		}
		if l.school {
			rec.SchoolURN, rec.LocationODSCode = l.urn, ""
		}
	}
	var v vaccine
	if r.vaccine.Valid {
		if v, ok = ref.vaccines[r.vaccine.Int64]; !ok {
			return missing("vaccine", r.vaccine.Int64)
		}
	}
	rec.ProcedureCode, rec.ProcedureTerm = v.procedureCode, v.procedureTerm
	rec.ProductCode, rec.ProductTerm, rec.Manufacturer = v.productCode, v.productTerm, v.manufacturer
	rec.DoseAmount = v.doseVolume
	if r.doseVolume.Valid {
		rec.DoseAmount = r.doseVolume.String
	}
	var b batch
	if r.batch.Valid {
		if b, ok = ref.batches[r.batch.Int64]; !ok {
			return missing("batch", r.batch.Int64)
		}
	}
	rec.BatchName, rec.BatchExpiry = b.name, b.expiry
	rec.VaccinatorFullName = ""
	if r.vaccinator.Valid {
		if rec.VaccinatorFullName, ok = ref.vaccinators[r.vaccinator.Int64]; !ok {
			return missing("vaccinator", r.vaccinator.Int64)
		}
	}
	return nil
}
