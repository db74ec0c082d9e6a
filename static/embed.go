// Package static holds the browser demo that changecast serves at "/": one
// page (index.html, its ES modules under demo/, style.css, favicon.svg)
// with no build step and no external assets, and the browser client
// module changecast.js that the demo uses and other pages may import from
// /changecast.js; all embedded into the binary.
package static

import "embed"

// FS holds the demo's files at its root: index.html, changecast.js,
// style.css, favicon.svg and the demo's modules in demo/. It is
// read-only and safe for concurrent use.
//
//go:embed index.html changecast.js style.css favicon.svg demo/*.js
var FS embed.FS
