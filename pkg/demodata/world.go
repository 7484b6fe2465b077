package demodata

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// The world every seed shares: teams (SAIS providers), their schools and clinics, their
// vaccinators and their batches. It is the same whatever the seed, so records from
// several Seed calls land in one consistent world; batches depend on the seed's date
// only, so that their expiry lies after every vaccination they are used for.
const (
	teamCount          = 8
	schoolsPerTeam     = 40
	vaccinatorsPerTeam = 6
	batchesPerVaccine  = 2
)

type worldTeam struct {
	id, odsCode string
	name        string
	dbID        int64
	schools     []int64
	clinics     []int64
	vaccinators []int64
	batches     map[string][]int64 // SNOMED product code → batch ids
}

type world struct {
	teams []*worldTeam
}

var teamPlaces = []string{"Leeds and Wakefield", "North Tyneside", "Bristol and Bath", "Coventry and Warwickshire",
	"Kent and Medway", "Norfolk and Suffolk", "Greater Manchester", "Devon and Cornwall"}

func ensureWorld(ctx context.Context, tx pgx.Tx, ref Ref, now time.Time) (*world, error) {
	// A fixed stream: the world does not change with the caller's seed.
	r := rand.New(rand.NewPCG(0x5eed_5a15, 0xd95))
	w := &world{}
	for t := range teamCount {
		team := &worldTeam{
			odsCode: "R" + strconv.Itoa(1+t) + string(rune('A'+t)) + strconv.Itoa(t*7%10),
			name:    teamPlaces[t] + " School Age Immunisation Service",
			batches: map[string][]int64{},
		}
		if err := tx.QueryRow(ctx, `
			INSERT INTO teams (name, ods_code) VALUES ($1, $2)
			ON CONFLICT (ods_code) DO UPDATE SET name = teams.name
			RETURNING id`, team.name, team.odsCode).Scan(&team.dbID); err != nil {
			return nil, fmt.Errorf("upsert team %s: %w", team.odsCode, err)
		}
		for s := range schoolsPerTeam {
			urn := strconv.Itoa(140000 + t*schoolsPerTeam + s)
			name := schoolPlaces[r.IntN(len(schoolPlaces))] + " " + schoolKinds[r.IntN(len(schoolKinds))]
			var id int64
			if err := tx.QueryRow(ctx, `
				INSERT INTO locations (name, type, urn, postcode, team_id) VALUES ($1, 'school', $2, $3, $4)
				ON CONFLICT (urn) WHERE urn IS NOT NULL DO UPDATE SET urn = EXCLUDED.urn
				RETURNING id`, name, urn, postcode(r), team.dbID).Scan(&id); err != nil {
				return nil, fmt.Errorf("upsert school %s: %w", urn, err)
			}
			team.schools = append(team.schools, id)
		}
		clinics := []struct{ name, kind, ods string }{
			{teamPlaces[t] + " Community Clinic", "generic_clinic", team.odsCode},
			{teamPlaces[t] + " Health Centre", "community_clinic", team.odsCode + "HC"},
		}
		for _, c := range clinics {
			id, err := ensureClinic(ctx, tx, c.name, c.kind, c.ods, postcode(r), team.dbID)
			if err != nil {
				return nil, err
			}
			team.clinics = append(team.clinics, id)
		}
		for range vaccinatorsPerTeam {
			name := givenNames[r.IntN(len(givenNames))] + " " + familyNames[r.IntN(len(familyNames))]
			id, err := ensureVaccinator(ctx, tx, name)
			if err != nil {
				return nil, err
			}
			team.vaccinators = append(team.vaccinators, id)
		}
		w.teams = append(w.teams, team)
	}

	// Batches: a stream per date, so that a seed on another day adds fresh batches.
	day := now.UTC().Truncate(24 * time.Hour)
	br := rand.New(rand.NewPCG(uint64(day.Unix()), 0xba7c4))
	for _, team := range w.teams {
		for _, v := range Vaccines {
			if v.Discontinued {
				continue
			}
			for range batchesPerVaccine {
				expiry := day.AddDate(0, 0, 60+br.IntN(300))
				id, err := ensureBatch(ctx, tx, ref.Vaccines[v.ProductCode], batchName(br), expiry, team.dbID)
				if err != nil {
					return nil, err
				}
				team.batches[v.ProductCode] = append(team.batches[v.ProductCode], id)
			}
		}
	}
	return w, nil
}

func ensureClinic(ctx context.Context, tx pgx.Tx, name, kind, ods, pc string, teamID int64) (int64, error) {
	var id int64
	err := tx.QueryRow(ctx, `
		WITH found AS (SELECT id FROM locations WHERE type = $2 AND name = $1 AND team_id = $5 ORDER BY id LIMIT 1),
		     made AS (INSERT INTO locations (name, type, ods_code, postcode, team_id)
		              SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM found) RETURNING id)
		SELECT id FROM found UNION ALL SELECT id FROM made`, name, kind, ods, pc, teamID).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("ensure clinic %s: %w", ods, err)
	}
	return id, nil
}

func ensureVaccinator(ctx context.Context, tx pgx.Tx, fullName string) (int64, error) {
	var id int64
	err := tx.QueryRow(ctx, `
		WITH found AS (SELECT id FROM vaccinators WHERE full_name = $1 ORDER BY id LIMIT 1),
		     made AS (INSERT INTO vaccinators (full_name) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM found) RETURNING id)
		SELECT id FROM found UNION ALL SELECT id FROM made`, fullName).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("ensure vaccinator: %w", err)
	}
	return id, nil
}

func ensureBatch(ctx context.Context, tx pgx.Tx, vaccineID int64, name string, expiry time.Time, teamID int64) (int64, error) {
	var id int64
	var team any
	if teamID != 0 {
		team = teamID
	}
	err := tx.QueryRow(ctx, `
		INSERT INTO batches (vaccine_id, name, expiry, team_id) VALUES ($1, $2, $3, $4)
		ON CONFLICT (vaccine_id, name, expiry) DO UPDATE SET name = EXCLUDED.name
		RETURNING id`, vaccineID, name, pgDate(expiry), team).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("ensure batch %s: %w", name, err)
	}
	return id, nil
}

// pgDate passes a calendar date as a date, whatever the time zone of t.
func pgDate(t time.Time) string { return t.Format(time.DateOnly) }
