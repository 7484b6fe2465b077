package demodata

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options say how much to seed and from which random stream.
type Options struct {
	Records int   // vaccination records to add
	Seed    int64 // same seed on the same database state → the same rows, UUIDs included
	// Now anchors dates: vaccinations fall in the year before it, batches expire after it.
	// The zero value means today (UTC midnight), which keeps a day's seeds identical.
	Now time.Time
}

// Summary counts what one Seed call added.
type Summary struct {
	Records    int
	Patients   int
	Exportable int // records a DPS export would carry: not draft, administered, not discarded
	Programmes map[string]ProgrammeSummary
}

// ProgrammeSummary counts one programme's records by why they are or are not exportable.
type ProgrammeSummary struct {
	Records         int
	Exportable      int
	Drafts          int
	NotAdministered int // outcome other than administered (refused, not_well, absent ...)
	Discarded       int
}

// Shares of the records the seed makes, in per mille; chosen to look like a school
// season: most vaccinations given, a tail of refusals, absences and unwell children,
// some drafts not yet completed and some records discarded as entered in error.
var (
	programmeWeights = []weighted{{"FLU", 450}, {"HPV", 250}, {"MENACWY", 150}, {"TD_IPV", 150}}
	outcomeWeights   = []weighted{
		{"administered", 850}, {"refused", 40}, {"not_well", 20}, {"contraindications", 10},
		{"already_had", 15}, {"absent_from_school", 30}, {"absent_from_session", 35},
	}
)

const (
	draftPerMille     = 30
	discardedPerMille = 20
	clinicPerMille    = 150 // given at a clinic rather than at school
	noVaccinatorPM    = 100 // performing professional not recorded
	updatedPerMille   = 100 // edited after it was first saved
)

type weighted struct {
	value  string
	weight int
}

func pick(r *rand.Rand, ws []weighted) string {
	n := r.IntN(1000)
	for _, w := range ws {
		if n < w.weight {
			return w.value
		}
		n -= w.weight
	}
	return ws[len(ws)-1].value
}

// Seed adds opts.Records vaccination records, with the patients they are for, over all
// four programmes, ensuring the reference data and the demo world first. Everything is
// written in one transaction with COPY, then the tables are vacuumed and analysed. The new
// records are queued for export in dps_pending_records exactly as the queue trigger would
// queue them.
//
// Output is a function of opts and the number of records already in the database, so
// the same seed on two fresh databases gives identical rows, and calling Seed again
// adds different records (new UUIDs, new NHS numbers) rather than colliding.
func Seed(ctx context.Context, pool *pgxpool.Pool, opts Options) (Summary, error) {
	if opts.Records < 0 {
		return Summary{}, fmt.Errorf("seed: records must not be negative, got %d", opts.Records)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now().UTC().Truncate(24 * time.Hour)
	}
	var sum Summary
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		sum, err = seed(ctx, tx, opts.Records, opts.Seed, now)
		return err
	})
	if err != nil {
		return Summary{}, fmt.Errorf("seed %d records: %w", opts.Records, err)
	}
	// A database that has held its records for a while has been through autovacuum: statistics for the
	// planner, hint bits set, the visibility map filled. Without this, whatever runs first after a large
	// seed plans against empty statistics and rewrites every page it reads to set hint bits.
	if _, err := pool.Exec(ctx, sqlSettle); err != nil {
		return Summary{}, fmt.Errorf("seed %d records: vacuum and analyse: %w", opts.Records, err)
	}
	return sum, nil
}

// sqlSettle vacuums and analyses every table Seed writes.
const sqlSettle = `VACUUM (ANALYZE) programmes, teams, locations, vaccines, batches, vaccinators, patients, vaccination_records, dps_pending_records`

