package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
)

// result is what one in-process run of epsctl produced.
type result struct {
	code           int
	stdout, stderr string
}

// runEpsctl runs epsctl with args and the given environment variables.
func runEpsctl(t *testing.T, environ map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &env{
		stdout: &stdout,
		stderr: &stderr,
		getenv: func(k string) string { return environ[k] },
		now:    time.Now,
	})
	return result{code, stdout.String(), stderr.String()}
}

// verify checks that out is one token line that a verifier trusting the
// issuer key of dataDir accepts, and returns its principal.
func verify(t *testing.T, dataDir, issuer, audience, out string) auth.Principal {
	t.Helper()
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("stdout is not exactly one line: %q", out)
	}
	key, err := auth.LoadOrCreateIssuerKey(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(context.Background(), auth.VerifierConfig{
		Issuer: issuer, Audience: audience, LocalKey: key.Public().(ed25519.PublicKey),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	p, err := v.Verify(strings.TrimSuffix(out, "\n"))
	if err != nil {
		t.Fatalf("the broker would reject the token: %v", err)
	}
	return p
}

func TestToken(t *testing.T) {
	dir := t.TempDir()
	r := runEpsctl(t, nil, "token", "--data-dir", dir, "--role", "dispenser", "--ods", "FA565", "--sub", "555123456789", "--ttl", "15m")
	if r.code != exitOK {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	p := verify(t, dir, auth.DefaultIssuer, auth.DefaultAudience, r.stdout)
	if p.Expires.Sub(time.Now()) > 15*time.Minute || p.Expires.Before(time.Now()) {
		t.Errorf("token expires at %v, want in 15 minutes", p.Expires)
	}
	p.Expires = time.Time{}
	if want := (auth.Principal{Subject: "555123456789", ODS: "FA565", Role: auth.RoleDispenser}); p != want {
		t.Errorf("principal %+v, want %+v", p, want)
	}
	if !strings.Contains(r.stderr, "created a new issuer key") {
		t.Errorf("stderr %q does not mention the new key", r.stderr)
	}

	// The second token uses the same key and says nothing on stderr.
	r = runEpsctl(t, nil, "token", "-data-dir="+dir, "-role=admin", "-ods=A83008")
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	p = verify(t, dir, auth.DefaultIssuer, auth.DefaultAudience, r.stdout)
	p.Expires = time.Time{}
	if want := (auth.Principal{Subject: "admin-A83008", ODS: "A83008", Role: auth.RoleAdmin}); p != want {
		t.Errorf("principal %+v, want %+v (default sub)", p, want)
	}
}

func TestTokenDataDirFromEnvAndCustomClaims(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "broker-data")
	r := runEpsctl(t, map[string]string{"EPS_DATA_DIR": dir},
		"token", "--role", "tracker", "--ods", "84H", "--issuer", "test-iss", "--audience", "test-aud")
	if r.code != exitOK {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(auth.IssuerKeyPath(dir)); err != nil {
		t.Fatalf("no key in $EPS_DATA_DIR: %v", err)
	}
	p := verify(t, dir, "test-iss", "test-aud", r.stdout)
	if p.Role != auth.RoleTracker || p.ODS != "84H" || p.Subject != "tracker-84H" {
		t.Errorf("principal %+v", p)
	}
}

func TestTokenBadUsage(t *testing.T) {
	dir := t.TempDir()
	for name, args := range map[string][]string{
		"bad role":         {"--role", "doctor", "--ods", "FA565"},
		"role in capitals": {"--role", "Dispenser", "--ods", "FA565"},
		"no role":          {"--ods", "FA565"},
		"bad ods":          {"--role", "dispenser", "--ods", "FA 565"},
		"ods too long":     {"--role", "dispenser", "--ods", "ABCDEFGHI"},
		"no ods":           {"--role", "dispenser"},
		"bad ttl":          {"--role", "dispenser", "--ods", "FA565", "--ttl", "soon"},
		"negative ttl":     {"--role", "dispenser", "--ods", "FA565", "--ttl", "-1h"},
		"unknown flag":     {"--role", "dispenser", "--ods", "FA565", "--colour", "red"},
		"extra argument":   {"--role", "dispenser", "--ods", "FA565", "please"},
		"empty issuer":     {"--role", "dispenser", "--ods", "FA565", "--issuer", ""},
	} {
		t.Run(name, func(t *testing.T) {
			r := runEpsctl(t, nil, append([]string{"token", "--data-dir", dir}, args...)...)
			if r.code != exitUsage {
				t.Errorf("exit %d, want %d", r.code, exitUsage)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			if r.stderr == "" {
				t.Error("nothing on stderr")
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "keys")); err == nil {
		t.Error("bad usage created a key")
	}
}

func TestTokenFailure(t *testing.T) {
	// A data dir that is a file cannot hold a key.
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := runEpsctl(t, nil, "token", "--data-dir", file, "--role", "dispenser", "--ods", "FA565")
	if r.code != exitFailure || r.stdout != "" || !strings.Contains(r.stderr, "epsctl token:") {
		t.Errorf("got %+v, want exit %d with a message on stderr only", r, exitFailure)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		r := runEpsctl(t, nil, args...)
		if r.code != exitOK || !strings.Contains(r.stdout, "token") || !strings.Contains(r.stdout, "Usage: epsctl") {
			t.Errorf("%v: got %+v", args, r)
		}
	}
	for _, args := range [][]string{{"token", "--help"}, {"token", "-h"}, {"help", "token"}} {
		r := runEpsctl(t, nil, args...)
		if r.code != exitOK || r.stderr != "" {
			t.Errorf("%v: got %+v", args, r)
		}
		for _, want := range []string{"Usage: epsctl token", "--data-dir DIR", "--role ROLE", "--ods ODS", "--sub ID", "--ttl DUR", "--issuer", "--audience", "prescriber"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%v: usage lacks %q:\n%s", args, want, r.stdout)
			}
		}
	}
}

func TestDispatch(t *testing.T) {
	saved := slices.Clone(commands)
	t.Cleanup(func() { commands = saved })
	commands = nil // only the test's commands
	var got []string
	for _, name := range []string{"tracker rebuild", "tracker", "nominations import"} {
		register(command{name: name, summary: "test " + name, run: func(_ context.Context, _ *env, args []string) int {
			got = append([]string{name}, args...)
			return exitOK
		}})
	}

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"tracker", "rebuild", "--all"}, []string{"tracker rebuild", "--all"}},
		{[]string{"tracker", "--x"}, []string{"tracker", "--x"}},
		{[]string{"nominations", "import", "f.csv"}, []string{"nominations import", "f.csv"}},
	} {
		got = nil
		if r := runEpsctl(t, nil, tc.args...); r.code != exitOK || !slices.Equal(got, tc.want) {
			t.Errorf("%v: exit %d, ran %v, want %v", tc.args, r.code, got, tc.want)
		}
	}

	// A group without its subcommand lists the group.
	r := runEpsctl(t, nil, "nominations")
	if r.code != exitUsage || !strings.Contains(r.stderr, "nominations import") || strings.Contains(r.stderr, "tracker") {
		t.Errorf("group alone: %+v", r)
	}
	for _, args := range [][]string{{}, {"frobnicate"}} {
		r := runEpsctl(t, nil, args...)
		if r.code != exitUsage || r.stdout != "" || !strings.Contains(r.stderr, "Usage: epsctl") {
			t.Errorf("%v: %+v", args, r)
		}
	}
}
