// Package e2e holds changecast's end-to-end tests. Each builds the binary
// (cmd/changecast) once per test binary, with -race when the tests run
// with -race, runs it as a separate process on a real listener and talks
// HTTP and Server-Sent Events to it, or drives Chromium (chromedp) and
// Firefox (internal/bidi, a WebDriver BiDi client) against it. The
// package has no code of its own outside the tests: see docs/testing.md.
package e2e
