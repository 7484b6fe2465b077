package bus_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
)

// TestConnectWithCreds: in operator (JWT) mode, NATS_CREDS, a user JWT with its nkey seed, connects
// and can use JetStream; the credentials of a user whose account the server does not know are refused
// at once with a *RefusedError.
func TestConnectWithCreds(t *testing.T) {
	operator, _ := nkeys.CreateOperator()
	opub, _ := operator.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	oclaims, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	account, _ := nkeys.CreateAccount()
	apub, _ := account.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt, err := ac.Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	// Operator mode needs a system account for the server's own traffic.
	system, _ := nkeys.CreateAccount()
	spub, _ := system.PublicKey()
	sjwt, err := jwt.NewAccountClaims(spub).Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	for pub, token := range map[string]string{apub: ajwt, spub: sjwt} {
		if err := resolver.Store(pub, token); err != nil {
			t.Fatal(err)
		}
	}
	_, url := natstest.RunWithOptions(t, func(o *server.Options) {
		o.TrustedOperators = []*jwt.OperatorClaims{oclaims}
		o.AccountResolver = resolver
		o.SystemAccount = spub
	})

	dir := t.TempDir()
	userCreds := func(name string, signer nkeys.KeyPair) string {
		user, _ := nkeys.CreateUser()
		upub, _ := user.PublicKey()
		seed, _ := user.Seed()
		ujwt, err := jwt.NewUserClaims(upub).Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		b, err := jwt.FormatUserConfig(ujwt, seed)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name+".creds")
		write(t, path, b)
		return path
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	nc, js, err := bus.Connect(ctx, bus.ConnectOptions{URL: url, Name: "creds-test", Creds: userCreds("good", account)})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := bus.EnsureTopology(ctx, js); err != nil {
		t.Fatalf("JetStream with the user's credentials: %v", err)
	}

	stranger, _ := nkeys.CreateAccount() // an account this server does not know
	_, _, err = bus.Connect(ctx, bus.ConnectOptions{URL: url, Name: "creds-test", Creds: userCreds("stranger", stranger), WarnEvery: 200 * time.Millisecond})
	var refused *bus.RefusedError
	if !errors.As(err, &refused) || refused.What != "NATS refused the credentials" {
		t.Fatalf("unknown account: %v, want a refusal of the credentials", err)
	}
}
