package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"regexp"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/cli"
	"github.com/nhs-dps/dps-pipeline/pkg/deadlettercli"
)

// command is a parsed command line.
type command struct {
	name string

	// seed
	records int
	seed    int64

	// export, request
	programme   string
	dryRun      bool
	out         string
	requestedBy string
	requestID   string

	// migrate
	createDatabase bool
	// export, request, topology: how long to wait for NATS and for the streams and bucket
	wait time.Duration

	// refused
	json bool

	// dead-letters, redrive
	deadLetters deadlettercli.ListOptions
	redriveSeqs []uint64
}

var programmeCode = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// parseCommand parses the flags of the subcommand name (replay parses its own, in process.ReplayCommand).
func parseCommand(name string, args []string, stderr io.Writer) (command, error) {
	cmd := command{name: name}
	fs := flag.NewFlagSet("producer "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	switch cmd.name {
	case "export", "request", "topology":
		fs.DurationVar(&cmd.wait, "wait", oneShotWait, "how long to wait for NATS and for the streams this command uses, which it never creates")
	}
	switch cmd.name {
	case "run":
	case "migrate":
		fs.BoolVar(&cmd.createDatabase, "create-database", false, "create the database DATABASE_URL names if it does not exist (services never do)")
	case "seed":
		fs.IntVar(&cmd.records, "records", 0, "vaccination records to add (required)")
		fs.Int64Var(&cmd.seed, "seed", 1, "random seed: the same seed on the same database gives the same rows")
	case "topology":
		fs.BoolVar(&cmd.dryRun, "dry-run", false, "only print what would be created or changed, and how")
	case "export":
		fs.StringVar(&cmd.programme, "programme", "", "programme code (HPV, FLU, MENACWY, TD_IPV) or ALL (required)")
		fs.BoolVar(&cmd.dryRun, "dry-run", false, "build the files and report them, then roll back: nothing stored or published")
		fs.StringVar(&cmd.out, "out", "", "also write the file here; with ALL (or an existing directory) a directory to write each file into")
	case "request":
		fs.StringVar(&cmd.programme, "programme", "", "programme code or ALL (required)")
		fs.BoolVar(&cmd.dryRun, "dry-run", false, "ask for a dry run")
		fs.StringVar(&cmd.requestedBy, "requested-by", defaultRequester(), "who is asking")
		fs.StringVar(&cmd.requestID, "request-id", "", "request id (default: a new UUID); also the Nats-Msg-Id")
	case "refused":
		fs.StringVar(&cmd.programme, "programme", "", "only this programme (default: all)")
		fs.BoolVar(&cmd.json, "json", false, "one JSON object per record")
	case "dead-letters":
		cmd.deadLetters.Define(fs)
	case "redrive":
	default:
		return cmd, cli.Usagef("unknown command %q", cmd.name)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cmd, err // usage printed: exit 0
		}
		return cmd, cli.Usagef("%v", err)
	}
	if cmd.name == "redrive" {
		seqs, err := deadlettercli.ParseRedriveSeqs(fs.Args())
		if err != nil {
			return cmd, err
		}
		cmd.redriveSeqs = seqs
		return cmd, nil
	}
	if fs.NArg() > 0 {
		return cmd, cli.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if cmd.wait < 0 {
		return cmd, cli.Usagef("%s: --wait must not be negative", cmd.name)
	}
	switch cmd.name {
	case "seed":
		if cmd.records <= 0 {
			return cmd, cli.Usagef("--records must be a positive number")
		}
	case "export", "request":
		if cmd.programme == "" {
			return cmd, cli.Usagef("--programme is required (a code such as HPV, or ALL)")
		}
		if !programmeCode.MatchString(cmd.programme) {
			return cmd, cli.Usagef("--programme %q is not a programme code (upper case, e.g. HPV or TD_IPV)", cmd.programme)
		}
		if cmd.name == "request" && cmd.requestedBy == "" {
			return cmd, cli.Usagef("--requested-by must not be empty")
		}
		if len(cmd.requestID) > 128 {
			return cmd, cli.Usagef("--request-id is longer than 128 characters")
		}
	case "refused":
		if cmd.programme != "" && !programmeCode.MatchString(cmd.programme) {
			return cmd, cli.Usagef("refused: --programme %q is not a programme code (upper case, e.g. HPV or TD_IPV)", cmd.programme)
		}
	case "dead-letters":
		if err := cmd.deadLetters.Check(time.Now()); err != nil {
			return cmd, err
		}
	}
	return cmd, nil
}

func defaultRequester() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "producer request"
}
