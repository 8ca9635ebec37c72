// Command epsctl is the operator's tool for the EPS broker.
//
// Usage:
//
//	epsctl <command> [flags]
//
// Each command lives in a file of its own and adds itself to the dispatcher
// with register, from an init function; a command's name may have several
// words ("tracker rebuild"). Every command writes its result to stdout and
// its diagnostics to stderr, and exits 0 on success, 1 on failure and 2 on
// bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Exit codes of every command.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// env is what a command may use of the outside world, so that tests can run
// commands in-process.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
}

// command is one epsctl subcommand.
type command struct {
	// name is the words that select the command, e.g. "token" or
	// "tracker rebuild".
	name string
	// summary is a one-line description for the command list.
	summary string
	// run runs the command with the arguments after its name and returns
	// the exit code.
	run func(ctx context.Context, e *env, args []string) int
}

// commands are all registered commands.
var commands []command

// register adds c to the commands; call it from an init function.
func register(c command) {
	if c.name == "" || c.run == nil {
		panic("epsctl: command without name or run function")
	}
	for _, other := range commands {
		if other.name == c.name {
			panic("epsctl: command " + c.name + " registered twice")
		}
	}
	commands = append(commands, c)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], &env{
		stdout: os.Stdout,
		stderr: os.Stderr,
		getenv: os.Getenv,
		now:    time.Now,
	})
	stop()
	os.Exit(code)
}

// run dispatches args (without the program name) to a command and returns
// the exit code.
func run(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 {
		fmt.Fprintln(e.stderr, "epsctl: no command given")
		printUsage(e.stderr, "")
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		printUsage(e.stdout, "")
		return exitOK
	case "help":
		if len(args) == 1 {
			printUsage(e.stdout, "")
			return exitOK
		}
		// "epsctl help token" is "epsctl token --help".
		args = append(slices.Clone(args[1:]), "--help")
	}

	if c, rest, ok := lookup(args); ok {
		return c.run(ctx, e, rest)
	}
	// A group's name alone, or with an unknown subcommand: list the group.
	if prefix := groupOf(args); prefix != "" {
		fmt.Fprintf(e.stderr, "epsctl: %q needs a subcommand\n", strings.Join(args, " "))
		printUsage(e.stderr, prefix)
		return exitUsage
	}
	fmt.Fprintf(e.stderr, "epsctl: unknown command %q\n", args[0])
	printUsage(e.stderr, "")
	return exitUsage
}

// lookup finds the command whose name is the longest prefix of args and
// returns it with the remaining arguments.
func lookup(args []string) (command, []string, bool) {
	var best command
	bestLen := 0
	for _, c := range commands {
		words := strings.Fields(c.name)
		if len(words) > bestLen && len(args) >= len(words) && slices.Equal(words, args[:len(words)]) {
			best, bestLen = c, len(words)
		}
	}
	return best, args[bestLen:], bestLen > 0
}

// groupOf returns the longest leading words of args that begin the names
// of longer commands ("tracker" for "tracker rebuild"), or "".
func groupOf(args []string) string {
	group := ""
	for _, c := range commands {
		words := strings.Fields(c.name)
		for n := len(words) - 1; n > 0; n-- {
			if len(args) >= n && slices.Equal(words[:n], args[:n]) {
				if p := strings.Join(words[:n], " "); len(p) > len(group) {
					group = p
				}
				break
			}
		}
	}
	return group
}

// printUsage lists the commands whose names start with prefix ("" for
// all).
func printUsage(w io.Writer, prefix string) {
	fmt.Fprintf(w, "Usage: %s <command> [flags]\n\nCommands:\n", strings.TrimSpace("epsctl "+prefix))
	list := slices.Clone(commands)
	slices.SortFunc(list, func(a, b command) int { return strings.Compare(a.name, b.name) })
	width := 0
	for _, c := range list {
		width = max(width, len(c.name))
	}
	for _, c := range list {
		if prefix == "" || strings.HasPrefix(c.name, prefix+" ") {
			fmt.Fprintf(w, "  %-*s  %s\n", width, c.name, c.summary)
		}
	}
	fmt.Fprintf(w, "\nRun 'epsctl <command> --help' for a command's flags.\n")
}

// newFlagSet returns a flag set for the command name whose usage text
// describes it; parse it with parseFlags.
func newFlagSet(name, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet("epsctl "+name, flag.ContinueOnError)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: epsctl %s %s\n\n%s\n\nFlags:\n", name, synopsis, strings.TrimSpace(description))
		fs.VisitAll(func(f *flag.Flag) {
			arg, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(w, "  --%s", f.Name)
			if arg != "" {
				fmt.Fprintf(w, " %s", arg)
			}
			fmt.Fprintf(w, "\n      %s", usage)
			if f.DefValue != "" {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(w)
		})
	}
	return fs
}

// parseFlags parses args into fs. With --help it prints the usage on stdout;
// on a bad flag it prints the error and the usage on stderr. ok is false
// when the command should return code at once.
func parseFlags(fs *flag.FlagSet, e *env, args []string) (code int, ok bool) {
	usage := fs.Usage
	fs.Usage = func() {} // printed below, on the right stream
	fs.SetOutput(e.stderr)
	err := fs.Parse(args)
	fs.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(e.stdout)
		fs.Usage()
		return exitOK, false
	case err != nil:
		// fs has printed the error.
		fs.Usage()
		return exitUsage, false
	}
	return exitOK, true
}

// usageError reports bad usage of the command name and returns exitUsage.
func usageError(e *env, name, format string, args ...any) int {
	fmt.Fprintf(e.stderr, "epsctl %s: %s\n", name, fmt.Sprintf(format, args...))
	fmt.Fprintf(e.stderr, "Run 'epsctl %s --help' for usage.\n", name)
	return exitUsage
}

// failure reports that the command name failed and returns exitFailure.
func failure(e *env, name string, err error) int {
	fmt.Fprintf(e.stderr, "epsctl %s: %v\n", name, err)
	return exitFailure
}
