// Package static holds the browser demo that changecast serves at "/": one
// page (index.html, app.js, style.css) with no build step and no external
// assets, embedded into the binary.
package static

import "embed"

// FS holds the demo's files at its root: index.html, app.js and style.css.
// It is read-only and safe for concurrent use.
//
//go:embed index.html app.js style.css
var FS embed.FS
