package process

import (
	"context"
	"io"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nhs-dps/dps-pipeline/pkg/cli"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// ServiceCommand is `<prog> run`: a cli.Spec that takes no arguments, loads the configuration (load
// returns the process's own and the shared part of it), builds the logger and runs until SIGINT or
// SIGTERM.
func ServiceCommand[C any](prog string, load func() (C, config.Shared, error), run func(context.Context, C, *slog.Logger) error) cli.Command {
	return cli.Spec[C]{
		Name: prog + " run",
		Load: load,
		Run: func(ctx context.Context, cfg C, log *slog.Logger, _, _ io.Writer) error {
			return run(ctx, cfg, log)
		},
	}.Command()
}

// MESHCommand is an operator command that talks to MESH alone: configured by the MESH_* settings
// only (no database, no NATS), it prints its result on stdout and only warnings (TLS verification
// off) on stderr. name ("tracker check-inbox") prefixes its error lines; f parses its own arguments
// and returns its exit code, having said why.
func MESHCommand(name string, f func(ctx context.Context, cfg config.MESH, c *mesh.Client, args []string, stdout, stderr io.Writer) int) cli.Command {
	return func(args []string, stdout, stderr io.Writer) int {
		return cli.Spec[config.MESH]{
			Name:  name,
			Parse: cli.AnyArguments,
			Load: func() (config.MESH, config.Shared, error) {
				cfg, err := config.LoadMESH()
				return cfg, config.Shared{}, err
			},
			Logger: cli.WarningLogger,
			Run: func(ctx context.Context, cfg config.MESH, log *slog.Logger, stdout, stderr io.Writer) error {
				client, err := NewMESHClient(cfg, log)
				if err != nil {
					return err
				}
				if code := f(ctx, cfg, client, args, stdout, stderr); code != cli.ExitOK {
					return &cli.ExitError{Code: code}
				}
				return nil
			},
		}.Main(args, stdout, stderr)
	}
}

// DatabaseCommand is a read-only command over Postgres alone (`tracker exports`, `tracker records`):
// configured by the shared settings only, it connects to DATABASE_URL without migrating or touching
// NATS, prints its result on stdout and only warnings on stderr. parse reads the arguments first (see
// cli.Spec); run gets the pool.
func DatabaseCommand(name string, parse func(args []string, stderr io.Writer) error, run func(ctx context.Context, pool *pgxpool.Pool, stdout io.Writer) error) cli.Command {
	return cli.Spec[config.Shared]{
		Name:   name,
		Parse:  parse,
		Load:   func() (config.Shared, config.Shared, error) { cfg, err := config.LoadShared(); return cfg, cfg, err },
		Logger: cli.WarningLogger,
		Run: func(ctx context.Context, cfg config.Shared, _ *slog.Logger, stdout, _ io.Writer) error {
			pool, err := store.Connect(ctx, cfg.DatabaseURL)
			if err != nil {
				return err
			}
			defer pool.Close()
			return run(ctx, pool, stdout)
		},
	}.Command()
}
