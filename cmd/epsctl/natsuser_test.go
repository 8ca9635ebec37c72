package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/nhs-eps/epsbroker/broker"
)

// nats-user add writes the seed (0600) and lists only the public key; list
// shows the users; remove takes one out.
func TestNATSUserAddListRemove(t *testing.T) {
	dir := t.TempDir()
	out := t.TempDir()
	seedFile := filepath.Join(out, "fa565.nk")
	r := runEpsctl(t, nil, "nats-user", "add", "--data-dir", dir, "--role", "dispenser", "--ods", "FA565", "--out", seedFile)
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	st, err := os.Stat(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("seed file mode %v, want 0600", st.Mode().Perm())
	}
	seed, _ := os.ReadFile(seedFile)
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		t.Fatalf("seed file: %v", err)
	}
	pub, _ := kp.PublicKey()

	users, err := broker.LoadNATSUsers(dir)
	if err != nil || len(users) != 1 {
		t.Fatalf("users %v, %v", users, err)
	}
	if u := users[0]; u.Name != "dispenser-FA565" || u.Role != broker.NATSRoleDispenser || u.ODS != "FA565" || u.NKey != pub {
		t.Errorf("user %+v, key %s", u, pub)
	}
	file, _ := os.ReadFile(broker.NATSUsersPath(dir))
	if strings.Contains(string(file), strings.TrimSpace(string(seed))) {
		t.Error("the users file holds the seed")
	}
	if st, _ := os.Stat(broker.NATSUsersPath(dir)); st.Mode().Perm() != 0o600 {
		t.Errorf("users file mode %v, want 0600", st.Mode().Perm())
	}

	r = runEpsctl(t, nil, "nats-user", "add", "--data-dir", dir, "--role", "inspect", "--name", "ops", "--out", filepath.Join(out, "ops.nk"))
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	r = runEpsctl(t, map[string]string{"EPS_DATA_DIR": dir}, "nats-user", "list")
	if r.code != exitOK || !strings.Contains(r.stdout, "dispenser-FA565") || !strings.Contains(r.stdout, "ops") || !strings.Contains(r.stdout, pub) {
		t.Errorf("list: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// The same name again is refused, and its seed file is not left behind.
	again := filepath.Join(out, "again.nk")
	r = runEpsctl(t, nil, "nats-user", "add", "--data-dir", dir, "--role", "inspect", "--name", "ops", "--out", again)
	if r.code != exitFailure {
		t.Errorf("duplicate name: exit %d", r.code)
	}
	if _, err := os.Stat(again); err == nil {
		t.Error("a seed file was left for a refused user")
	}
	// An existing seed file is never overwritten.
	r = runEpsctl(t, nil, "nats-user", "add", "--data-dir", dir, "--role", "inspect", "--name", "ops2", "--out", seedFile)
	if r.code != exitFailure {
		t.Errorf("existing --out: exit %d", r.code)
	}
	if now, _ := os.ReadFile(seedFile); string(now) != string(seed) {
		t.Error("an existing seed file was overwritten")
	}

	r = runEpsctl(t, nil, "nats-user", "remove", "--data-dir", dir, "--name", "dispenser-FA565")
	if r.code != exitOK {
		t.Fatalf("remove: exit %d: %s", r.code, r.stderr)
	}
	if users, _ := broker.LoadNATSUsers(dir); len(users) != 1 || users[0].Name != "ops" {
		t.Errorf("after remove: %+v", users)
	}
	if r = runEpsctl(t, nil, "nats-user", "remove", "--data-dir", dir, "--name", "dispenser-FA565"); r.code != exitFailure {
		t.Errorf("remove again: exit %d", r.code)
	}
}

func TestNATSUserAddBadUsage(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(t.TempDir(), "u.nk")
	for name, args := range map[string][]string{
		"no role":           {"--out", out},
		"bad role":          {"--role", "admin", "--out", out},
		"dispenser no ods":  {"--role", "dispenser", "--out", out},
		"bad ods":           {"--role", "dispenser", "--ods", "FA.565", "--out", out},
		"wildcard ods":      {"--role", "prescriber", "--ods", "*", "--out", out},
		"inspect with ods":  {"--role", "inspect", "--ods", "FA565", "--out", out},
		"no out":            {"--role", "inspect"},
		"extra argument":    {"--role", "inspect", "--out", out, "please"},
		"unknown flag":      {"--role", "inspect", "--out", out, "--admin"},
		"name with a space": {"--role", "inspect", "--out", out, "--name", "a b"},
	} {
		t.Run(name, func(t *testing.T) {
			r := runEpsctl(t, nil, append([]string{"nats-user", "add", "--data-dir", dir}, args...)...)
			if r.code == exitOK {
				t.Fatalf("exit 0: %s", r.stdout)
			}
			if r.stderr == "" {
				t.Error("nothing on stderr")
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("a seed file was written")
				os.Remove(out)
			}
		})
	}
	if users, err := broker.LoadNATSUsers(dir); err != nil || len(users) != 0 {
		t.Errorf("users %v, %v", users, err)
	}
}
