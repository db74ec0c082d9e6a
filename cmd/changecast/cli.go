package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"

	"changecast/internal/loadgen"
)

// Exit statuses of runMain.
const (
	exitOK      = 0 // done, or help printed because it was asked for
	exitFailure = 1 // the command failed
	exitUsage   = 2 // a bad command line
)

// runMain runs the command in args and returns its exit status. It prints
// every error once, to stderr, each line prefixed "changecast: "; a bad
// command line also gets a one-line hint naming the command's -h. Help
// asked for (help, -h, --help) is printed to stdout and exits 0.
func runMain(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	err := run(ctx, args, getenv, stdout, stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintln(stderr, "changecast:", line)
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "run '%s -h' for usage\n", strings.TrimSpace("changecast "+ue.cmd))
		return exitUsage
	}
	return exitFailure
}

// usageError is a bad command line: an unknown flag or command, a bad
// flag value, a missing or extra argument.
type usageError struct {
	cmd string // the command ("" for the server), named in the hint
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usageError of command cmd.
func usagef(cmd, format string, a ...any) error {
	return &usageError{cmd: cmd, err: fmt.Errorf(format, a...)}
}

// command is one subcommand's flags and usage text, built afresh for each
// parse (and for the help, which lists every command's flags).
type command struct {
	name     string // as typed after changecast; "" for the server
	synopsis string // the usage line after "changecast "
	about    string // what it does, printed under the usage line
	fs       *flag.FlagSet
}

// printUsage writes c's usage line, what it does and its flags to w.
func (c *command) printUsage(w io.Writer) {
	fmt.Fprintf(w, "usage: changecast %s\n\n%s\n", c.synopsis, c.about)
	if hasFlags(c.fs) {
		fmt.Fprintln(w, "\nflags:")
		c.fs.SetOutput(w)
		c.fs.PrintDefaults()
		c.fs.SetOutput(io.Discard)
	}
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parse parses args with c's flags. -h prints the usage to stdout and
// returns flag.ErrHelp; a bad flag returns a usageError (printed once, by
// runMain, instead of by the flag package with the whole usage).
func (c *command) parse(args []string, stdout io.Writer) error {
	c.fs.SetOutput(io.Discard)
	c.fs.Usage = func() {}
	err := c.fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		c.printUsage(stdout)
		return flag.ErrHelp
	case err != nil:
		return &usageError{cmd: c.name, err: err}
	}
	return nil
}

// runHelp is `changecast help [COMMAND]`: the whole help, or one
// command's usage.
func runHelp(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		printHelp(ctx, stdout)
		return nil
	}
	if len(args) > 1 {
		return usagef("help", "help takes at most one command, got %q", args)
	}
	switch args[0] {
	case "server", "serve":
		c, _ := serverCommand()
		c.printUsage(stdout)
	case "token":
		c, _ := tokenCommand()
		c.printUsage(stdout)
	case "tail":
		c, _ := tailCommand()
		c.printUsage(stdout)
	case "bench":
		stdout.Write(benchUsage(ctx))
	case "backup":
		c, _ := backupCommand()
		c.printUsage(stdout)
	case "check":
		checkCommand().printUsage(stdout)
	case "help", "version":
		printHelp(ctx, stdout)
	default:
		return usagef("help", "no command %q (commands: server, token, tail, bench, backup, check, help, version)", args[0])
	}
	return nil
}

// printHelp writes the commands, their flags and the environment
// variables (from envVars, with their defaults) to w.
func printHelp(ctx context.Context, w io.Writer) {
	fmt.Fprint(w, `changecast serves database changes as Server-Sent Events.

usage:
  changecast [-dev]                   run the server (the default command)
  changecast token -sub NAME [flags]  print a token signed with JWT_SECRET
  changecast tail [flags] URL         follow a stream and print its events
  changecast bench [flags]            load a server on this machine
  changecast backup -url URL -o FILE  copy a running server's embedded store
  changecast check FILE               check a store file and say what it holds
  changecast help [COMMAND]           print this help, or one command's
  changecast version                  print the version and the commit
`)
	server, _ := serverCommand()
	token, _ := tokenCommand()
	tail, _ := tailCommand()
	backup, _ := backupCommand()
	for _, c := range []*command{server, token, tail, backup} {
		name := c.name
		if name == "" {
			name = "server"
		}
		fmt.Fprintf(w, "\n%s flags:\n", name)
		c.fs.SetOutput(w)
		c.fs.PrintDefaults()
	}
	// loadgen owns bench's flags: its own -h lists them.
	usage := benchUsage(ctx)
	if _, flags, ok := bytes.Cut(usage, []byte("\n")); ok {
		fmt.Fprintf(w, "\nbench flags:\n%s", flags)
	}
	fmt.Fprintln(w, "\nenvironment (server; checked at start):")
	printEnv(w)
	fmt.Fprintln(w, "\nenvironment (tail, bench and backup):")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "  CHANGECAST_TOKEN\tunset\tthe bearer token sent unless -token is given\n")
	tw.Flush()
	fmt.Fprintln(w, "\nSee README.md and docs/api.md.")
}

// printEnv writes one line per server environment variable: its name,
// its default and what it is, with the form it accepts.
func printEnv(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, ev := range envVars {
		def := ev.def
		if def == "" {
			def = "unset"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s (%s)\n", ev.name, def, ev.doc, ev.form)
	}
	tw.Flush()
}

// benchUsage returns what `changecast bench -h` prints: the usage line,
// then its flags.
func benchUsage(ctx context.Context) []byte {
	var b bytes.Buffer
	_ = loadgen.Run(ctx, []string{"-h"}, func(string) string { return "" }, &b, io.Discard)
	return b.Bytes()
}

// version is the version shown; set it at build time with
// -ldflags "-X main.version=..." (the Heroku buildpack does, with the
// commit, when GO_LINKER_SYMBOL=main.version). Empty means the main
// module's version from the build info.
var version = ""

// versionLine is what `changecast version` prints.
func versionLine() string {
	info, ok := debug.ReadBuildInfo()
	return describeVersion(version, info, ok)
}

// describeVersion describes a build by what it knows: the version
// (override, else the main module's, else "dev"), the VCS revision with
// "+dirty" when the tree had changes and its commit time when the build
// carries them (not a test binary, nor a build outside a git checkout,
// such as the Heroku buildpack's, whose override is the commit), and the
// Go version.
func describeVersion(override string, info *debug.BuildInfo, ok bool) string {
	v, goVersion := override, runtime.Version()
	var rev, at string
	dirty := false
	if ok && info != nil {
		if v == "" {
			v = info.Main.Version
		}
		if info.GoVersion != "" {
			goVersion = info.GoVersion
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if v == "" || v == "(devel)" {
		v = "dev"
	}
	if rev == "" {
		return fmt.Sprintf("changecast %s (%s)", v, goVersion)
	}
	commit := "commit " + rev
	if dirty {
		commit += "+dirty"
	}
	if at != "" {
		commit += " of " + at
	}
	return fmt.Sprintf("changecast %s (%s, %s)", v, commit, goVersion)
}
