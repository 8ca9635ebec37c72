package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/fhir"
)

func init() {
	register(command{
		name:    "nats-user add",
		summary: "make a NATS user of the embedded server's --nats-listen port (inspect, dispenser or prescriber)",
		run:     runNATSUserAdd,
	})
	register(command{
		name:    "nats-user list",
		summary: "list the NATS users of the embedded server",
		run:     runNATSUserList,
	})
	register(command{
		name:    "nats-user remove",
		summary: "remove a NATS user of the embedded server",
		run:     runNATSUserRemove,
	})
}

const natsUserAddDescription = `
Makes an nkey user of the embedded NATS server and writes its seed (the
secret it connects with) to --out, readable by its owner only; the data
dir's users file (keys/nats-users.json) keeps only the public key. Restart
the broker for the user to be let in. Connect with the nats CLI:
  nats --server nats://HOST:PORT --nkey FILE stream ls

Roles:
  inspect     list streams and consumers and read their configuration and
              counts; no message, no write, no delete or purge
  dispenser   its own notifications, eps.notify.dispenser.<ODS>.>: subscribe
              to them, and read and acknowledge them from the stream
              EPS_NOTIFY with the durable consumer the broker makes for it
              (named after the user); replies come to its inbox prefix
              _INBOX_<NAME>:
                nats --server nats://HOST:PORT --nkey FILE \
                  --inbox-prefix _INBOX_<NAME> consumer next EPS_NOTIFY <NAME>
  prescriber  the same for eps.notify.prescriber.<ODS>.>
A dispenser's or prescriber's name holds no '.'.`

func natsRoleNames() string {
	names := make([]string, 0, 3)
	for _, r := range broker.NATSRoles() {
		names = append(names, string(r))
	}
	return strings.Join(names, ", ")
}

// runNATSUserAdd implements "epsctl nats-user add".
func runNATSUserAdd(_ context.Context, e *env, args []string) int {
	const name = "nats-user add"
	fset := newFlagSet(name, "--role ROLE [--ods ODS] --out FILE [flags]", natsUserAddDescription)
	dataDir := fset.String("data-dir", defaultDataDir(e), "the broker's data directory `DIR` (env EPS_DATA_DIR)")
	role := fset.String("role", "", "the user's `ROLE`: "+natsRoleNames()+" (required)")
	ods := fset.String("ods", "", "dispenser and prescriber: the organisation's `ODS` code, e.g. FA565")
	user := fset.String("name", "", "the user's `NAME` (default <role>-<ods>, or inspect)")
	out := fset.String("out", "", "the `FILE` to write the user's seed to; it must not exist (required)")
	if code, ok := parseFlags(fset, e, args); !ok {
		return code
	}
	r := broker.NATSRole(*role)
	switch {
	case fset.NArg() > 0:
		return usageError(e, name, "unexpected argument %q", fset.Arg(0))
	case *role == "":
		return usageError(e, name, "--role is required (%s)", natsRoleNames())
	case !r.Valid():
		return usageError(e, name, "--role %q is not one of %s", *role, natsRoleNames())
	case r.NeedsODS() && *ods == "":
		return usageError(e, name, "a %s user needs --ods", r)
	case r.NeedsODS() && !fhir.ValidODSCode(*ods):
		return usageError(e, name, "--ods %q is not an ODS code: 3 to 8 upper-case letters and digits, e.g. FA565", *ods)
	case !r.NeedsODS() && *ods != "":
		return usageError(e, name, "an %s user belongs to no organisation: leave out --ods", r)
	case r.NeedsODS() && strings.Contains(*user, "."):
		return usageError(e, name, "--name %q: a %s user's name holds no '.' (it names its notification consumer)", *user, r)
	case *out == "":
		return usageError(e, name, "--out is required")
	case *dataDir == "":
		return usageError(e, name, "--data-dir must not be empty")
	}
	if *user == "" {
		*user = *role
		if *ods != "" {
			*user += "-" + *ods
		}
	}
	// Claim the seed file first, so that a user is never listed whose seed
	// could not be written.
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return failure(e, name, err)
	}
	u, seed, err := broker.AddNATSUser(*dataDir, *user, r, *ods, e.now())
	if err != nil {
		f.Close()
		os.Remove(*out)
		return failure(e, name, err)
	}
	_, werr := f.Write(append(seed, '\n'))
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(*out)
		if _, rerr := broker.RemoveNATSUser(*dataDir, u.Name); rerr != nil {
			fmt.Fprintf(e.stderr, "epsctl %s: remove the half-made user %s: %v\n", name, u.Name, rerr)
		}
		return failure(e, name, werr)
	}
	fmt.Fprintf(e.stdout, "NATS user %s (%s", u.Name, u.Role)
	if u.ODS != "" {
		fmt.Fprintf(e.stdout, " %s", u.ODS)
	}
	fmt.Fprintf(e.stdout, ") public key %s; seed written to %s\nrestart the broker to let it in\n", u.NKey, *out)
	return exitOK
}

// runNATSUserList implements "epsctl nats-user list".
func runNATSUserList(_ context.Context, e *env, args []string) int {
	const name = "nats-user list"
	fset := newFlagSet(name, "[flags]", "Lists the NATS users of the data dir: name, role, ODS code, public key, when made.")
	dataDir := fset.String("data-dir", defaultDataDir(e), "the broker's data directory `DIR` (env EPS_DATA_DIR)")
	if code, ok := parseFlags(fset, e, args); !ok {
		return code
	}
	if fset.NArg() > 0 {
		return usageError(e, name, "unexpected argument %q", fset.Arg(0))
	}
	users, err := broker.LoadNATSUsers(*dataDir)
	if err != nil {
		return failure(e, name, err)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tROLE\tODS\tPUBLIC KEY\tCREATED")
	for _, u := range users {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", u.Name, u.Role, u.ODS, u.NKey, u.Created.Format("2006-01-02T15:04:05Z"))
	}
	if err := w.Flush(); err != nil {
		return failure(e, name, err)
	}
	return exitOK
}

// runNATSUserRemove implements "epsctl nats-user remove".
func runNATSUserRemove(_ context.Context, e *env, args []string) int {
	const name = "nats-user remove"
	fset := newFlagSet(name, "--name NAME [flags]", "Removes a NATS user from the data dir's users file; restart the broker to shut it out.")
	dataDir := fset.String("data-dir", defaultDataDir(e), "the broker's data directory `DIR` (env EPS_DATA_DIR)")
	user := fset.String("name", "", "the user's `NAME` (required)")
	if code, ok := parseFlags(fset, e, args); !ok {
		return code
	}
	switch {
	case fset.NArg() > 0:
		return usageError(e, name, "unexpected argument %q", fset.Arg(0))
	case *user == "":
		return usageError(e, name, "--name is required")
	}
	removed, err := broker.RemoveNATSUser(*dataDir, *user)
	if err != nil {
		return failure(e, name, err)
	}
	if !removed {
		return failure(e, name, fmt.Errorf("no NATS user %q in %s: %w", *user, broker.NATSUsersPath(*dataDir), fs.ErrNotExist))
	}
	fmt.Fprintf(e.stdout, "NATS user %s removed; restart the broker to shut it out\n", *user)
	return exitOK
}
