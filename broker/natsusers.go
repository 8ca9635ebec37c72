package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// NATS users of the embedded server's --nats-listen port. Every client must
// authenticate with an nkey (an ed25519 key pair: the server holds only the
// public key, the client keeps the seed). The broker itself connects
// in-process with a key pair made afresh at every start and never written
// down. The users an operator makes with "epsctl nats-user add" are kept in
// DATA_DIR/keys/nats-users.json (0600) and read when the broker starts.

// NATSUsersFile is the name of the users file inside DATA_DIR/keys.
const NATSUsersFile = "nats-users.json"

// NATSRole is what a NATS user may do.
type NATSRole string

const (
	// NATSRoleInspect may list streams and consumers and read their
	// configuration and counts (nats stream ls / report / info, nats
	// consumer ls / info). It reads no message: records carry patient data,
	// and looking them up goes through the tracker, which audits every read.
	// It cannot publish to any stream, delete, purge or change anything.
	NATSRoleInspect NATSRole = "inspect"
	// NATSRoleDispenser may only read its own dispenser notifications,
	// eps.notify.dispenser.<ODS>.>: subscribe to them, and read and
	// acknowledge them with its durable consumer of EPS_NOTIFY (see
	// notifyPermissions).
	NATSRoleDispenser NATSRole = "dispenser"
	// NATSRolePrescriber may only read its own prescriber notifications,
	// eps.notify.prescriber.<ODS>.>, likewise.
	NATSRolePrescriber NATSRole = "prescriber"
)

// NATSRoles are the roles an operator can give a user.
func NATSRoles() []NATSRole {
	return []NATSRole{NATSRoleInspect, NATSRoleDispenser, NATSRolePrescriber}
}

// Valid reports whether r is one of NATSRoles.
func (r NATSRole) Valid() bool { return slices.Contains(NATSRoles(), r) }

// NeedsODS reports whether a user of the role belongs to one organisation.
func (r NATSRole) NeedsODS() bool { return r == NATSRoleDispenser || r == NATSRolePrescriber }

// NATSUser is one user of the --nats-listen port.
type NATSUser struct {
	Name    string    `json:"name"`
	Role    NATSRole  `json:"role"`
	ODS     string    `json:"ods,omitempty"`
	NKey    string    `json:"nkey"` // the public user key (U...)
	Created time.Time `json:"created"`
}

type natsUsersDoc struct {
	Users []NATSUser `json:"users"`
}

// brokerInbox is the reply subject prefix of the broker's own connection to
// the embedded server. Other users may subscribe to _INBOX.> for the
// answers to their own requests; the broker's answers (which include the
// messages it reads) go where no other user may subscribe.
const brokerInbox = "_EPS_BROKER_INBOX"

// NATSUsersPath is the users file of a data dir.
func NATSUsersPath(dataDir string) string { return filepath.Join(dataDir, "keys", NATSUsersFile) }

// LoadNATSUsers reads the users of a data dir (none when the file does not
// exist). Every entry is checked: a file that was edited by hand into
// something the broker would misread is refused, not skipped.
func LoadNATSUsers(dataDir string) ([]NATSUser, error) {
	path := NATSUsersPath(dataDir)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("NATS users: %w", err)
	}
	var doc natsUsersDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("NATS users %s: %w", path, err)
	}
	seen := map[string]bool{}
	keys := map[string]bool{}
	for _, u := range doc.Users {
		if err := u.check(); err != nil {
			return nil, fmt.Errorf("NATS users %s: %w", path, err)
		}
		if seen[u.Name] || keys[u.NKey] {
			return nil, fmt.Errorf("NATS users %s: user %q or its key is listed twice", path, u.Name)
		}
		seen[u.Name], keys[u.NKey] = true, true
	}
	return doc.Users, nil
}

// check validates one user entry.
func (u NATSUser) check() error {
	switch {
	case !validUserName(u.Name):
		return fmt.Errorf("user name %q: want 1 to 64 letters, digits, '-', '_' or '.'", u.Name)
	case !u.Role.Valid():
		return fmt.Errorf("user %s: role %q is not one of %v", u.Name, u.Role, NATSRoles())
	case u.Role.NeedsODS() && u.ODS == "":
		return fmt.Errorf("user %s: a %s user needs its organisation's ODS code", u.Name, u.Role)
	case u.Role.NeedsODS() && strings.Contains(u.Name, "."):
		// The name is its notification consumer's name and a token of its
		// inbox prefix, which hold no '.'.
		return fmt.Errorf("user name %q: a %s user's name holds no '.' (it names its notification consumer)", u.Name, u.Role)
	case !u.Role.NeedsODS() && u.ODS != "":
		return fmt.Errorf("user %s: an %s user belongs to no organisation (ods %q)", u.Name, u.Role, u.ODS)
	case !nkeys.IsValidPublicUserKey(u.NKey):
		return fmt.Errorf("user %s: %q is not a public user nkey", u.Name, u.NKey)
	}
	return nil
}

func validUserName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// AddNATSUser makes a key pair for a new user, adds its public key to the
// data dir's users file and returns the user and its seed (the secret the
// user's client connects with; the broker keeps no copy). A running broker
// reads the file when it starts.
func AddNATSUser(dataDir, name string, role NATSRole, ods string, now time.Time) (NATSUser, []byte, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return NATSUser{}, nil, err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return NATSUser{}, nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return NATSUser{}, nil, err
	}
	u := NATSUser{Name: name, Role: role, ODS: ods, NKey: pub, Created: now.UTC()}
	if err := u.check(); err != nil {
		return NATSUser{}, nil, err
	}
	users, err := LoadNATSUsers(dataDir)
	if err != nil {
		return NATSUser{}, nil, err
	}
	for _, o := range users {
		if o.Name == name {
			return NATSUser{}, nil, fmt.Errorf("NATS user %q exists; remove it first to give it a new key", name)
		}
	}
	if err := writeNATSUsers(dataDir, append(users, u)); err != nil {
		return NATSUser{}, nil, err
	}
	return u, seed, nil
}

