package main

import (
	"io"
	"reflect"
	"testing"

	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

var localhost = []string{"localhost", "127.0.0.1"}

func parsedDefaultMailboxes(t *testing.T) []meshsandbox.Mailbox {
	t.Helper()
	mbs, err := parseMailboxes(defaultMailboxes)
	if err != nil {
		t.Fatal(err)
	}
	return mbs
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    config
		wantErr bool
	}{
		{name: "defaults", want: config{addr: "127.0.0.1:8700", tls: true, sharedKey: "TestKey", hosts: localhost, mailboxes: []meshsandbox.Mailbox{
			{ID: "X26ABC1", Password: "password", Name: "TESTMB1", ODSCode: "X26", OrgCode: "X26"},
			{ID: "X26ABC2", Password: "password", Name: "TESTMB2", ODSCode: "X26", OrgCode: "X26"},
			{ID: "X26ABC3", Password: "password", Name: "TESTMB3", ODSCode: "X27", OrgCode: "X27"},
		}}},
		{name: "env fallbacks", env: map[string]string{"MESH_SANDBOX_ADDR": ":9000", "MESH_SHARED_KEY": "K", "MESH_SANDBOX_TLS": "false",
			"MESH_SANDBOX_MAILBOXES": "a1:pw:W1, W2", "MESH_SANDBOX_NO_NONCE_CHECK": "true"},
			want: config{addr: ":9000", sharedKey: "K", noNonceCheck: true, hosts: localhost, mailboxes: []meshsandbox.Mailbox{
				{ID: "A1", Password: "pw", Name: "A1", Workflows: []string{"W1", "W2"}},
			}}},
		{name: "flags beat env", args: []string{"-addr", ":1", "-no-timestamp-check", "-mailboxes", "B:p:x:y"}, env: map[string]string{"MESH_SANDBOX_ADDR": ":2"},
			want: config{addr: ":1", tls: true, sharedKey: "TestKey", noTimestampCheck: true, hosts: localhost, mailboxes: []meshsandbox.Mailbox{
				{ID: "B", Password: "p", Name: "B", Workflows: []string{"x:y"}},
			}}},
		{name: "certificate hosts for compose", args: []string{"-hosts", "mesh-sandbox-go, localhost"},
			want: config{addr: "127.0.0.1:8700", tls: true, sharedKey: "TestKey", hosts: []string{"mesh-sandbox-go", "localhost"},
				mailboxes: parsedDefaultMailboxes(t)}},
		{name: "mailbox without password", args: []string{"-mailboxes", "X1"}, wantErr: true},
		{name: "client CA without TLS", args: []string{"-tls=false", "-client-ca", "ca.pem"}, wantErr: true},
		{name: "stray argument", args: []string{"extra"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error, got %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
