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
	read := func(what, sql string, scan func(pgx.CollectableRow) error) {
		if err != nil {
			return
		}
		var rows pgx.Rows
		if rows, err = q.Query(ctx, sql); err != nil {
			err = fmt.Errorf("read %s: %w", what, err)
			return
		}
		if _, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (struct{}, error) { return struct{}{}, scan(row) }); err != nil {
			err = fmt.Errorf("read %s: %w", what, err)
		}
	}
	var id int64
	ref.teams = map[int64]string{}
	read("teams", sqlReferenceTeams, func(row pgx.CollectableRow) error {
		var ods string
		err := row.Scan(&id, &ods)
		ref.teams[id] = ods
		return err
	})
	ref.locations = map[int64]location{}
	read("locations", sqlReferenceLocations, func(row pgx.CollectableRow) error {
		var l location
		err := row.Scan(&id, &l.school, &l.urn)
		ref.locations[id] = l
		return err
	})
	ref.vaccines = map[int64]vaccine{}
	read("vaccines", sqlReferenceVaccines, func(row pgx.CollectableRow) error {
		var v vaccine
		err := row.Scan(&id, &v.procedureCode, &v.procedureTerm, &v.productCode, &v.productTerm, &v.manufacturer, &v.doseVolume)
		ref.vaccines[id] = v
		return err
	})
	ref.batches = map[int64]batch{}
	read("batches", sqlReferenceBatches, func(row pgx.CollectableRow) error {
		var b batch
		err := row.Scan(&id, &b.name, &b.expiry)
		ref.batches[id] = b
		return err
	})
	ref.vaccinators = map[int64]string{}
	read("vaccinators", sqlReferenceVaccinators, func(row pgx.CollectableRow) error {
		var name string
		err := row.Scan(&id, &name)
		ref.vaccinators[id] = name
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read the file's reference data: %w", err)
	}
	return ref, nil
}

// refs are a record's references, as sqlExportRows returns them; only the team is required.
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
