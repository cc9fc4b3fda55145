// Package web holds what the public listener serves to browsers and frontend
// tooling: the demo page, the TypeScript client's built JavaScript and the
// OpenAPI document of the public API. Everything is embedded in the binary,
// so running warmpath needs no Node.js.
package web

import "embed"

// Files are the embedded assets, by their path under app/web.
//
//go:embed index.html app.js style.css openapi.json client/dist/index.js
var Files embed.FS