func seed(ctx context.Context, tx pgx.Tx, records int, seedValue int64, now time.Time) (Summary, error) {
	ref, err := upsertReference(ctx, tx) // takes the demo data lock for the transaction
	if err != nil {
		return Summary{}, err
	}
	w, err := ensureWorld(ctx, tx, ref, now)
	if err != nil {
		return Summary{}, err
	}
	sum := Summary{Programmes: map[string]ProgrammeSummary{}}
	for _, p := range Programmes {
		sum.Programmes[p.Code] = ProgrammeSummary{}
	}
	if records == 0 {
		return sum, nil
	}

	// Nobody else may insert patients or records while ids are handed out below.
	if _, err := tx.Exec(ctx, "LOCK TABLE patients, vaccination_records IN SHARE ROW EXCLUSIVE MODE"); err != nil {
		return Summary{}, fmt.Errorf("lock tables: %w", err)
	}
	var existing int64
	var nhsStart uint64
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM vaccination_records").Scan(&existing); err != nil {
		return Summary{}, fmt.Errorf("count records: %w", err)
	}
	// Carry on after the furthest test number already used, recovering its position in the
	// fixed order from the stem (see TestNHSNumber).
	if err := tx.QueryRow(ctx, `
		SELECT coalesce(max(((substr(nhs_number, 4, 6)::bigint - $1 + $3) * $2) % $3) + 1, 0)
		FROM patients WHERE nhs_number LIKE '999%'`, stemOffset, stemInverse, stemCount).Scan(&nhsStart); err != nil {
		return Summary{}, fmt.Errorf("find next NHS number: %w", err)
	}

	// Each Seed call draws from its own stream: the caller's seed and how many records
	// came before it.
	r := rand.New(rand.NewPCG(uint64(seedValue), uint64(existing)))

	patientCount := max(1, records*5/8) // children have about 1.6 school vaccinations a year
	firstPatient, err := reserveIDs(ctx, tx, "patients", patientCount)
	if err != nil {
		return Summary{}, err
	}
	firstRecord, err := reserveIDs(ctx, tx, "vaccination_records", records)
	if err != nil {
		return Summary{}, err
	}

	replica, err := disableQueueTrigger(ctx, tx)
	if err != nil {
		return Summary{}, err
	}
	patients := makePatients(r, w, now, patientCount, nhsStart)
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"patients"},
		[]string{"id", "nhs_number", "given_name", "family_name", "date_of_birth", "gender_code", "address_postcode", "school_id"},
		patients.copySource(firstPatient)); err != nil {
		return Summary{}, fmt.Errorf("copy patients: %w", err)
	}
	sum.Patients = patientCount

	gen := &recordGenerator{r: r, ref: ref, world: w, patients: patients, now: now, sum: &sum,
		firstID: firstRecord, count: records}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"vaccination_records"}, recordColumns, gen); err != nil {
		return Summary{}, fmt.Errorf("copy vaccination records: %w", err)
	}
	// Queue the new records as the triggers would have (the queue row carries the record's version and
	// eligibility), in one statement.
	if _, err := tx.Exec(ctx, `
		INSERT INTO dps_pending_records (vaccination_record_id, programme_id, record_updated_at, record_eligible)
		SELECT id, programme_id, updated_at, dps_record_eligible(r) FROM vaccination_records r WHERE id BETWEEN $1 AND $2 ORDER BY id
		ON CONFLICT (vaccination_record_id) DO UPDATE
			SET programme_id = EXCLUDED.programme_id, queue_seq = EXCLUDED.queue_seq, queued_at = EXCLUDED.queued_at,
			    record_updated_at = EXCLUDED.record_updated_at, record_eligible = EXCLUDED.record_eligible`,
		firstRecord, firstRecord+int64(records)-1); err != nil {
		return Summary{}, fmt.Errorf("queue seeded records: %w", err)
	}
	if err := enableQueueTrigger(ctx, tx, replica); err != nil {
		return Summary{}, err
	}
	sum.Records = records
	return sum, nil
}

// disableQueueTrigger stops per-row triggers for the rest of this transaction, so that
// COPY is not slowed by a trigger call per record; the seed queues its records itself
// afterwards in one statement.
//
// As a superuser it sets session_replication_role to replica (SET LOCAL: this transaction
// only), which also skips the foreign key checks: the generator only writes ids it has
// just read or reserved, so they hold by construction. Otherwise it disables the queue
// trigger with ALTER TABLE, which holds an exclusive lock on vaccination_records until
// commit (so no other writer can slip past the trigger meanwhile) and is rolled back with
// everything else on failure.
func disableQueueTrigger(ctx context.Context, tx pgx.Tx) (replica bool, err error) {
	if err := tx.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&replica); err != nil {
		return false, fmt.Errorf("check role: %w", err)
	}
	if replica {
		if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
			return false, fmt.Errorf("skip triggers for the seed: %w", err)
		}
		return true, nil
	}
	if _, err := tx.Exec(ctx, "ALTER TABLE vaccination_records DISABLE TRIGGER vaccination_records_dps_queue"); err != nil {
		return false, fmt.Errorf("disable queue trigger for the seed: %w", err)
	}
	return false, nil
}

func enableQueueTrigger(ctx context.Context, tx pgx.Tx, replica bool) error {
	if replica {
		if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = origin"); err != nil {
			return fmt.Errorf("restore triggers after the seed: %w", err)
		}
		return nil
	}
	if _, err := tx.Exec(ctx, "ALTER TABLE vaccination_records ENABLE TRIGGER vaccination_records_dps_queue"); err != nil {
		return fmt.Errorf("enable queue trigger after the seed: %w", err)
	}
	return nil
}

