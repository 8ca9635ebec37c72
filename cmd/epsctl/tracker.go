package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/config"
)

func init() {
	register(command{
		name:    "tracker rebuild",
		summary: "rebuild the tracker's status index from the event log alone",
		run:     runTrackerRebuild,
	})
}

// runTrackerRebuild replays the whole event log into a new tracker index and
// writes it as the data dir's index snapshot, which the broker loads on its
// next start. The broker using the data dir must be stopped (the data dir's
// lock says so): with the embedded server this opens its JetStream store;
// with --nats-url it reads the external cluster, which other brokers may go
// on using. It only reads the event log: no stream is created or changed.
func runTrackerRebuild(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("epsctl tracker rebuild", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	dataDir := fs.String("data-dir", defaultDataDir(e), "the broker's data dir (env EPS_DATA_DIR)")
	natsURL := fs.String("nats-url", e.getenv("EPS_NATS_URL"), "external NATS server URLs; empty opens the data dir's embedded store (stop the broker first)")
	creds := fs.String("nats-creds", e.getenv("EPS_NATS_CREDS"), "external NATS credentials file")
	quiet := fs.Bool("quiet", false, "no progress bar")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: epsctl tracker rebuild [--data-dir DIR] [--nats-url URL]\n\nReplays the event log (EPS_EVENTS) into a new tracker index and writes it to\nDIR/tracker/index.gob, which the broker loads on its next start.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "epsctl tracker rebuild: unexpected arguments %v\n", fs.Args())
		return exitUsage
	}
	cfg := config.Default()
	cfg.DataDir, cfg.NATSURL, cfg.NATSCreds = *dataDir, *natsURL, *creds
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(e.stderr, "epsctl tracker rebuild:", err)
		return exitUsage
	}
	if cfg.NATSURL == "" {
		if _, err := os.Stat(cfg.DataDir); err != nil {
			fmt.Fprintf(e.stderr, "epsctl tracker rebuild: data dir %s: %v\n", cfg.DataDir, err)
			return exitFailure
		}
	}
	// The broker using the data dir must be stopped: it would write its own
	// snapshot over this one, and (embedded) it holds the JetStream store.
	unlock, err := broker.LockDataDir(cfg.DataDir)
	if err != nil {
		fmt.Fprintln(e.stderr, "epsctl tracker rebuild: stop the broker using this data dir first:", err)
		return exitFailure
	}
	defer unlock()
	n, err := broker.ConnectNATS(ctx, cfg, zap.NewNop())
	if err != nil {
		fmt.Fprintln(e.stderr, "epsctl tracker rebuild:", err)
		return exitFailure
	}
	defer n.Close()
	js, err := jetstream.New(n.Conn)
	if err != nil {
		fmt.Fprintln(e.stderr, "epsctl tracker rebuild:", err)
		return exitFailure
	}
	var bar *progressbar.ProgressBar
	start := time.Now()
	progress := func(done, total uint64) {
		if *quiet {
			return
		}
		if bar == nil {
			bar = progressbar.NewOptions64(int64(total), progressbar.OptionSetWriter(e.stderr),
				progressbar.OptionSetDescription("events"), progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond))
		}
		_ = bar.Set64(int64(done))
	}
	ix, skipped, err := broker.RebuildTrackerIndex(ctx, js, progress)
	if err != nil {
		fmt.Fprintln(e.stderr, "\nepsctl tracker rebuild:", err)
		return exitFailure
	}
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(e.stderr)
	}
	path := broker.SnapshotPath(cfg.DataDir)
	if err := ix.SaveSnapshot(path); err != nil {
		fmt.Fprintln(e.stderr, "epsctl tracker rebuild: write snapshot:", err)
		return exitFailure
	}
	for _, sk := range skipped {
		fmt.Fprintf(e.stderr, "epsctl tracker rebuild: skipped event log message %d, not the broker's (the running broker puts it in %s): %s\n",
			sk.Seq, broker.StreamDead, sk.Reason)
	}
	fmt.Fprintf(e.stdout, "rebuilt the tracker index: %d prescriptions, event log up to sequence %d, in %s; written to %s\n",
		ix.Len(), ix.Applied(), time.Since(start).Round(time.Millisecond), path)
	return exitOK
}
