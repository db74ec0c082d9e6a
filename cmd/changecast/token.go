package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"changecast/handlers"
	"changecast/store"
)

// tokenFlags are the token command's flags.
type tokenFlags struct {
	sub, role, rooms string
	ttl              durationFlag
}

// tokenCommand returns the token command's flags.
func tokenCommand() (*command, *tokenFlags) {
	f := tokenFlags{ttl: durationFlag(time.Hour)}
	c := &command{
		name:     "token",
		synopsis: "token -sub NAME [-role customer|staff] [-rooms ROOM,...] [-ttl 1h]",
		about:    "Print an HS256 token signed with JWT_SECRET (at least 32 bytes), for curl and tail.",
		fs:       flag.NewFlagSet("changecast token", flag.ContinueOnError),
	}
	c.fs.StringVar(&f.sub, "sub", "", "subject: the user name (required)")
	c.fs.StringVar(&f.role, "role", handlers.RoleCustomer, "role: customer or staff")
	c.fs.StringVar(&f.rooms, "rooms", "", "comma-separated rooms the token may read and post to; * for all")
	c.fs.Var(&f.ttl, "ttl", "how long the token is valid, such as 90m or 24h")
	return c, &f
}

// durationFlag is a positive duration flag whose error says what is wrong.
type durationFlag time.Duration

func (d *durationFlag) String() string { return time.Duration(*d).String() }

func (d *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return errors.New("not a duration: want a number with a unit (h, m or s), such as 90m or 24h")
	case v <= 0:
		return errors.New("not positive: want a duration such as 90m or 24h")
	}
	*d = durationFlag(v)
	return nil
}

// runToken prints a token signed with JWT_SECRET. It warns on stderr
// when the token names no room.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, f := tokenCommand()
	if err := c.parse(args, stdout); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		return usagef("token", "unexpected argument %q (flags come as -name value)", c.fs.Arg(0))
	}
	if f.sub == "" {
		return usagef("token", "-sub is required: the user the token is for")
	}
	if f.role != handlers.RoleCustomer && f.role != handlers.RoleStaff {
		return usagef("token", "-role %q: want customer or staff", f.role)
	}
	var list []string
	for _, r := range strings.Split(f.rooms, ",") {
		if r = strings.TrimSpace(r); r != "" {
			if r != "*" && !store.ValidRoom(r) {
				return usagef("token", "-rooms: %q is not a valid room name", r)
			}
			list = append(list, r)
		}
	}
	secret := strings.TrimSpace(getenv("JWT_SECRET"))
	switch {
	case secret == "":
		return errors.New("JWT_SECRET must be set (at least 32 bytes) to sign a token: the server's own")
	case len(secret) < 32:
		return errors.New("JWT_SECRET is too short (at least 32 bytes)")
	}
	if len(list) == 0 {
		fmt.Fprintln(stderr, "changecast: warning: no -rooms given: this token can read and post to no room (give -rooms lobby,kitchen or -rooms '*')")
	}
	tok, err := handlers.IssueToken([]byte(secret), f.sub, f.role, list, time.Duration(f.ttl), time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
