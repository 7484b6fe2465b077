package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCheck(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer ok.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer tlsSrv.Close()

	tests := []struct {
		name string
		args []string
		want int
	}{
		{"healthy", []string{ok.URL + "/healthz"}, 0},
		{"wrong status", []string{ok.URL + "/nope"}, 1},
		{"expected other status", []string{"-status", "404", ok.URL + "/nope"}, 0},
		{"nothing listening", []string{"http://127.0.0.1:1/healthz"}, 1},
		{"self-signed refused", []string{tlsSrv.URL}, 1},
		{"self-signed with -k", []string{"-k", tlsSrv.URL}, 0},
		{"no url", nil, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := check(tt.args, io.Discard); got != tt.want {
				t.Fatalf("check(%q) = %d, want %d", tt.args, got, tt.want)
			}
		})
	}
}