// reserveIDs takes n consecutive ids from table's id sequence and returns the first, so
// that COPY can write ids the generator already used as foreign keys. The caller holds
// a lock that keeps other inserts out meanwhile.
func reserveIDs(ctx context.Context, tx pgx.Tx, table string, n int) (int64, error) {
	var last int64
	err := tx.QueryRow(ctx, `
		SELECT setval(pg_get_serial_sequence($1, 'id'),
		              greatest(nextval(pg_get_serial_sequence($1, 'id')),
		                       (SELECT coalesce(max(id), 0) + 1 FROM `+pgx.Identifier{table}.Sanitize()+`)) + $2 - 1)`,
		table, n).Scan(&last)
	if err != nil {
		return 0, fmt.Errorf("reserve %d %s ids: %w", n, table, err)
	}
	return last - int64(n) + 1, nil
}

// patientSet holds generated patients compactly; rows are built when COPY asks for them.
type patientSet struct {
	nhs     []string
	given   []uint16
	family  []uint16
	dob     []time.Time
	gender  []int16
	post    []string
	school  []int64
	team    []int32 // index into world.teams
	teens   []int32 // patients aged 12 to 15: HPV, MenACWY and Td/IPV are given in years 8 to 10
	firstID int64
}

func makePatients(r *rand.Rand, w *world, now time.Time, n int, nhsStart uint64) *patientSet {
	p := &patientSet{
		nhs: make([]string, n), given: make([]uint16, n), family: make([]uint16, n), dob: make([]time.Time, n),
		gender: make([]int16, n), post: make([]string, n), school: make([]int64, n), team: make([]int32, n),
	}
	numbers := NewNHSNumbers(nhsStart)
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	for i := range n {
		p.nhs[i] = numbers.Next()
		p.given[i] = uint16(r.IntN(len(givenNames)))
		p.family[i] = uint16(r.IntN(len(familyNames)))
		ageDays := 4*365 + r.IntN(12*365) // reception to year 11
		p.dob[i] = today.AddDate(0, 0, -ageDays)
		if ageDays >= 12*365 && ageDays < 16*365 {
			p.teens = append(p.teens, int32(i))
		}
		switch g := r.IntN(100); {
		case g < 49:
			p.gender[i] = 1
		case g < 98:
			p.gender[i] = 2
		case g < 99:
			p.gender[i] = 9
		default:
			p.gender[i] = 0
		}
		p.post[i] = postcode(r)
		t := r.IntN(len(w.teams))
		p.team[i] = int32(t)
		p.school[i] = w.teams[t].schools[r.IntN(len(w.teams[t].schools))]
	}
	return p
}

func (p *patientSet) copySource(firstID int64) pgx.CopyFromSource {
	p.firstID = firstID
	i := -1
	return pgx.CopyFromFunc(func() ([]any, error) {
		i++
		if i >= len(p.nhs) {
			return nil, nil
		}
		return []any{p.firstID + int64(i), p.nhs[i], givenNames[p.given[i]], familyNames[p.family[i]],
			p.dob[i], p.gender[i], p.post[i], p.school[i]}, nil
	})
}

var recordColumns = []string{"id", "uuid", "programme_id", "patient_id", "team_id", "location_id", "vaccine_id",
	"batch_id", "vaccinator_id", "outcome", "delivery_site", "delivery_method", "dose_sequence", "dose_volume_ml",
	"performed_at", "draft", "created_at", "updated_at", "discarded_at"}

// recordGenerator is a pgx.CopyFromSource making one record per Next, so a million
// records never sit in memory at once.
type recordGenerator struct {
	r        *rand.Rand
	ref      Ref
	world    *world
	patients *patientSet
	now      time.Time
	sum      *Summary
	firstID  int64
	count    int
	i        int
	row      []any
}

var (
	london       = mustLoadLocation("Europe/London")
	numericHalf  = pgtype.Numeric{Int: bigInt(5), Exp: -1, Valid: true}
	numericFifth = pgtype.Numeric{Int: bigInt(2), Exp: -1, Valid: true}
)

func (g *recordGenerator) Next() bool {
	if g.i >= g.count {
		return false
	}
	g.row = g.makeRow(g.firstID + int64(g.i))
	g.i++
	return true
}

func (g *recordGenerator) Values() ([]any, error) { return g.row, nil }
func (g *recordGenerator) Err() error             { return nil }

