package export

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
)

// TestSameRequestTwoProducers: two producers (separate pools) given the same request at the same moment
// make one export, and both report it.
func TestSameRequestTwoProducers(t *testing.T) {
	e := newEnv(t)
	first, second := e.exporter(e.newPool()), e.exporter(e.newPool())
	for i := range 10 {
		e.addRecord(demodata.RecordSpec{Programme: "MENACWY"})
		req := request(AllProgrammes)
		var wg sync.WaitGroup
		results := make([][]Result, 2)
		errs := make([]error, 2)
		start := make(chan struct{})
		for j, x := range []*Exporter{first, second} {
			wg.Go(func() {
				<-start
				results[j], errs[j] = x.Export(t.Context(), req)
			})
		}
		close(start)
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("iteration %d: %v", i, err)
			}
		}
		a, b := created(results[0]), created(results[1])
		if len(a) != 1 || len(b) != 1 || a[0].ExportID != b[0].ExportID {
			t.Fatalf("iteration %d: producers report %+v and %+v, want the same single export", i, results[0], results[1])
		}
		if a[0].Status == b[0].Status {
			t.Fatalf("iteration %d: both producers say %s; one should have found the other's export", i, a[0].Status)
		}
		if n := e.count(`SELECT count(*) FROM dps_exports WHERE request_id = $1`, req.ID); n != 1 {
			t.Fatalf("iteration %d: %d exports for one request", i, n)
		}
	}
	if n := e.count(`SELECT count(*) FROM dps_outbox WHERE subject = 'dps.export.ready'`); n != 10 {
		t.Fatalf("%d ready messages enqueued for 10 exports", n)
	}
}

// created keeps the results that name an export.
func created(rs []Result) []Result {
	var out []Result
	for _, r := range rs {
		if r.ExportID != "" {
			out = append(out, r)
		}
	}
	return out
}

// TestDifferentRequestsRace: different requests racing for one programme, while the records keep
// changing, never put one record version in two live exports, and lose no change.
func TestDifferentRequestsRace(t *testing.T) {
	e := newEnv(t)
	producers := []*Exporter{e.exporter(e.newPool()), e.exporter(e.newPool()), e.exporter(e.newPool())}
	writer := e.newPool()
	templateID, _ := e.addRecord(demodata.RecordSpec{Programme: "TD_IPV"})
	ctx := t.Context()
	iterations := 50
	if testing.Short() {
		iterations = 10
	}
	for i := range iterations {
		// Ten fresh records copied from the template.
		e.exec(`
			INSERT INTO vaccination_records (uuid, programme_id, patient_id, team_id, location_id, vaccine_id, batch_id,
				vaccinator_id, outcome, delivery_site, delivery_method, dose_sequence, dose_volume_ml, performed_at)
			SELECT gen_random_uuid(), programme_id, patient_id, team_id, location_id, vaccine_id, batch_id,
				vaccinator_id, outcome, delivery_site, delivery_method, dose_sequence, dose_volume_ml, performed_at + g * interval '1 minute'
			FROM vaccination_records, generate_series(1, 10) g WHERE id = $1`, templateID)
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make(chan error, len(producers)+1)
		for _, p := range producers {
			wg.Go(func() {
				<-start
				_, err := p.Export(ctx, request("TD_IPV"))
				errs <- err
			})
		}
		// Meanwhile the recording application changes some records and discards others.
		wg.Go(func() {
			<-start
			_, err := writer.Exec(ctx, `
				UPDATE vaccination_records SET updated_at = clock_timestamp(),
					discarded_at = CASE WHEN random() < 0.2 THEN clock_timestamp() END
				WHERE id IN (SELECT id FROM vaccination_records ORDER BY random() LIMIT 5)`)
			errs <- err
		})
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("iteration %d: %v", i, err)
			}
		}
		if n := e.count(`
			SELECT count(*) FROM (
				SELECT 1 FROM dps_export_records er JOIN dps_exports x ON x.id = er.export_id
				WHERE x.status <> 'failed'
				GROUP BY er.vaccination_record_id, er.record_updated_at HAVING count(*) > 1) d`); n != 0 {
			t.Fatalf("iteration %d: %d record versions are in two live exports", i, n)
		}
	}
	// Once the writes stop, one more export brings every record's last carriage up to date.
	if _, err := producers[0].Export(ctx, request("TD_IPV")); err != nil {
		t.Fatal(err)
	}
	stale := e.count(`
		SELECT count(*) FROM vaccination_records r
		LEFT JOIN LATERAL (
			SELECT er.action, er.record_updated_at FROM dps_export_records er JOIN dps_exports x ON x.id = er.export_id
			WHERE er.vaccination_record_id = r.id ORDER BY x.created_at DESC LIMIT 1) c ON true
		WHERE (r.discarded_at IS NULL AND (c.action IS NULL OR c.action = 'delete' OR c.record_updated_at <> r.updated_at))
		   OR (r.discarded_at IS NOT NULL AND c.action IS DISTINCT FROM 'delete' AND c.action IS NOT NULL)`)
	if stale != 0 {
		t.Fatalf("%d records are not carried in their latest state", stale)
	}
	total := e.count(`SELECT count(*) FROM vaccination_records`)
	t.Log(fmt.Sprintf("%d records, %d exports, %d links", total,
		e.count(`SELECT count(*) FROM dps_exports`), e.count(`SELECT count(*) FROM dps_export_records`)))
	_ = time.Second
}
