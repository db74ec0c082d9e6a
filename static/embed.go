// Package static holds the browser demo that changecast serves at "/": one
// page (index.html, app.js, style.css, favicon.svg) with no build step and
// no external assets, and the browser client module changecast.js that the
// demo uses and other pages may import from /changecast.js; all embedded
// into the binary.
package static

import "embed"

// FS holds the demo's files at its root: index.html, app.js, changecast.js,
// style.css and favicon.svg. It is read-only and safe for concurrent use.
//
//go:embed index.html app.js changecast.js style.css favicon.svg
var FS embed.FS
