package export

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

// TestLocalSettingsApplyToTheirStatementsAlone: inside fn the settings hold, after it they are what
// they were before (set in the session or the transaction), and a setting Postgres refuses is an error
// that names it, with nothing run.
func TestLocalSettingsApplyToTheirStatementsAlone(t *testing.T) {
	_, pool := pgtest.NewMigratedDatabase(t)
	ctx := t.Context()
	setting := func(tx pgx.Tx, name string) string {
		t.Helper()
		var v string
		if err := tx.QueryRow(ctx, sqlGetSetting, name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL work_mem = '5MB'`); err != nil {
			return err
		}
		seqscan := setting(tx, "enable_seqscan")
		ran := false
		err := withLocalSettings(ctx, tx, [][2]string{{"work_mem", "64MB"}, {"enable_seqscan", "off"}}, func() error {
			ran = true
			if got := setting(tx, "work_mem"); got != "64MB" {
				t.Errorf("work_mem inside = %s, want 64MB", got)
			}
			if got := setting(tx, "enable_seqscan"); got != "off" {
				t.Errorf("enable_seqscan inside = %s, want off", got)
			}
			return nil
		})
		if err != nil || !ran {
			t.Fatalf("withLocalSettings: %v (ran: %v)", err, ran)
		}
		if got := setting(tx, "work_mem"); got != "5MB" {
			t.Errorf("work_mem after = %s, want 5MB as before", got)
		}
		if got := setting(tx, "enable_seqscan"); got != seqscan {
			t.Errorf("enable_seqscan after = %s, want %s as before", got, seqscan)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	errBoom := errors.New("boom")
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return withLocalSettings(ctx, tx, [][2]string{{"work_mem", "64MB"}, {"enable_seqscan", "sometimes"}}, func() error {
			return errBoom // never: the second setting is refused
		})
	})
	if err == nil || errors.Is(err, errBoom) || !strings.Contains(err.Error(), "set enable_seqscan") {
		t.Fatalf("a refused setting: %v, want an error naming it, before fn", err)
	}
}
