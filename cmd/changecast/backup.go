package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"changecast/handlers"
	"changecast/store/bolt"
)

// backupFlags are the backup command's flags.
type backupFlags struct{ url, out, token string }

// backupCommand returns the backup command's flags.
func backupCommand() (*command, *backupFlags) {
	var f backupFlags
	c := &command{
		name:     "backup",
		synopsis: "backup -url URL -o FILE [-token T]",
		about: `Copy the embedded store of the server at URL (such as http://127.0.0.1:8080)
into FILE while it keeps serving and writing: a consistent snapshot of every
write committed before the copy began. The copy is written to FILE.tmp,
synced, checked as 'changecast check' does, then renamed to FILE (replacing
it). To restore, start a server with FILE as changecast.db in an empty
DATA_DIR. It needs a staff token: -token, else $CHANGECAST_TOKEN (not in
-dev mode). A server on MongoDB refuses: use mongodump there.`,
		fs: flag.NewFlagSet("changecast backup", flag.ContinueOnError),
	}
	c.fs.StringVar(&f.url, "url", "", "the server's base URL (required)")
	c.fs.StringVar(&f.out, "o", "", "the file to write (required)")
	c.fs.StringVar(&f.token, "token", "", "staff bearer token (default $CHANGECAST_TOKEN)")
	return c, &f
}

// runBackup is `changecast backup`: it saves a checked copy of a running
// server's store and says what it holds.
func runBackup(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	c, f := backupCommand()
	if err := c.parse(args, stdout); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		return usagef("backup", "unexpected argument %q (flags come as -name value)", c.fs.Arg(0))
	}
	if f.url == "" || f.out == "" {
		return usagef("backup", "-url and -o are required")
	}
	u, err := url.Parse(f.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("backup", "-url %q is not an http(s) URL", f.url)
	}
	u = u.JoinPath("api", "backup")
	tok := f.token
	if tok == "" {
		tok = getenv("CHANGECAST_TOKEN")
	}
	tmp := f.out + ".tmp"
	n, err := download(ctx, u.String(), tok, tmp)
	if err != nil {
		os.Remove(tmp)
		return err
	}
	// A server started on the copy moves its log past every position
	// the running server makes from now on (see bolt.MarkRestore).
	if err := bolt.MarkRestore(tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("the copy does not check out (nothing written to %s): %w", f.out, err)
	}
	r, err := bolt.Inspect(tmp)
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("the copy does not check out (nothing written to %s): %w", f.out, err)
	}
	if err := os.Rename(tmp, f.out); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	if err := syncDir(filepath.Dir(f.out)); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	r.Path = f.out
	fmt.Fprintf(stdout, "backup: %d bytes from %s\n%s", n, u.Redacted(), r)
	return nil
}

// download saves the answer of GET u into a new file at path, synced,
// and returns its size. It fails unless the server sent the whole copy:
// a 200, a clean end, and as many bytes as its trailer says.
func download(ctx context.Context, u, tok, path string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, refusal(resp)
	}
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	n, err := io.Copy(out, resp.Body)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("backup: the copy broke off after %d bytes: %w", n, err)
	}
	if want := resp.Trailer.Get(handlers.HeaderBackupSize); want != strconv.FormatInt(n, 10) {
		return n, fmt.Errorf("backup: got %d bytes, the server sent %q", n, want)
	}
	return n, nil
}

// refusal turns a backup answer other than 200 into an error saying what
// to do.
func refusal(resp *http.Response) error {
	var body struct{ Error string }
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = json.Unmarshal(raw, &body)
	msg := body.Error
	if msg == "" {
		msg = strings.TrimSpace(string(raw))
	}
	switch resp.StatusCode {
	case http.StatusNotFound:
		return fmt.Errorf("backup: %s answered 404: it takes a staff token (-token, or $CHANGECAST_TOKEN; make one with changecast token -role staff), and a changecast that has backups", resp.Request.URL.Redacted())
	case http.StatusNotImplemented:
		return fmt.Errorf("backup: %s", msg)
	}
	return fmt.Errorf("backup: %s answered %s: %s", resp.Request.URL.Redacted(), resp.Status, msg)
}

// syncDir syncs directory dir, so a rename in it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// checkCommand returns the check command's flags (none).
func checkCommand() *command {
	return &command{
		name:     "check",
		synopsis: "check FILE",
		about: `Check the store file FILE (a backup, or DATA_DIR/changecast.db of a stopped
server) and say what it holds: format, orders, messages and the change log's
range; or what is wrong with it. It only reads FILE. Exit status 0 when the
file is a sound store, 1 otherwise.`,
		fs: flag.NewFlagSet("changecast check", flag.ContinueOnError),
	}
}

// runCheck is `changecast check FILE`.
func runCheck(args []string, stdout io.Writer) error {
	c := checkCommand()
	if err := c.parse(args, stdout); err != nil {
		return err
	}
	if c.fs.NArg() != 1 {
		return usagef("check", "check needs exactly one FILE, got %d arguments", c.fs.NArg())
	}
	r, err := bolt.Inspect(c.fs.Arg(0))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("check: %s does not exist", c.fs.Arg(0))
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%sok\n", r)
	return nil
}