func (g *recordGenerator) makeRow(id int64) []any {
	r := g.r
	programme := pick(r, programmeWeights)
	var patient int
	if programme != "FLU" && len(g.patients.teens) > 0 {
		patient = int(g.patients.teens[r.IntN(len(g.patients.teens))])
	} else {
		patient = r.IntN(len(g.patients.nhs))
	}
	team := g.world.teams[g.patients.team[patient]]
	location := g.patients.school[patient]
	if r.IntN(1000) < clinicPerMille {
		location = team.clinics[r.IntN(len(team.clinics))]
	}

	// A school day in the year before now, between 09:00 and 15:30 UK time.
	day := g.now.In(london).AddDate(0, 0, -1-r.IntN(365))
	for day.Weekday() == time.Saturday || day.Weekday() == time.Sunday {
		day = day.AddDate(0, 0, -1)
	}
	performed := time.Date(day.Year(), day.Month(), day.Day(), 9, 0, 0, 0, london).
		Add(time.Duration(r.IntN(390*60)) * time.Second)
	created := performed.Add(time.Duration(30+r.IntN(6*3600)) * time.Second)
	updated := created
	if r.IntN(1000) < updatedPerMille {
		updated = created.Add(time.Duration(3600+r.IntN(30*24*3600)) * time.Second)
	}

	outcome := pick(r, outcomeWeights)
	draft := r.IntN(1000) < draftPerMille
	var discarded any
	isDiscarded := r.IntN(1000) < discardedPerMille
	if isDiscarded {
		d := updated.Add(time.Duration(600+r.IntN(14*24*3600)) * time.Second)
		discarded, updated = d, d
	}
	var vaccinator any
	if r.IntN(1000) >= noVaccinatorPM {
		vaccinator = team.vaccinators[r.IntN(len(team.vaccinators))]
	}

	// Only a vaccination that was given has a vaccine, batch, site, route and dose.
	var vaccineID, batchID, site, method, doseSeq, volume any
	if outcome == "administered" {
		v := g.vaccineFor(programme)
		vaccineID = g.ref.Vaccines[v.ProductCode]
		batches := team.batches[v.ProductCode]
		batchID = batches[r.IntN(len(batches))]
		if v.Method == "nasal" {
			site, method, volume = "nose", "nasal_spray", numericFifth
		} else {
			site = []string{"left_arm_upper_position", "right_arm_upper_position"}[r.IntN(2)]
			if r.IntN(100) == 0 {
				site = []string{"left_thigh", "right_thigh"}[r.IntN(2)]
			}
			method = "intramuscular"
			if r.IntN(100) < 3 {
				method = "subcutaneous"
			}
			volume = numericHalf
		}
		doseSeq = g.doseSequence(programme)
	}

	s := g.sum.Programmes[programme]
	s.Records++
	switch {
	case draft:
		s.Drafts++
	case outcome != "administered":
		s.NotAdministered++
	case isDiscarded:
		s.Discarded++
	default:
		s.Exportable++
		g.sum.Exportable++
	}
	g.sum.Programmes[programme] = s

	return []any{id, g.uuid(), g.ref.Programmes[programme], g.patients.firstID + int64(patient), team.dbID,
		location, vaccineID, batchID, vaccinator, outcome, site, method, doseSeq, volume,
		performed, draft, created, updated, discarded}
}

func (g *recordGenerator) vaccineFor(programme string) Vaccine {
	switch programme {
	case "FLU":
		// Most children have the nasal spray; injections for those who cannot.
		if g.r.IntN(100) < 75 {
			v, _ := vaccineByCode("43208811000001106")
			return v
		}
		return []Vaccine{mustVaccine("43207411000001105"), mustVaccine("45175511000001104"), mustVaccine("45354911000001100")}[g.r.IntN(3)]
	case "MENACWY":
		switch n := g.r.IntN(100); {
		case n < 60:
			return mustVaccine("39779611000001104")
		case n < 85:
			return mustVaccine("20517811000001104")
		default:
			return mustVaccine("17188711000001105")
		}
	}
	v, _ := defaultVaccine(programme)
	return v
}

func (g *recordGenerator) doseSequence(programme string) int32 {
	switch programme {
	case "HPV":
		if g.r.IntN(100) < 4 { // a second or third dose for the immunosuppressed
			return int32(2 + g.r.IntN(2))
		}
		return 1
	case "TD_IPV":
		return 5 // the teenage booster is the fifth dose of tetanus, diphtheria and polio
	}
	return 1
}

// uuid draws a version 4 UUID from the seeded stream, so it is reproducible.
func (g *recordGenerator) uuid() [16]byte {
	var u [16]byte
	a, b := g.r.Uint64(), g.r.Uint64()
	for i := range 8 {
		u[i] = byte(a >> (56 - 8*i))
		u[8+i] = byte(b >> (56 - 8*i))
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

func mustVaccine(code string) Vaccine {
	v, ok := vaccineByCode(code)
	if !ok {
		panic("demodata: unknown vaccine " + code)
	}
	return v
}
