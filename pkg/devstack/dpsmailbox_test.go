package main

import (
	"bytes"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/dps"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

// TestDPSPlayerRefuses: the devstack's DPS takes a file only if its name and every row pass the rules
// the receiver applies (the same pkg/dps rules the producer's writer applies), and never the same name
// twice; so `go run ./pkg/devstack --once` fails when the producer regresses.
func TestDPSPlayerRefuses(t *testing.T) {
	const ours, theirs = "X26ABC1", "X26ABC2"
	sb := meshsandbox.New(meshsandbox.Config{SharedKey: "TestKey", Mailboxes: []meshsandbox.Mailbox{
		{ID: ours, Password: "password"}, {ID: theirs, Password: "password", Workflows: []string{dpsWorkflowID}},
	}})
	srv := httptest.NewServer(sb.Handler())
	t.Cleanup(srv.Close)
	client := func(mailbox string) *mesh.Client {
		c, err := mesh.New(mesh.Config{BaseURL: srv.URL, Mailbox: mailbox, Password: "password", SharedKey: "TestKey",
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	sender := client(ours)
	var out bytes.Buffer
	d := &dpsPlayer{client: client(theirs), out: &lineWriter{w: &out}, from: ours, mailbox: theirs,
		senderODS: sandboxSenderODS, seen: map[string]bool{}, seenNames: map[string]string{}}

	rec := dps.Record{
		NHSNumber: "9992686766", Forename: "Brenton", Surname: "Waters", DateOfBirth: time.Date(2012, 8, 18, 0, 0, 0, 0, time.UTC),
		Postcode: "UC0W 0JL", PerformedAt: time.Date(2023, 6, 8, 23, 0, 0, 0, time.UTC), SiteODSCode: "U1",
		UUID: "496e37d8-d1ab-4e12-a3a3-9c2e136a0504", Action: dps.ActionNew, CreatedAt: time.Date(2024, 8, 21, 9, 0, 0, 0, time.UTC),
		ProcedureCode: "761841000", ProcedureTerm: "Administration of vaccine product containing only Human papillomavirus antigen (procedure)",
		DoseSequence: 1, ProductCode: "33493111000001108", ProductTerm: "Gardasil 9", Manufacturer: "Merck Sharp & Dohme",
		BatchName: "CD5472", BatchExpiry: time.Date(2024, 9, 30, 0, 0, 0, 0, time.UTC), DeliverySite: "left_arm_upper_position",
		DeliveryMethod: "intramuscular", DoseAmount: "0.5", SchoolURN: "123456",
	}
	var good bytes.Buffer
	w := dps.NewWriter(&good, dps.Options{})
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	name, err := dps.FileName("HPV", sandboxSenderODS, time.Date(2026, 11, 26, 11, 41, 25, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := dps.FileName("HPV", sandboxSenderODS, time.Date(2026, 11, 26, 11, 41, 26, 0, time.UTC))
	wrongODS, _ := dps.FileName("HPV", "V0V8L", time.Date(2026, 11, 26, 11, 41, 27, 0, time.UTC))
	body := good.String()
	tests := []struct {
		name, file, body, problem string
	}{
		{"good", name, body, ""},
		{"same name twice", name, body, "already used"},
		{"old name", "Vaccinations-HPV-2026-11-26.csv", body, "file name"},
		{"other sender", wrongODS, body, "names sender V0V8L"},
		{"GMT offset in June", other, strings.Replace(body, "T00000001", "T00000000", 1), "DATE_AND_TIME"},
		{"no postcode", other, strings.Replace(body, `"UC0W 0JL"`, `""`, 1), "PERSON_POSTCODE"},
		{"bad NHS number", other, strings.Replace(body, `"9992686766"`, `"9992686767"`, 1), "NHS_NUMBER"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := sender.Send(t.Context(), mesh.OutboundMessage{To: theirs, WorkflowID: dpsWorkflowID, FileName: tt.file,
				LocalID: tt.name, Body: strings.NewReader(tt.body)})
			if err != nil {
				t.Fatal(err)
			}
			d.receive(t.Context(), id)
			files := d.received()
			f := files[len(files)-1]
			if f.MessageID != id {
				t.Fatalf("not received: %+v", files)
			}
			if tt.problem == "" && f.Problem != "" || !strings.Contains(f.Problem, tt.problem) {
				t.Fatalf("problem %q, want one containing %q", f.Problem, tt.problem)
			}
			if acked := ackedByDPS(t, sb, id); acked != (tt.problem == "") {
				t.Fatalf("acknowledged %v, want %v", acked, tt.problem == "")
			}
		})
	}
	if d.firstProblem() == "" {
		t.Fatal("the run would not fail")
	}
}

func ackedByDPS(t *testing.T, sb *meshsandbox.Server, id string) bool {
	t.Helper()
	m, ok := sb.Message(id)
	if !ok {
		t.Fatalf("sandbox lost %s", id)
	}
	return m.Status == meshsandbox.StatusAcknowledged
}
