// Command healthcheck is the container healthcheck of compose.yaml: the pipeline images are distroless
// (no shell, no curl), so each carries this small static binary to ask a process's /healthz.
//
//	healthcheck [-k] [-status 200] [-timeout 3s] URL
//
// It exits 0 when URL answers with the expected status and 1 otherwise, printing one line. It only
// reads; it must never change anything it asks.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/cli"
)

func main() {
	os.Exit(check(os.Args[1:], os.Stderr))
}

func check(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	insecure := fs.Bool("k", false, "do not verify the server's TLS certificate (a sandbox's self-signed one)")
	status := fs.Int("status", http.StatusOK, "the status that means healthy")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return cli.ExitUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: healthcheck [-k] [-status 200] [-timeout 3s] URL")
		return cli.ExitUsage
	}
	client := &http.Client{
		Timeout:   *timeout,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: *insecure}}, //nolint:gosec // opt-in for sandboxes
	}
	resp, err := client.Get(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "unhealthy:", err)
		return cli.ExitFailure
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != *status {
		fmt.Fprintf(stderr, "unhealthy: %s answered %d, want %d\n", fs.Arg(0), resp.StatusCode, *status)
		return cli.ExitFailure
	}
	return cli.ExitOK
}
