package test

import (
	"strconv"
	"strings"
	"unicode"
)

// xssPayloads are classic cross-site scripting payloads, for
// TestTrackerPageXSS. Each one, were a page to run it, sets an observable
// marker: window.__xss (or parent.__xss from a frame) to the payload's
// number, or document.title to "XSS" and the number; none names another
// host, so none calls out to the network. {N} stands for the payload's
// number (see payloadsNumbered). A NUL or other control character is
// written as a Go escape: JSON carries it as \u0000.
var xssPayloads = []string{
	// Script elements, plain, mixed case, unclosed, nested, from data:.
	`<script>window.__xss={N}</script>`,
	`<SCRIPT>window.__xss={N}</SCRIPT>`,
	`<ScRiPt>window.__xss={N}</sCrIpT>`,
	`<script>window.__xss={N}//`,
	`<<script>window.__xss={N}//<</script>`,
	`<scr<script>ipt>window.__xss={N}</scr</script>ipt>`,
	`<script src="data:text/javascript,window.__xss={N}"></script>`,
	`<script>document.title='XSS{N}'</script>`,
	// Event handlers on elements that fire by themselves.
	`<img src="data:," onerror="window.__xss={N}">`,
	`<IMG SRC=data:, ONERROR=window.__xss={N}>`,
	`<img src=data:, onerror=document.title='XSS{N}'>`,
	`<img src=data:, onerror=window['__xss']={N}>`,
	`<img srcset="data:, 1x" onerror=window.__xss={N}>`,
	`<svg onload="window.__xss={N}">`,
	`<svg/onload=window.__xss={N}>`,
	`<svg><script>window.__xss={N}</script></svg>`,
	`<svg><animate onbegin=window.__xss={N} attributeName=x dur=1s>`,
	`<body onload=window.__xss={N}>`,
	`<details open ontoggle=window.__xss={N}>`,
	`<input autofocus onfocus=window.__xss={N}>`,
	`<video><source onerror=window.__xss={N}></video>`,
	`<audio src=data:, onerror=window.__xss={N}>`,
	`<marquee onstart=window.__xss={N}>x</marquee>`,
	`<x onclick=window.__xss={N}>click me`,
	`<picture><source srcset=data:,><img src=data:, onerror=window.__xss={N}></picture>`,
	// Breaking out of attributes, elements and other contexts.
	`"><svg onload=window.__xss={N}>`,
	`'><img src=data:, onerror=window.__xss={N}>`,
	`" onmouseover="window.__xss={N}" x="`,
	`' autofocus onfocus='window.__xss={N}`,
	`"><script>window.__xss={N}</script>`,
	`</script><script>window.__xss={N}</script>`,
	`</title><script>window.__xss={N}</script>`,
	`</textarea><script>window.__xss={N}</script>`,
	`</style><script>window.__xss={N}</script>`,
	`</dd></dl></td></tr></table><img src=data:, onerror=window.__xss={N}>`,
	`--><img src=data:, onerror=window.__xss={N}>`,
	`]]><script>window.__xss={N}</script>`,
	`<img """><script>window.__xss={N}</script>">`,
	`"}];window.__xss={N};//`,
	`');window.__xss={N};//`,
	`\";window.__xss={N};//`,
	// Frames, objects, javascript: URLs.
	`<iframe srcdoc="<script>parent.__xss={N}</script>"></iframe>`,
	`<iframe srcdoc="&lt;img src=data:, onerror=parent.__xss={N}&gt;"></iframe>`,
	`<iframe src="javascript:parent.__xss={N}"></iframe>`,
	`<object data="javascript:window.__xss={N}"></object>`,
	`<embed src="javascript:window.__xss={N}">`,
	`<a href="javascript:window.__xss={N}">click</a>`,
	`<a href="jav&#x0A;ascript:window.__xss={N}">click</a>`,
	`javascript:window.__xss={N}`,
	`JaVaScRiPt:window.__xss={N}`,
	`java&#x09;script:window.__xss={N}`,
	`<form><button formaction=javascript:window.__xss={N}>x</button></form>`,
	`<svg><a href="javascript:window.__xss={N}"><text>x</text></a></svg>`,
	`<meta http-equiv="refresh" content="0;url=javascript:window.__xss={N}">`,
	// Style and CSS expressions.
	`<div style="width:expression(window.__xss={N})">x</div>`,
	`<div style="background:url(javascript:window.__xss={N})">x</div>`,
	`<style>@import 'javascript:window.__xss={N}';</style>`,
	`<link rel=stylesheet href="javascript:window.__xss={N}">`,
	// Template literals and template languages.
	`${window.__xss={N}}`,
	"`${window.__xss={N}}`",
	`{{constructor.constructor('window.__xss={N}')()}}`,
	`#{window.__xss={N}}`,
	`<%= window.__xss={N} %>`,
	// HTML entities, escapes and encodings that must stay as written.
	`&lt;script&gt;window.__xss={N}&lt;/script&gt;`,
	`&#60;script&#62;window.__xss={N}&#60;/script&#62;`,
	`&#x3C;img src=data:, onerror=window.__xss={N}&#x3E;`,
	`<img src=data:, onerror=&#119;indow.__xss={N}>`,
	`\u003cscript\u003ewindow.__xss={N}\u003c/script\u003e`,
	`\x3cscript\x3ewindow.__xss={N}\x3c/script\x3e`,
	`%3Cscript%3Ewindow.__xss={N}%3C/script%3E`,
	"\uff1cscript\uff1ewindow.__xss={N}\uff1c/script\uff1e",
	// Mutation XSS: markup a parser rewrites into something live.
	`<math><mtext><table><mglyph><style><img src=data:, onerror=window.__xss={N}>`,
	`<noscript><p title="</noscript><img src=data:, onerror=window.__xss={N}>">`,
	`<template><script>window.__xss={N}</script></template>`,
	// Control and invisible characters where JSON allows them.
	"<scr\x00ipt>window.__xss={N}</scr\x00ipt>",
	"<img src=data:,\x00 onerror=window.__xss={N}>",
	"\u2028</script><script>window.__xss={N}</script>",
	"\u202e<script>window.__xss={N}</script>",
	"<img\tsrc=data:,\nonerror=window.__xss={N}>",
}

// payloadsNumbered returns the payloads with {N} replaced by each one's
// number (its index + 1), so that a marker says which payload ran.
func payloadsNumbered() []string {
	out := make([]string, len(xssPayloads))
	for i, p := range xssPayloads {
		out[i] = strings.ReplaceAll(p, "{N}", strconv.Itoa(i+1))
	}
	return out
}

// validSub reports whether p can be a token's sub claim (what the broker's
// auth accepts: 1 to 256 bytes of printable characters, no space at either
// end), so that a payload can also be a user's name on the page.
func validSub(p string) bool {
	if p == "" || len(p) > 256 || p[0] == ' ' || p[len(p)-1] == ' ' {
		return false
	}
	for _, r := range p {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
