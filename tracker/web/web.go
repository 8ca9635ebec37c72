// Package web holds the tracker page's assets: the page that service desk
// staff use to find a prescription and read its status and history. The
// files are plain HTML, CSS and JavaScript with no build step and nothing
// loaded from elsewhere; the broker serves GET /tracker as index.html and
// GET /tracker/assets/<file> as the other files.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// FS is the page's files: index.html, app.js, app.css at its root.
func FS() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		// "static" is a valid path and is embedded above: this cannot happen.
		panic(err)
	}
	return sub
}