// RemoveNATSUser takes a user out of the users file (false when there was
// none of that name). It takes effect when the broker next starts.
func RemoveNATSUser(dataDir, name string) (bool, error) {
	users, err := LoadNATSUsers(dataDir)
	if err != nil {
		return false, err
	}
	kept := slices.DeleteFunc(slices.Clone(users), func(u NATSUser) bool { return u.Name == name })
	if len(kept) == len(users) {
		return false, nil
	}
	return true, writeNATSUsers(dataDir, kept)
}

// writeNATSUsers replaces the users file atomically, readable by its owner
// only.
func writeNATSUsers(dataDir string, users []NATSUser) error {
	dir := filepath.Join(dataDir, "keys")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("NATS users: %w", err)
	}
	if users == nil {
		users = []NATSUser{}
	}
	b, err := json.MarshalIndent(natsUsersDoc{Users: users}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, NATSUsersFile+".*")
	if err != nil {
		return fmt.Errorf("NATS users: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("NATS users: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("NATS users: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("NATS users: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("NATS users: %w", err)
	}
	if err := os.Rename(tmp.Name(), NATSUsersPath(dataDir)); err != nil {
		return fmt.Errorf("NATS users: %w", err)
	}
	return nil
}

// Streams whose subjects (or keys) are per patient: pseudonyms of NHS
// numbers, and on audit entries written before pseudonyms the numbers
// themselves. The inspect role may not read their info, since a stream info
// request can list every subject.
var streamsKeyedByPatient = []string{StreamAudit, "KV_" + BucketNominations}

// inspectableStreams are the streams whose info the inspect role may read.
func inspectableStreams() []string {
	return []string{StreamEvents, StreamNotify, "KV_" + BucketRequests, "KV_" + BucketSessions, StreamDead}
}

// Permissions returns what the user may publish and subscribe to. Anything
// not allowed is denied.
func (u NATSUser) Permissions() *server.Permissions {
	denyAll := &server.SubjectPermission{Deny: []string{">"}}
	switch u.Role {
	case NATSRoleInspect:
		pub := []string{
			"$SYS.REQ.USER.INFO", // the user's own permissions (nats account info)
			"$JS.API.INFO",
			"$JS.API.STREAM.NAMES",
			"$JS.API.STREAM.LIST",
			"$JS.API.CONSUMER.NAMES.*",
			"$JS.API.CONSUMER.LIST.*",
			"$JS.API.CONSUMER.INFO.*.*",
		}
		for _, s := range inspectableStreams() {
			pub = append(pub, "$JS.API.STREAM.INFO."+s)
		}
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: pub},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}
	case NATSRoleDispenser, NATSRolePrescriber:
		return u.notifyPermissions()
	}
	// Unreachable for a checked user; a user of no known role may do nothing.
	return &server.Permissions{Publish: denyAll, Subscribe: denyAll}
}

// notifyPermissions are a dispenser's or prescriber's: subscribe to its own
// organisation's notifications (core NATS, the fast path), and read them
// from EPS_NOTIFY through the durable pull consumer the broker made for it
// (EnsureNotifyConsumers): its consumer's info, its next messages, and their
// acknowledgements, in both forms of ack subject the server uses
// ($JS.ACK.<stream>.<consumer>... and
// $JS.ACK.<domain>.<account hash>.<stream>.<consumer>...). Answers and
// messages come to its own inbox prefix, NotifyInboxPrefix, which no other
// user may subscribe to. It may not make, change or delete a consumer (a
// consumer's configuration could deliver messages to any subject), read any
// stream's info (which can list every organisation's subjects) or publish
// anything else.
func (u NATSUser) notifyPermissions() *server.Permissions {
	cons := NotifyConsumerName(u)
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.CONSUMER.INFO." + StreamNotify + "." + cons,
			"$JS.API.CONSUMER.MSG.NEXT." + StreamNotify + "." + cons,
			"$JS.ACK." + StreamNotify + "." + cons + ".>",
			"$JS.ACK.*.*." + StreamNotify + "." + cons + ".>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{NotifyFilter(u), NotifyInboxPrefix(u) + ".>"}},
	}
}

// embeddedAuth makes the broker's own key pair and the nkey users of the
// embedded server: the broker (every permission, in-process only) and the
// data dir's users.
func embeddedAuth(dataDir string) (nkeys.KeyPair, []*server.NkeyUser, []NATSUser, error) {
	users, err := LoadNATSUsers(dataDir)
	if err != nil {
		return nil, nil, nil, err
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("broker NATS key: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("broker NATS key: %w", err)
	}
	nk := []*server.NkeyUser{{
		Nkey: pub,
		// In-process only: the broker's key never leaves the process, and
		// even so it could not be used on the listener.
		AllowedConnectionTypes: map[string]struct{}{"IN_PROCESS": {}},
	}}
	for _, u := range users {
		nk = append(nk, &server.NkeyUser{
			Nkey:                   u.NKey,
			Permissions:            u.Permissions(),
			AllowedConnectionTypes: map[string]struct{}{"STANDARD": {}},
		})
	}
	return kp, nk, users, nil
}

// userNames lists users for the start-up log line.
func userNames(users []NATSUser) string {
	names := make([]string, 0, len(users))
	for _, u := range users {
		n := u.Name + " (" + string(u.Role)
		if u.ODS != "" {
			n += " " + u.ODS
		}
		names = append(names, n+")")
	}
	return strings.Join(names, ", ")
}
