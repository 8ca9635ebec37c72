package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
)

func init() {
	register(command{
		name:    "token",
		summary: "print a bearer token signed with the broker's issuer key",
		run:     runToken,
	})
}

const tokenDescription = `
Prints one bearer token, and nothing else, on stdout. It is signed with the
issuer key in the data dir (created there if missing), which a broker started
on the same data dir trusts. Use it as "Authorization: Bearer <token>".`

// defaultDataDir is $EPS_DATA_DIR, or ./data as for the broker.
func defaultDataDir(e *env) string {
	if d := e.getenv("EPS_DATA_DIR"); d != "" {
		return d
	}
	return "./data"
}

// runToken implements "epsctl token".
func runToken(_ context.Context, e *env, args []string) int {
	const name = "token"
	roles := make([]string, 0, len(auth.Roles()))
	for _, r := range auth.Roles() {
		roles = append(roles, string(r))
	}

	fset := newFlagSet(name, "--role ROLE --ods ODS [flags]", tokenDescription)
	dataDir := fset.String("data-dir", defaultDataDir(e), "the broker's data directory `DIR` (env EPS_DATA_DIR)")
	role := fset.String("role", "", "the user's `ROLE`: "+strings.Join(roles, ", ")+" (required)")
	ods := fset.String("ods", "", "the `ODS` code of the user's organisation, e.g. FA565 (required)")
	sub := fset.String("sub", "", "the user `ID` (default <role>-<ods>)")
	ttl := fset.Duration("ttl", time.Hour, "the token's lifetime `DUR`, e.g. 15m or 8h")
	issuer := fset.String("issuer", auth.DefaultIssuer, "the token's issuer `S` (iss claim)")
	audience := fset.String("audience", auth.DefaultAudience, "the token's audience `S` (aud claim)")
	if code, ok := parseFlags(fset, e, args); !ok {
		return code
	}

	p := auth.Principal{Subject: *sub, ODS: *ods, Role: auth.Role(*role)}
	switch {
	case fset.NArg() > 0:
		return usageError(e, name, "unexpected argument %q", fset.Arg(0))
	case *role == "":
		return usageError(e, name, "--role is required (%s)", strings.Join(roles, ", "))
	case !p.Role.Valid():
		return usageError(e, name, "--role %q is not one of %s", *role, strings.Join(roles, ", "))
	case *ods == "":
		return usageError(e, name, "--ods is required")
	case !fhir.ValidODSCode(p.ODS):
		return usageError(e, name, "--ods %q is not an ODS code: 3 to 8 upper-case letters and digits, e.g. FA565", *ods)
	case *ttl < time.Second:
		return usageError(e, name, "--ttl %v is too short: give at least 1s", *ttl)
	case *issuer == "" || *audience == "":
		return usageError(e, name, "--issuer and --audience must not be empty")
	case *dataDir == "":
		return usageError(e, name, "--data-dir must not be empty")
	}
	if p.Subject == "" {
		p.Subject = *role + "-" + *ods
	}

	// Say so when the key is new: a mistyped --data-dir would otherwise
	// give a token that the running broker rejects, without a clue why.
	_, statErr := os.Stat(auth.IssuerKeyPath(*dataDir))
	key, err := auth.LoadOrCreateIssuerKey(*dataDir)
	if err != nil {
		return failure(e, name, err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		fmt.Fprintf(e.stderr, "epsctl %s: created a new issuer key %s\n", name, auth.IssuerKeyPath(*dataDir))
	}

	tok, err := auth.Mint(key, *issuer, *audience, p, *ttl, e.now())
	if err != nil {
		return failure(e, name, err)
	}
	if _, err := fmt.Fprintln(e.stdout, tok); err != nil {
		return failure(e, name, err)
	}
	return exitOK
}
